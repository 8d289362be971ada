"""relay/feedback.py: a speaker hears the worst of its current listeners, in memory."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from relay.feedback import REPORT_TTL, RESEND, LossFeedback
from relay.protocol.messages import ReceiverReport, SpeakerReception

ALICE, BOB, CAROL, DAVE = 1, 2, 3, 4


class Channels:
    """The session table's view: who is in which channel (None: no session)."""

    def __init__(self, **members: str) -> None:
        self.of: dict[int, str] = {}
        for name, channel in members.items():
            self.of[NAMES[name]] = channel

    def __call__(self, user_id: int) -> str | None:
        return self.of.get(user_id)


NAMES = {"alice": ALICE, "bob": BOB, "carol": CAROL, "dave": DAVE}


def rx(speaker: int, loss: float, late: float = 0.0) -> SpeakerReception:
    return SpeakerReception(speaker, loss, late)


def lobby() -> tuple[Channels, LossFeedback]:
    channels = Channels(alice="Lobby", bob="Lobby", carol="Lobby", dave="Music")
    return channels, LossFeedback(channels)


def test_a_speaker_hears_its_worst_listener() -> None:
    _channels, fb = lobby()
    fb.report(BOB, [rx(ALICE, 2.0, 0.5)], now=0.0)
    fb.report(CAROL, [rx(ALICE, 7.0, 0.1)], now=0.1)
    assert fb.tick(1.0) == [(ALICE, ReceiverReport(7.0, 0.5, 2))]


def test_loss_and_late_are_each_the_worst_of_any_listener() -> None:
    _channels, fb = lobby()
    fb.report(BOB, [rx(ALICE, 1.0, 9.0)], now=0.0)
    fb.report(CAROL, [rx(ALICE, 6.0, 0.0)], now=0.0)
    assert fb.worst(ALICE, 0.5) == (6.0, 9.0, 2)


def test_reports_only_on_news_or_every_few_seconds() -> None:
    _channels, fb = lobby()
    fb.report(BOB, [rx(ALICE, 5.0)], now=0.0)
    assert fb.tick(1.0) == [(ALICE, ReceiverReport(5.0, 0.0, 1))]
    fb.report(BOB, [rx(ALICE, 5.6)], now=1.5)  # under a point of change: not news
    assert fb.tick(2.0) == []
    fb.report(BOB, [rx(ALICE, 6.2)], now=3.5)  # 1.2 points above what Alice was told
    assert fb.tick(4.0) == [(ALICE, ReceiverReport(6.2, 0.0, 1))]
    for t in (5.5, 7.5, 9.5):
        fb.report(BOB, [rx(ALICE, 6.2)], now=t)
    assert fb.tick(8.0) == []
    assert fb.tick(4.0 + RESEND) == [(ALICE, ReceiverReport(6.2, 0.0, 1))]


def test_a_listener_joining_is_news() -> None:
    _channels, fb = lobby()
    fb.report(BOB, [rx(ALICE, 5.0)], now=0.0)
    fb.tick(1.0)
    fb.report(CAROL, [rx(ALICE, 5.0)], now=1.2)
    assert fb.tick(2.0) == [(ALICE, ReceiverReport(5.0, 0.0, 2))]


def test_entries_expire_when_reports_stop() -> None:
    _channels, fb = lobby()
    fb.report(BOB, [rx(ALICE, 10.0)], now=0.0)
    fb.report(CAROL, [rx(ALICE, 3.0)], now=4.0)
    assert fb.tick(4.5) == [(ALICE, ReceiverReport(10.0, 0.0, 2))]
    # Bob's entry is older than the TTL: the worst is Carol's now.
    assert fb.tick(REPORT_TTL + 0.5) == [(ALICE, ReceiverReport(3.0, 0.0, 1))]
    # Nobody reports any more: one last word, then silence, and nothing is kept.
    assert fb.tick(4.0 + REPORT_TTL + 0.5) == [(ALICE, ReceiverReport(0.0, 0.0, 0))]
    assert fb.tick(20.0) == []
    assert not fb


def test_a_listener_leaving_the_channel_stops_counting_at_once() -> None:
    channels, fb = lobby()
    fb.report(BOB, [rx(ALICE, 12.0)], now=0.0)
    fb.report(CAROL, [rx(ALICE, 2.0)], now=0.0)
    assert fb.tick(1.0) == [(ALICE, ReceiverReport(12.0, 0.0, 2))]
    channels.of[BOB] = "Music"  # Bob moved
    assert fb.tick(2.0) == [(ALICE, ReceiverReport(2.0, 0.0, 1))]
    del channels.of[CAROL]  # Carol's session ended
    assert fb.tick(3.0) == [(ALICE, ReceiverReport(0.0, 0.0, 0))]
    assert not fb


