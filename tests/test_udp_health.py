"""pipeline/core/udp_health.py: the UDP path's round trip and loss, and the voice path."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.core.udp_health import DEAD_NS, RECOVER_NS, TCP, UDP, UdpHealth

MS = 1_000_000
PING = 500 * MS
RTT = 2 * MS


def run(h: UdpHealth, start: int, end: int, answered: bool) -> list[tuple[int, str]]:
    """Pings every 500 ms from ``start`` to ``end`` (answered or not); the path changes."""
    changes = []
    t = start
    while t < end:
        h.sent(t)
        if answered:
            h.answered(t + RTT, RTT)
        for probe in range(t, t + PING, 50 * MS):
            if h.update(probe):
                changes.append((probe, h.path))
        t += PING
    return changes


def test_a_path_that_answers_stays_on_udp_and_measures_rtt_and_no_loss() -> None:
    h = UdpHealth()
    assert run(h, 0, 20_000 * MS, True) == []
    assert h.path == UDP and h.rtt_ns == RTT and h.srtt_ns == RTT
    assert h.loss_percent(20_000 * MS) == 0.0


def test_a_path_that_dies_goes_to_tcp_within_2_s_and_back_after_2_s_of_answers() -> None:
    h = UdpHealth()
    run(h, 0, 10_000 * MS, True)
    # The last answer came at 9.5 s + RTT: dead DEAD_NS later, whatever the direction.
    (died,) = run(h, 10_000 * MS, 20_000 * MS, False)
    assert died[1] == TCP and died[0] - (9_500 * MS + RTT) == pytest.approx(DEAD_NS, abs=50 * MS)
    assert died[0] - 10_000 * MS < 2_000 * MS  # the "within about 2 s"
    assert h.loss_percent(21_000 * MS) == 100.0
    (back,) = run(h, 20_000 * MS, 30_000 * MS, True)
    assert back[1] == UDP and back[0] - 20_000 * MS == pytest.approx(RECOVER_NS, abs=60 * MS)
    assert h.switches == 2


def test_a_dead_path_never_asks_to_be_looked_at_again_at_once() -> None:
    # A caller waits until next_check (the network stage's receiver thread): "now" while
    # the tunnel carries voice would spin it for the whole outage.
    h = UdpHealth()
    run(h, 0, 5_000 * MS, True)
    t = 5_000 * MS
    while t < 15_000 * MS:  # UDP dead: pings go on, no answer comes
        h.sent(t)
        for probe in range(t, t + PING, 50 * MS):
            h.update(probe)
            assert h.next_check(probe) > probe
        t += PING
    assert h.path == TCP


def test_never_answered_goes_to_tcp_after_dead_ns_from_the_first_ping() -> None:
    h = UdpHealth()
    (change,) = run(h, 1_000 * MS, 5_000 * MS, False)
    assert change == (1_000 * MS + DEAD_NS, TCP)
    assert h.rtt_ns is None


def test_a_lost_ping_now_and_then_changes_nothing_and_counts_as_loss() -> None:
    h = UdpHealth()
    t = 0
    for i in range(40):
        h.sent(t)
        if i % 2:  # every other answer lost: 50 %, gaps of 1 s
            h.answered(t + RTT, RTT)
        assert not h.update(t + 400 * MS)
        t += PING
    assert h.path == UDP
    assert h.loss_percent(t) == pytest.approx(50.0, abs=6)


def test_recovery_needs_answers_without_a_gap() -> None:
    h = UdpHealth()
    run(h, 0, 3_000 * MS, False)
    assert h.path == TCP
    t = 3_000 * MS
    for _ in range(3):  # an answer every 1.5 s: never a gapless run of 2 s
        h.sent(t)
        h.answered(t + RTT, RTT)
        assert not h.update(t + RTT)
        t += 1_500 * MS
    assert not h.update(t)
    assert h.path == TCP


def test_a_new_session_forgets_the_old_ones_answers() -> None:
    h = UdpHealth()
    run(h, 0, 2_000 * MS, True)
    h.restart(10_000 * MS)  # e.g. the relay restarted: the old answers say nothing
    assert not h.update(10_000 * MS + DEAD_NS - 1)
    assert h.update(10_000 * MS + DEAD_NS) and h.path == TCP


@pytest.mark.parametrize("mode", [UDP, TCP])
def test_a_forced_path_never_changes(mode: str) -> None:
    h = UdpHealth(mode)
    assert h.path == mode
    assert run(h, 0, 5_000 * MS, mode == TCP) == []
    assert h.path == mode


def test_an_unknown_mode_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="'quic' is not one of auto, udp, tcp"):
        UdpHealth("quic")


@given(st.lists(st.tuples(st.integers(1, 3_000 * MS), st.booleans()), max_size=60))
def test_fuzz_any_answer_pattern_keeps_the_figures_sane(steps: list[tuple[int, bool]]) -> None:
    h = UdpHealth()
    t = 0
    for gap, answered in steps:
        t += gap
        h.sent(t)
        if answered:
            h.answered(t + RTT, RTT)
        h.update(t + RTT)
        assert h.next_check(t + RTT) > t + RTT  # what update left unchanged is not due now
        loss = h.loss_percent(t)
        assert loss is None or 0.0 <= loss <= 100.0
    assert h.path in (UDP, TCP)
