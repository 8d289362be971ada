"""relay/limits.py: the per-connection limits, in memory, with an injected clock."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from relay.limits import (
    MAX_ERRORS,
    MAX_FAILED_RECONNECTS,
    PRUNE_AT,
    AddressBuckets,
    AddressPolicy,
    AddressRates,
    Admission,
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


# --- per source address ----------------------------------------------------------------


def addresses(**kw: float) -> AddressPolicy:
    return AddressPolicy(ControlLimits(**kw))  # type: ignore[arg-type]


def test_connections_per_address_are_capped_others_still_admitted() -> None:
    """Issue 18: 2,000 bare connects from one address locked everyone out."""
    p = addresses(per_address_connections=3, connect_rate=0, max_connections=100)
    assert [p.admit("10.0.0.1", 0.0) for _ in range(4)] == [Admission.ADMIT] * 3 + [
        Admission.ADDRESS_FULL
    ]
    assert p.admit("10.0.0.2", 0.0) is Admission.ADMIT
    assert p.open_from("10.0.0.1") == 3 and p.total == 4
    p.release("10.0.0.1")
    assert p.admit("10.0.0.1", 0.0) is Admission.ADMIT


def test_the_server_cap_still_holds() -> None:
    p = addresses(max_connections=2, per_address_connections=0, connect_rate=0)
    assert p.admit("a", 0.0) is Admission.ADMIT and p.admit("b", 0.0) is Admission.ADMIT
    assert p.admit("c", 0.0) is Admission.SERVER_FULL
    p.release("a")
    assert p.admit("c", 0.0) is Admission.ADMIT and p.open_from("a") == 0


def test_connection_rate_per_address() -> None:
    p = addresses(connect_rate=2, connect_burst=3, per_address_connections=0)
    got = [p.admit("a", 0.0) for _ in range(4)]
    assert got == [Admission.ADMIT] * 3 + [Admission.TOO_FAST]
    assert p.admit("b", 0.0) is Admission.ADMIT  # each address has its own bucket
    assert p.admit("a", 0.4) is Admission.TOO_FAST  # 0.8 token: not yet
    assert p.admit("a", 0.6) is Admission.ADMIT
    assert p.total == 5  # refused connections were never counted as open


def test_zero_means_no_limit() -> None:
    p = addresses(per_address_connections=0, connect_rate=0, max_connections=10_000)
    assert all(p.admit("a", 0.0) is Admission.ADMIT for _ in range(5000))


def test_defaults_let_a_household_in() -> None:
    p = AddressPolicy(ControlLimits())
    # Ten clients behind one NAT all reconnecting at once after a relay restart.
    assert all(p.admit("192.0.2.1", 0.0) is Admission.ADMIT for _ in range(10))


def test_remembered_addresses_stay_bounded() -> None:
    p = addresses(connect_rate=1, connect_burst=2, per_address_connections=0)
    for i in range(3 * PRUNE_AT):
        assert p.admit(f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}", float(i) * 1e-4)
        p.release(f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}")
    assert len(p._buckets) <= PRUNE_AT
    assert p.total == 0


@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b", "c"]), st.booleans(), st.floats(0, 0.5)),
        max_size=200,
    )
)
def test_fuzz_open_counts_match_admissions(events: list[tuple[str, bool, float]]) -> None:
    p = addresses(per_address_connections=4, connect_rate=5, connect_burst=5, max_connections=9)
    model: dict[str, int] = {}
    now = 0.0
    for addr, close, dt in events:
        now += dt
        if close and model.get(addr):
            p.release(addr)
            model[addr] -= 1
        elif p.admit(addr, now) is Admission.ADMIT:
            model[addr] = model.get(addr, 0) + 1
        assert all(p.open_from(a) == n for a, n in model.items())
        assert p.total == sum(model.values()) <= 9
        assert all(n <= 4 for n in model.values())


# --- chats and joins per address -----------------------------------------------------


def test_an_address_shares_one_chat_and_one_join_budget_across_its_connections() -> None:
    r = AddressRates(ControlLimits(address_chat_rate=2, address_chat_burst=4))
    assert [r.allow_chat("a", 0.0) for _ in range(5)] == [True] * 4 + [False]
    assert r.allow_chat("b", 0.0)  # another address has its own
    assert r.allow_chat("a", 0.5) and not r.allow_chat("a", 0.5)  # the rate: 2/s
    joins = [r.allow_join("a", 0.0) for _ in range(40)]  # chats spend nothing of joins
    assert joins.count(True) == ControlLimits().address_join_burst


def test_an_address_rate_of_zero_is_no_limit() -> None:
    r = AddressRates(ControlLimits(address_chat_rate=0, address_join_rate=0))
    assert all(r.allow_chat("a", 0.0) and r.allow_join("a", 0.0) for _ in range(10_000))


def test_the_default_address_rates_let_a_household_reconnect_and_talk() -> None:
    # 32 sessions (the per-address default) join their channels at once after a restart,
    # and then chat a line every few seconds each.
    lim = ControlLimits()
    r = AddressRates(lim)
    assert all(r.allow_join("home", 0.0) for _ in range(lim.per_address_sessions))
    assert all(r.allow_chat("home", 1.0 + i * 0.125) for i in range(32 * 8))


def test_a_reload_of_the_address_rates_applies_at_once() -> None:
    lim = ControlLimits(address_chat_rate=1, address_chat_burst=1)
    r = AddressRates(lim)
    assert r.allow_chat("a", 0.0) and not r.allow_chat("a", 0.0)
    lim.address_chat_rate, lim.address_chat_burst = 100, 50
    assert all(r.allow_chat("a", 0.0) for _ in range(50))


def test_address_buckets_stay_bounded() -> None:
    b = AddressBuckets(rate=1, burst=2)
    for i in range(3 * PRUNE_AT):
        assert b.allow(f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}", float(i) * 1e-4)
    assert len(b) <= PRUNE_AT


@given(rates, bursts, st.lists(st.tuples(st.sampled_from("abc"), st.floats(0, 0.5)), max_size=200))
def test_fuzz_an_address_never_gets_more_than_burst_plus_rate_times_elapsed(
    rate: float, burst: float, events: list[tuple[str, float]]
) -> None:
    r = AddressRates(ControlLimits(address_chat_rate=rate, address_chat_burst=burst))
    now, allowed = 0.0, {"a": 0, "b": 0, "c": 0}
    for addr, dt in events:
        now += dt
        allowed[addr] += r.allow_chat(addr, now)
        assert allowed[addr] <= burst + rate * now + 1e-6


# --- password guessing ----------------------------------------------------------------


def test_ten_wrong_passwords_in_two_minutes_ban_the_address_for_five() -> None:
    from relay.limits import AuthGuard

    g = AuthGuard()
    for i in range(9):
        assert not g.failed("1.2.3.4", 10.0 * i)
        assert g.banned_for("1.2.3.4", 10.0 * i) == 0
    assert g.failed("1.2.3.4", 95.0)
    assert g.banned_for("1.2.3.4", 96.0) == 299.0
    assert g.banned_for("5.6.7.8", 96.0) == 0  # another address is not concerned
    assert g.banned_for("1.2.3.4", 395.0) == 0


def test_failures_older_than_the_window_are_forgotten() -> None:
    from relay.limits import AuthGuard

    g = AuthGuard()
    for i in range(30):  # one every 14 s: never 10 within 120 s
        assert not g.failed("a", 14.0 * i)