def test_a_speaker_moving_away_loses_its_old_listeners() -> None:
    channels, fb = lobby()
    fb.report(BOB, [rx(ALICE, 12.0)], now=0.0)
    fb.tick(1.0)
    channels.of[ALICE] = "Music"
    assert fb.tick(2.0) == [(ALICE, ReceiverReport(0.0, 0.0, 0))]
    channels.of[ALICE] = "Lobby"  # back again: Bob's old entry does not come back
    assert fb.tick(2.5) == []


def test_entries_about_oneself_or_another_channel_are_ignored() -> None:
    _channels, fb = lobby()
    fb.report(BOB, [rx(BOB, 50.0), rx(DAVE, 50.0), rx(99, 50.0), rx(ALICE, 1.0)], now=0.0)
    assert fb.counters.entries_ignored == 3
    assert fb.tick(1.0) == [(ALICE, ReceiverReport(1.0, 0.0, 1))]
    fb.report(77, [rx(ALICE, 90.0)], now=1.0)  # no such session: nothing kept
    assert fb.worst(ALICE, 1.5) == (1.0, 0.0, 1)


def test_the_latest_entry_of_a_listener_replaces_its_previous_one() -> None:
    _channels, fb = lobby()
    fb.report(BOB, [rx(ALICE, 30.0), rx(ALICE, 4.0)], now=0.0)
    fb.report(BOB, [rx(ALICE, 2.0)], now=1.0)
    assert fb.worst(ALICE, 1.5) == (2.0, 0.0, 1)


def test_speakers_are_told_separately() -> None:
    _channels, fb = lobby()
    fb.report(CAROL, [rx(ALICE, 4.0), rx(BOB, 9.0)], now=0.0)
    fb.report(ALICE, [rx(BOB, 1.0)], now=0.0)
    assert sorted(fb.tick(1.0)) == [
        (ALICE, ReceiverReport(4.0, 0.0, 1)),
        (BOB, ReceiverReport(9.0, 0.0, 2)),
    ]


# A random walk of reports, moves, leaves and ticks: whatever happens, every report
# given is the worst of the listeners that count at that moment, and memory stays bounded.
users = st.sampled_from([ALICE, BOB, CAROL, DAVE])
percent = st.floats(0, 100)
steps = st.lists(
    st.one_of(
        st.tuples(
            st.just("report"),
            users,
            st.lists(
                st.builds(SpeakerReception, st.integers(0, 6), percent, percent),
                max_size=8,
            ),
        ),
        st.tuples(st.just("move"), users, st.sampled_from(["Lobby", "Music", None])),
        st.tuples(st.just("tick"), st.floats(0.0, 3.0), st.just(None)),
    ),
    max_size=30,
)


@given(steps)
def test_fuzz_reports_are_always_the_worst_listener_that_counts(
    script: list[tuple[str, object, object]],
) -> None:
    channels, fb = lobby()
    now = 0.0
    fresh: dict[tuple[int, int], tuple[float, float, float]] = {}  # (speaker, listener) -> entry
    for kind, a, b in script:
        if kind == "report":
            assert isinstance(a, int) and isinstance(b, list)
            fb.report(a, b, now)
            ch = channels(a)
            for r in b:
                if ch is not None and r.user_id != a and channels(r.user_id) == ch:
                    fresh[(r.user_id, a)] = (r.loss_percent, r.late_percent, now)
        elif kind == "move":
            assert isinstance(a, int)
            if b is None:
                channels.of.pop(a, None)
            else:
                assert isinstance(b, str)
                channels.of[a] = b
        else:
            assert isinstance(a, float)
            now += a
            # An entry that stops counting is forgotten: a listener back in the channel
            # counts again from its next report.
            fresh = {
                (s, who): e
                for (s, who), e in fresh.items()
                if now - e[2] <= REPORT_TTL
                and channels(who) is not None
                and channels(who) == channels(s)
            }
            for speaker, msg in fb.tick(now):
                counting = [e for (s, _who), e in fresh.items() if s == speaker]
                assert msg.listeners == len(counting)
                assert msg.loss_percent == round(max((e[0] for e in counting), default=0.0), 1)
                assert msg.late_percent == round(max((e[1] for e in counting), default=0.0), 1)
        assert sum(len(v) for v in fb._entries.values()) <= 4 * 3
