"""relay/feedback.py: a speaker hears the worst of its current listeners, in memory."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from relay.feedback import MIN_INTERVAL, REPORT_TTL, RESEND, LossFeedback
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
    assert fb.worst(0.5) == {ALICE: (6.0, 9.0, 2, 0.0)}


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
    channels.of[ALICE] = "Lobby"  # back again: Bob's report is fresh, and counts again
    assert fb.tick(2.5) == [(ALICE, ReceiverReport(12.0, 0.0, 1))]
    assert fb.tick(REPORT_TTL + 0.5) == [(ALICE, ReceiverReport(0.0, 0.0, 0))]


def test_entries_about_oneself_or_another_channel_do_not_count() -> None:
    _channels, fb = lobby()
    fb.report(BOB, [rx(BOB, 50.0), rx(DAVE, 50.0), rx(99, 50.0), rx(ALICE, 1.0)], now=0.0)
    assert fb.tick(1.0) == [(ALICE, ReceiverReport(1.0, 0.0, 1))]
    fb.report(77, [rx(ALICE, 90.0)], now=1.0)  # no such session: nothing kept
    assert fb.counters.reports_ignored == 1
    assert fb.worst(1.5) == {ALICE: (1.0, 0.0, 1, 0.0)}


def test_the_latest_report_of_a_listener_replaces_its_previous_one_whole() -> None:
    _channels, fb = lobby()
    fb.report(BOB, [rx(ALICE, 30.0), rx(ALICE, 4.0), rx(CAROL, 8.0)], now=0.0)
    assert fb.worst(0.5) == {ALICE: (4.0, 0.0, 1, 0.0), CAROL: (8.0, 0.0, 1, 0.0)}
    fb.report(BOB, [rx(ALICE, 2.0)], now=1.0)  # Bob no longer hears Carol
    assert fb.worst(1.5) == {ALICE: (2.0, 0.0, 1, 0.0)}


def test_a_flood_of_reports_is_taken_once_a_second() -> None:
    _channels, fb = lobby()
    for i in range(20):
        fb.report(BOB, [rx(ALICE, float(i))], now=i * 0.05)
    assert fb.counters.reports == 1 and fb.counters.reports_ignored == 19
    assert fb.worst(0.99) == {ALICE: (0.0, 0.0, 1, 0.0)}
    fb.report(BOB, [rx(ALICE, 9.0)], now=MIN_INTERVAL)
    assert fb.worst(MIN_INTERVAL) == {ALICE: (9.0, 0.0, 1, 0.0)}
    assert len(fb) == 1


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
Model = dict[int, tuple[str, float, dict[int, tuple[float, float]]]]


@given(steps)
@settings(max_examples=300)  # each example is a whole walk
def test_fuzz_reports_are_always_the_worst_listener_that_counts(
    script: list[tuple[str, object, object]],
) -> None:
    channels, fb = lobby()
    now = 0.0
    held: Model = {}  # listener -> (channel, when, speaker -> (loss, late))
    told: set[int] = set()  # speakers told of at least one listener, not yet of none
    for kind, a, b in script:
        if kind == "report":
            assert isinstance(a, int) and isinstance(b, list)
            fb.report(a, b, now)
            ch, last = channels(a), held.get(a)
            if ch is not None and (last is None or now - last[1] >= MIN_INTERVAL):
                entries = {r.user_id: (r.loss_percent, r.late_percent) for r in b}
                entries.pop(a, None)
                held[a] = (ch, now, entries)
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
            held = {
                who: rep
                for who, rep in held.items()
                if now - rep[1] <= REPORT_TTL and channels(who) == rep[0]
            }
            expected: dict[int, list[tuple[float, float]]] = {}
            for ch, _at, entries in held.values():
                for speaker, e in entries.items():
                    if channels(speaker) == ch:
                        expected.setdefault(speaker, []).append(e)
            for speaker, msg in fb.tick(now):
                counting = expected.get(speaker, [])
                assert msg.listeners == len(counting)
                assert msg.loss_percent == round(max((e[0] for e in counting), default=0.0), 1)
                assert msg.late_percent == round(max((e[1] for e in counting), default=0.0), 1)
                if counting:
                    told.add(speaker)
                else:
                    assert speaker in told  # a last word only to a speaker told before
                    told.discard(speaker)
            # Every speaker with listeners has been told of them (news or not).
            assert set(expected) <= told
        assert len(fb) <= 4 * 7


def test_the_longest_loss_burst_any_listener_reports_is_passed_on_and_is_news() -> None:
    _channels, fb = lobby()
    fb.report(BOB, [SpeakerReception(ALICE, 10.0, 0.0, 1.2)], now=0.0)
    fb.report(CAROL, [SpeakerReception(ALICE, 5.0, 0.0, 3.0)], now=0.1)
    assert fb.tick(1.0) == [(ALICE, ReceiverReport(10.0, 0.0, 2, 3.0))]
    fb.report(CAROL, [SpeakerReception(ALICE, 5.0, 0.0, 2.0)], now=1.5)  # bursts shorten
    assert fb.tick(2.0) == [(ALICE, ReceiverReport(10.0, 0.0, 2, 2.0))]
    fb.report(CAROL, [SpeakerReception(ALICE, 5.0, 0.0, 2.1)], now=3.0)
    assert fb.tick(3.5) == []  # a change under a quarter packet is no news
