"""ui/speaking.py: the talking dot holds through the gaps between words."""

from __future__ import annotations

from ui.speaking import SpeakingHold


def test_a_talker_stays_lit_through_a_short_gap_and_goes_out_after_the_hold() -> None:
    hold = SpeakingHold(hold=0.4)
    hold.update([3], 0.0)
    assert hold.lit(0.0) == {3} and hold.next_change() is None
    hold.update([], 1.0)  # a gap between words
    assert hold.lit(1.3) == {3} and hold.next_change() == 1.4
    hold.update([3], 1.35)  # the next word: still lit, no blink
    assert hold.lit(1.5) == {3}
    hold.update([], 2.0)
    assert hold.lit(2.39) == {3}
    assert hold.lit(2.4) == set() and hold.next_change() is None


def test_a_repeated_quiet_report_does_not_extend_the_hold() -> None:
    hold = SpeakingHold(hold=0.4)
    hold.update([3, 4], 0.0)
    hold.update([4], 1.0)
    hold.update([4], 1.3)  # 3 still quiet: its hold runs from 1.0
    assert hold.lit(1.4) == {4}
    hold.clear()
    assert hold.lit(1.4) == set()
