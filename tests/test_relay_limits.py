"""relay/limits.py: the per-connection limits, in memory, with an injected clock."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from relay.limits import (
    MAX_ERRORS,
    MAX_FAILED_RECONNECTS,
    ConnectionPolicy,
    ControlLimits,
    TokenBucket,
    Verdict,
)


def test_connection_cap() -> None:
    limits = ControlLimits(max_connections=2)
    assert limits.admits(0) and limits.admits(1)
    assert not limits.admits(2) and not limits.admits(3)
    assert not ControlLimits(max_connections=0).admits(0)


def test_token_bucket() -> None:
    bucket = TokenBucket(rate=10, burst=3, now=0.0)
    assert [bucket.allow(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.allow(0.1) and not bucket.allow(0.1)
    assert [bucket.allow(100.0) for _ in range(4)] == [True, True, True, False]


rates = st.floats(0.1, 1000.0)
bursts = st.floats(1.0, 100.0)
gaps = st.lists(st.floats(0.0, 5.0), max_size=200)


@given(rates, bursts, st.floats(-1e6, 1e6), gaps)
def test_bucket_never_allows_more_than_burst_plus_rate_times_elapsed(
    rate: float, burst: float, start: float, dts: list[float]
) -> None:
    bucket = TokenBucket(rate, burst, start)
    now, allowed = start, 0
    for dt in dts:
        now += dt
        allowed += bucket.allow(now)
        bound = burst + rate * (now - start)
        assert allowed <= bound + 1e-6 * (1.0 + bound)  # float sums, not a looser rule


@given(rates, bursts, gaps)
def test_bucket_refills_to_a_whole_burst(rate: float, burst: float, dts: list[float]) -> None:
    bucket = TokenBucket(rate, burst, 0.0)
    now = 0.0
    for dt in dts:
        now += dt
        bucket.allow(now)
    now += burst / rate + 1.0  # a quiet spell long enough to fill the bucket
    assert sum(bucket.allow(now) for _ in range(math.floor(burst) + 1)) == math.floor(burst)


def test_messages_within_the_rate_are_accepted() -> None:
    policy = ConnectionPolicy(ControlLimits(rate=10, burst=2), now=50.0)
    verdicts = [policy.on_message(50.0 + i * 0.1) for i in range(1000)]
    assert verdicts == [Verdict.ACCEPT] * 1000
    assert policy.errors == 0


def test_a_flood_is_refused_then_closed_after_max_errors() -> None:
    policy = ConnectionPolicy(ControlLimits(rate=1, burst=5), now=0.0)
    verdicts = [policy.on_message(0.0) for _ in range(5 + MAX_ERRORS)]
    assert verdicts[:5] == [Verdict.ACCEPT] * 5
    assert verdicts[5 : 4 + MAX_ERRORS] == [Verdict.REFUSE] * (MAX_ERRORS - 1)
    assert verdicts[4 + MAX_ERRORS] is Verdict.CLOSE


def test_bad_frames_close_at_max_errors() -> None:
    policy = ConnectionPolicy(ControlLimits(), now=0.0)
    verdicts = [policy.on_bad_frame() for _ in range(MAX_ERRORS)]
    assert verdicts == [Verdict.REFUSE] * (MAX_ERRORS - 1) + [Verdict.CLOSE]


def test_refused_messages_and_bad_frames_share_one_count() -> None:
    policy = ConnectionPolicy(ControlLimits(rate=1, burst=1), now=0.0)
    assert policy.on_message(0.0) is Verdict.ACCEPT
    for _ in range(MAX_ERRORS // 2):
        assert policy.on_message(0.0) is Verdict.REFUSE
    for _ in range(MAX_ERRORS - MAX_ERRORS // 2 - 1):
        assert policy.on_bad_frame() is Verdict.REFUSE
    assert policy.on_bad_frame() is Verdict.CLOSE


def test_failed_reconnects_close_after_max_failed_reconnects() -> None:
    policy = ConnectionPolicy(ControlLimits(), now=0.0)
    verdicts = [policy.on_failed_reconnect() for _ in range(MAX_FAILED_RECONNECTS + 1)]
    assert verdicts == [Verdict.REFUSE] * MAX_FAILED_RECONNECTS + [Verdict.CLOSE]
    assert policy.errors == 0  # a wrong token is not a bad frame


def test_auth_deadline() -> None:
    policy = ConnectionPolicy(ControlLimits(auth_timeout=10.0), now=100.0)
    assert policy.auth_deadline == 110.0
    assert not policy.auth_overdue(109.999, authenticated=False)
    assert policy.auth_overdue(110.0, authenticated=False)
    assert policy.auth_overdue(1e9, authenticated=False)
    assert not policy.auth_overdue(110.0, authenticated=True)
    assert not policy.auth_overdue(1e9, authenticated=True)


def test_each_connection_has_its_own_counts() -> None:
    limits = ControlLimits(rate=1, burst=1)
    a, b = ConnectionPolicy(limits, now=0.0), ConnectionPolicy(limits, now=0.0)
    for _ in range(MAX_ERRORS - 1):
        a.on_bad_frame()
    assert a.on_message(0.0) is Verdict.ACCEPT
    assert b.on_message(0.0) is Verdict.ACCEPT
    assert a.on_message(0.0) is Verdict.CLOSE
    assert b.on_message(0.0) is Verdict.REFUSE
