"""pipeline/core/loss_hint.py: the encoder's loss hint follows the worst of its inputs."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pipeline.core.loss_hint import (
    CHAOS,
    CONFIGURED,
    HALF_LIFE,
    HOLD,
    INCOMING,
    LISTENER,
    LossHint,
)


def test_the_hint_is_the_largest_figure_and_names_it() -> None:
    hint = LossHint(configured=2.0)
    assert hint.value(0.0) == (2.0, CONFIGURED)
    hint.incoming = 3.0
    assert hint.value(0.0) == (3.0, INCOMING)
    hint.chaos = 4.0
    assert hint.value(0.0) == (4.0, CHAOS)
    hint.listener_report(9.5, 1.0, 2, now=0.0)
    assert hint.value(0.0) == (9.5, LISTENER)
    assert hint.listeners == 2 and hint.listener_late == 1.0


def test_a_speakers_hint_follows_its_worst_listener() -> None:
    hint = LossHint()
    hint.listener_report(10.0, 0.0, 1, now=0.0)
    assert hint.value(1.0) == (10.0, LISTENER)
    hint.listener_report(3.0, 0.0, 2, now=2.0)  # the lossy listener's path got better
    assert hint.value(2.5) == (3.0, LISTENER)
    hint.listener_report(0.0, 0.0, 0, now=4.0)  # nobody listens any more: at once
    assert hint.value(4.0) == (0.0, CONFIGURED)


def test_late_share_is_shown_but_not_added() -> None:
    hint = LossHint()
    hint.listener_report(2.0, 15.0, 1, now=0.0)
    assert hint.value(0.0) == (2.0, LISTENER)
    assert hint.listener_late == 15.0


def test_the_listeners_figure_holds_then_halves_when_reports_stop() -> None:
    hint = LossHint(configured=1.0)
    hint.listener_report(16.0, 0.0, 3, now=100.0)
    assert hint.value(100.0 + HOLD) == (16.0, LISTENER)  # the relay repeats within HOLD
    assert hint.listener_loss(100.0 + HOLD + HALF_LIFE) == 8.0
    assert hint.listener_loss(100.0 + HOLD + 2 * HALF_LIFE) == 4.0
    late = 100.0 + HOLD + 10 * HALF_LIFE
    assert hint.listener_loss(late) == 0.0  # under half a percent is nothing
    assert hint.value(late) == (1.0, CONFIGURED)
    hint.listener_report(6.0, 0.0, 1, now=late)  # reports again: back to the news
    assert hint.value(late) == (6.0, LISTENER)


def test_the_figures_pair_each_loss_with_its_burst_and_decay_with_it() -> None:
    h = LossHint(incoming=4.0, incoming_burst=1.0)
    h.listener_report(12.0, 0.0, 1, now=0.0, burst=3.0)
    assert h.figures(1.0) == [(4.0, 1.0), (12.0, 3.0)]
    late = h.figures(HOLD + 20 * HALF_LIFE)[1]  # reports stopped: the loss has decayed
    assert late[0] == 0.0
    h.listener_report(0.0, 0.0, 0, now=1.0, burst=3.0)  # nobody listens any more
    assert h.figures(1.0)[1] == (0.0, 0.0)
    assert LossHint(use_listeners=False).figures(0.0) == [(0.0, 0.0)]


def test_feedback_off_ignores_the_listeners() -> None:
    hint = LossHint(configured=1.0, use_listeners=False)
    hint.listener_report(20.0, 0.0, 1, now=0.0)
    assert hint.value(0.0) == (1.0, CONFIGURED)


@given(
    st.floats(0, 100),
    st.floats(-1000, 1000),
    st.floats(0, 100),
    st.floats(0, 100),
    st.floats(0, 60),
)
def test_fuzz_the_hint_is_a_percentage_never_below_the_live_figures(
    configured: float, chaos: float, incoming: float, listener: float, waited: float
) -> None:
    hint = LossHint(configured=configured, chaos=chaos, incoming=incoming)
    hint.listener_report(listener, 0.0, 1, now=0.0)
    value, _source = hint.value(waited)
    assert 0.0 <= value <= 100.0
    assert value >= min(100.0, max(configured, chaos, incoming))
    assert value <= max(configured, chaos, incoming, listener, 0.0)
    assert hint.listener_loss(waited) <= listener
