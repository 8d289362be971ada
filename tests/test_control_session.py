"""pipeline/core/control_session.py: the control session against a scripted relay, no sockets."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.control_session import (
    DEAD_AFTER,
    PING_INTERVAL,
    RECEPTION_INTERVAL,
    RECEPTION_STALE,
    RECONNECT_DELAY,
    ControlSession,
)
from pipeline.core.presence_news import RETURN_GRACE
from pipeline.ipc import events as ev
from relay.protocol.errors import ProtocolError
from relay.protocol.messages import (
    PROTOCOL,
    Auth,
    Bye,
    ChannelInfo,
    ChannelList,
    Chat,
    Error,
    Join,
    Message,
    MessageDecoder,
    Ping,
    Pong,
    ReceiverReport,
    Reception,
    Reconnect,
    SelfState,
    SpeakerReception,
    UserInfo,
    UserJoined,
    UserLeft,
    UserList,
    UserState,
    Welcome,
    encode_message,
    encode_user_list,
    encode_welcome,
    pack_user,
)


def sent(s: ControlSession) -> list[Message | ProtocolError]:
    return MessageDecoder().feed(s.take_outgoing())


UDP_KEY = b"k" * 32
MEDIA = b"m" * 16
SEALED: dict[str, Any] = {
    "version": PROTOCOL,
    "udp_key": UDP_KEY,
    "media_key_id": 1,
    "media_key": MEDIA,
}


def welcome(token: int = 77, uid: int = 3, channel: str = "Lobby") -> bytes:
    users = [UserInfo(uid, "me", channel)]
    return encode_message(Welcome(token, uid, 9000, channel, ["Lobby", "Games"], users, **SEALED))


def endpoint(token: int, uid: int) -> ev.VoiceEndpoint:
    return ev.VoiceEndpoint(token, uid, "h", 9000, UDP_KEY, 1, MEDIA)


def connected_session(now: float = 0.0, loss_feedback: bool = True) -> ControlSession:
    s = ControlSession(name="me", host="h", port=1, loss_feedback=loss_feedback)
    assert s.connect_due(now)
    s.connected(now)
    assert sent(s) == [Auth("me", PROTOCOL)]
    s.received(welcome(), now)
    return s


def test_auth_then_welcome_publishes_state_session_roster() -> None:
    s = connected_session()
    events = s.take_events()
    assert endpoint(77, 3) in events
    state = [e for e in events if isinstance(e, ev.ConnectionState)][-1]
    assert state.state == ev.CONNECTED and state.channel == "Lobby"
    roster = [e for e in events if isinstance(e, ev.Roster)][-1]
    assert roster.me == 3 and roster.users == [UserInfo(3, "me", "Lobby")]


def test_drop_waits_then_reconnects_with_token() -> None:
    s = connected_session()
    s.disconnected(10.0, "reset")
    assert s.state == ev.RECONNECTING and s.attempt == 1
    assert not s.connect_due(10.0 + RECONNECT_DELAY - 0.1)
    assert s.connect_due(10.0 + RECONNECT_DELAY)
    s.connected(12.0)
    assert sent(s) == [Reconnect(77, PROTOCOL)]
    s.received(welcome(), 12.0)
    assert s.state == ev.CONNECTED and s.attempt == 0


def test_unknown_token_falls_back_to_auth() -> None:
    s = connected_session()
    s.disconnected(1.0, "relay restarted")
    s.connected(3.0)
    sent(s)
    s.received(encode_message(Error("unknown_token", "no such session")), 3.0)
    assert sent(s) == [Auth("me", PROTOCOL)]
    s.received(welcome(token=99, uid=1), 3.1)
    assert endpoint(99, 1) in s.take_events()


def test_failed_connects_count_attempts() -> None:
    s = ControlSession(name="me", host="h", port=1)
    for i in range(1, 4):
        s.connect_failed(i * 2.0, "refused")
        assert s.attempt == i
    state = s.snapshot()[0]
    assert isinstance(state, ev.ConnectionState) and state.attempt == 3
    assert state.reason == "refused"


def test_ping_every_interval_and_rtt_from_pong() -> None:
    s = connected_session()
    s.tick(PING_INTERVAL)
    (ping,) = sent(s)
    assert isinstance(ping, Ping)
    s.received(encode_message(Pong(ping.nonce, ping.t)), PING_INTERVAL + 0.025)
    assert s.tcp_rtt is not None and abs(s.tcp_rtt - 0.025) < 1e-9
    assert any(isinstance(e, ev.ControlStats) and e.tcp_rtt_ms for e in s.take_events())


def test_silent_relay_is_declared_dead() -> None:
    s = connected_session()
    s.tick(DEAD_AFTER + 0.1)
    assert s.take_close() and s.state == ev.RECONNECTING


def test_presence_updates_roster_and_notices() -> None:
    s = connected_session()
    s.take_events()
    s.received(encode_message(UserJoined(4, "bob", "Lobby")), 1.0)
    s.received(encode_message(UserJoined(4, "bob", "Games")), 1.1)  # moved
    s.received(encode_message(UserLeft(4, "bob", "Lobby")), 1.1)  # stale: he is in Games
    events = s.take_events()
    roster = [e for e in events if isinstance(e, ev.Roster)][-1]
    assert UserInfo(4, "bob", "Games") in roster.users
    s.received(encode_message(UserLeft(4, "bob", "Games")), 2.0)
    roster = [e for e in s.take_events() if isinstance(e, ev.Roster)][-1]
    assert all(m.user_id != 4 for m in roster.users)


def test_join_and_own_move() -> None:
    s = connected_session()
    s.join("Games")
    assert sent(s) == [Join("Games")]
    s.received(encode_message(UserJoined(3, "me", "Games")), 1.0)
    assert s.channel == "Games"


def test_wanted_channel_joined_after_first_welcome_only() -> None:
    s = ControlSession(name="me", host="h", port=1, wanted_channel="Games")
    s.connected(0.0)
    sent(s)
    s.received(welcome(), 0.0)
    assert sent(s) == [Join("Games")]
    s.disconnected(1.0, "x")
    s.connected(3.0)
    sent(s)
    s.received(welcome(channel="Games"), 3.0)
    assert sent(s) == []


def test_chat_in_and_out() -> None:
    s = connected_session()
    s.chat("hello")
    assert sent(s) == [Chat("hello")]
    s.received(encode_message(Chat("yo", 4, "bob", "Lobby", 5.0)), 1.0)
    assert ev.ChatLine(4, "bob", "Lobby", "yo", 5.0) in s.take_events()


def test_chat_while_disconnected_is_a_notice() -> None:
    s = ControlSession(name="me", host="h", port=1)
    s.chat("hello")
    assert s.take_outgoing() == b""
    assert any(isinstance(e, ev.Notice) for e in s.take_events())


def test_quit_says_bye_and_closes() -> None:
    s = connected_session()
    s.quit()
    assert sent(s) == [Bye()]
    assert s.take_close()
    s.disconnected(1.0, "closed")
    assert s.state == ev.STOPPED and not s.connect_due(100.0)


def test_bad_frame_from_relay_drops_the_link() -> None:
    s = connected_session()
    s.received(b"\xff\xff\xff\xff", 1.0)
    assert s.take_close() and s.state == ev.RECONNECTING


@given(st.lists(st.binary(max_size=64), max_size=20))
def test_fuzz_garbage_from_relay_never_raises(chunks: list[bytes]) -> None:
    s = connected_session()
    for i, chunk in enumerate(chunks):
        s.received(chunk, float(i))
        s.tick(float(i))
        if s.take_close():
            s.connected(float(i))


def test_a_relay_that_never_welcomes_is_dropped_and_retried() -> None:
    s = ControlSession(name="me", host="h", port=1)
    s.connected(0.0)
    sent(s)
    assert s.next_deadline(0.0) == DEAD_AFTER
    s.tick(DEAD_AFTER - 0.1)
    assert not s.take_close()
    s.tick(DEAD_AFTER + 0.1)
    assert s.take_close() and s.state == ev.RECONNECTING and "no welcome" in s.reason
    assert s.connect_due(DEAD_AFTER + 0.1 + RECONNECT_DELAY)


def test_wanted_channel_survives_reconnects_and_relay_restarts() -> None:
    s = connected_session()
    sent(s)
    s.disconnected(1.0, "x")
    s.join("Games")  # chosen while reconnecting
    s.connected(3.0)
    sent(s)
    s.received(welcome(), 3.0)  # resumed in Lobby
    assert sent(s) == [Join("Games")]
    s.received(encode_message(UserJoined(3, "me", "Games")), 3.1)
    s.disconnected(4.0, "relay restarted")
    s.connected(6.0)
    sent(s)
    s.received(encode_message(Error("unknown_token", "gone")), 6.0)
    sent(s)
    s.received(welcome(token=5, uid=1), 6.1)  # a fresh session lands in Lobby
    assert sent(s) == [Join("Games")]


def rosters(s: ControlSession) -> list[ev.Roster]:
    return [e for e in s.take_events() if isinstance(e, ev.Roster)]


def test_a_paged_welcome_publishes_the_roster_once_whole() -> None:
    """Issue 18: a full server's welcome was cut short; now it goes on in user_list pages."""
    users = [UserInfo(3, "me", "Lobby")] + [
        UserInfo(i, f"user{i:027d}", "c" * 64) for i in range(10, 2010)
    ]
    data = encode_welcome(
        Welcome(77, 3, 9000, "Lobby", ["Lobby"], [], **SEALED), [pack_user(u) for u in users]
    )
    s = ControlSession(name="me", host="h", port=1)
    s.connected(0.0)
    sent(s)
    half = len(data) // 2
    s.received(data[:half], 0.0)  # the welcome and part of the pages
    assert rosters(s) == []  # not yet: the list is not whole
    s.received(data[half:], 0.0)
    (roster,) = rosters(s)
    assert roster.users == sorted(users, key=lambda u: u.user_id)
    assert s.state == ev.CONNECTED


def test_a_snapshot_replaces_the_roster() -> None:
    s = connected_session()
    s.received(encode_message(UserJoined(4, "bob", "Lobby")), 1.0)
    s.take_events()
    # The relay found us behind: a fresh list instead of the events we missed.
    snap = [UserInfo(3, "me", "Games"), UserInfo(5, "carol", "Lobby")]
    s.received(encode_user_list([pack_user(u) for u in snap]), 2.0)
    events = s.take_events()
    (roster,) = [e for e in events if isinstance(e, ev.Roster)]
    assert roster.users == snap and roster.channel == "Games"  # bob left meanwhile; we moved
    assert s.channel == "Games"
    assert any(isinstance(e, ev.ConnectionState) and e.channel == "Games" for e in events)


def test_a_page_that_continues_nothing_is_ignored() -> None:
    s = connected_session()
    s.take_events()
    s.received(encode_message(UserList([UserInfo(9, "x", "Lobby")], first=False)), 1.0)
    events = s.take_events()
    assert not [e for e in events if isinstance(e, ev.Roster)]
    assert any(isinstance(e, ev.Notice) for e in events)
    assert [u.user_id for u in s._roster().users] == [3]


def test_a_reconnect_forgets_a_half_received_list() -> None:
    s = connected_session()
    s.received(encode_message(UserList([UserInfo(9, "x", "Lobby")], first=True, last=False)), 1.0)
    s.disconnected(2.0, "reset")
    s.connected(4.0)
    sent(s)
    s.received(welcome(), 4.0)
    s.received(encode_message(UserList([UserInfo(8, "y", "Lobby")], last=True)), 4.1)
    assert [u.user_id for u in s._roster().users] == [3]  # the stray page changed nothing


user_infos = st.builds(
    UserInfo, st.integers(0, 20), st.sampled_from(["a", "b", "me"]), st.sampled_from(["L", "G"])
)


@given(
    st.lists(
        st.one_of(
            st.builds(UserList, st.lists(user_infos, max_size=4), st.booleans(), st.booleans()),
            st.builds(UserJoined, st.integers(0, 20), st.just("j"), st.sampled_from(["L", "G"])),
            st.builds(UserLeft, st.integers(0, 20), st.just("j"), st.sampled_from(["L", "G"])),
        ),
        max_size=20,
    )
)
@settings(max_examples=max(50, getattr(settings.default, "max_examples", 100) // 5))
def test_fuzz_presence_and_pages_in_any_order(msgs: list[Message]) -> None:
    """Any sequence of presence and user-list pages leaves a consistent roster, and a
    complete snapshot leaves exactly its users."""
    s = connected_session()
    for i, m in enumerate(msgs):
        s.received(encode_message(m), float(i))
    whole = [i for i, m in enumerate(msgs) if isinstance(m, UserList) and m.first and m.last]
    if whole and whole[-1] == len(msgs) - 1:
        last = msgs[-1]
        assert isinstance(last, UserList)
        assert {u.user_id for u in s._roster().users} == {u.user_id for u in last.users}
    roster = s._roster()
    assert len({u.user_id for u in roster.users}) == len(roster.users)


def test_a_channel_list_from_the_relay_replaces_the_channels() -> None:
    s = connected_session()
    s.take_events()
    s.received(
        encode_message(ChannelList([ChannelInfo("Lobby"), ChannelInfo("Quiz", "q", 4)])), 1.0
    )
    roster = [e for e in s.take_events() if isinstance(e, ev.Roster)][-1]
    assert roster.channels == ["Lobby", "Quiz"]
    assert roster.infos == [ChannelInfo("Quiz", "q", 4)]  # for the tree


# --- loss feedback --------------------------------------------------------------------


def decode_stats(*speakers: tuple[int, float, float]) -> ev.DecodeStats:
    return ev.DecodeStats(
        speakers=[
            ev.SpeakerStats(uid, loss_percent=loss, late_percent=late)
            for uid, loss, late in speakers
        ]
    )


def receptions(s: ControlSession) -> list[Reception]:
    return [m for m in sent(s) if isinstance(m, Reception)]


def test_reception_reports_what_the_decoder_measures_every_interval() -> None:
    s = connected_session()
    assert s.next_deadline(0.0) <= RECEPTION_INTERVAL
    s.heard(decode_stats((5, 7.5, 1.0), (3, 50.0, 0.0), (6, 0.0, 0.0)), now=1.5)
    s.tick(1.9)
    assert receptions(s) == []
    s.tick(RECEPTION_INTERVAL)
    # Our own stream (uid 3, the relay's echo) is never reported.
    assert receptions(s) == [Reception([SpeakerReception(5, 7.5, 1.0), SpeakerReception(6, 0, 0)])]
    s.received(encode_message(Pong(1, 0.0)), RECEPTION_INTERVAL + 0.1)  # keeps the link alive
    s.heard(decode_stats((5, 2.0, 0.0)), now=RECEPTION_INTERVAL + 1.0)
    s.tick(2 * RECEPTION_INTERVAL - 0.01)
    assert receptions(s) == []
    s.tick(2 * RECEPTION_INTERVAL)
    assert receptions(s) == [Reception([SpeakerReception(5, 2.0, 0.0)])]


def test_stale_or_missing_figures_are_not_reported() -> None:
    s = connected_session()
    s.tick(RECEPTION_INTERVAL)
    assert receptions(s) == []  # nothing heard yet
    s.heard(decode_stats((5, 7.5, 1.0)), now=RECEPTION_INTERVAL)
    s.received(encode_message(Pong(1, 0.0)), RECEPTION_STALE + RECEPTION_INTERVAL)
    s.tick(RECEPTION_STALE + RECEPTION_INTERVAL + 0.5)  # the decode stage went quiet
    assert receptions(s) == []


def test_no_reception_with_loss_feedback_off() -> None:
    s = connected_session(loss_feedback=False)
    s.heard(decode_stats((5, 7.5, 1.0)), now=1.0)
    s.tick(RECEPTION_INTERVAL)
    assert receptions(s) == []
    assert s.next_deadline(RECEPTION_INTERVAL) > RECEPTION_INTERVAL


def test_a_receiver_report_goes_to_the_encoder() -> None:
    s = connected_session()
    s.take_events()
    s.received(encode_message(ReceiverReport(7.5, 1.0, 2)), 0.5)
    assert s.take_events() == [ev.ListenerReport(7.5, 1.0, 2)]
    s.received(encode_message(ReceiverReport(7.5, 1.0, 2, 2.5)), 0.6)
    assert s.take_events() == [ev.ListenerReport(7.5, 1.0, 2, 2.5)]


def test_reception_carries_the_mean_loss_burst() -> None:
    s = connected_session()
    stats = ev.DecodeStats(speakers=[ev.SpeakerStats(5, loss_percent=9.0, burst_mean=2.75)])
    s.heard(stats, now=1.5)
    s.tick(RECEPTION_INTERVAL)
    assert receptions(s) == [Reception([SpeakerReception(5, 9.0, 0.0, 2.75)])]


def test_an_older_relay_stops_the_reports_until_the_next_connection() -> None:
    s = connected_session()
    s.heard(decode_stats((5, 7.5, 1.0)), now=1.5)
    s.tick(RECEPTION_INTERVAL)
    assert len(receptions(s)) == 1
    s.take_events()
    s.received(encode_message(Error("unknown_type", "unknown message type 'reception'")), 2.1)
    (notice,) = s.take_events()
    assert isinstance(notice, ev.Notice) and "loss reports" in notice.text
    s.heard(decode_stats((5, 7.5, 1.0)), now=3.5)
    s.tick(2 * RECEPTION_INTERVAL)
    assert receptions(s) == []
    s.disconnected(4.5, "gone")
    s.connected(4.5 + RECONNECT_DELAY)
    s.received(welcome(), 4.5 + RECONNECT_DELAY)
    s.heard(decode_stats((5, 7.5, 1.0)), now=5.0 + RECONNECT_DELAY)
    s.tick(4.5 + RECONNECT_DELAY + RECEPTION_INTERVAL)
    assert len(receptions(s)) == 1


@given(
    st.lists(
        st.tuples(st.integers(0, 2**32 - 1), st.floats(), st.floats()),
        max_size=80,
    )
)
@settings(max_examples=50)
def test_fuzz_any_decode_figures_make_a_valid_reception(
    speakers: list[tuple[int, float, float]],
) -> None:
    s = connected_session()
    s.heard(decode_stats(*speakers), now=1.5)
    s.tick(RECEPTION_INTERVAL)
    for item in sent(s):
        assert not isinstance(item, ProtocolError)  # what we send, the relay can parse
        if isinstance(item, Reception):
            assert 0 < len(item.reports) <= 64


# --- what is news: reconnects, a granted name, forced moves, self state ------------------


def notices(s: ControlSession) -> list[str]:
    return [e.text for e in s.take_events() if isinstance(e, ev.Notice)]


def welcome_with(users: list[UserInfo], token: int = 77, uid: int = 3, **kw: Any) -> bytes:
    channel = next(u.channel for u in users if u.user_id == uid)
    return encode_message(
        Welcome(token, uid, 9000, channel, ["Lobby", "Games"], users, **{**SEALED, **kw})
    )


def test_a_relay_restart_announces_only_real_changes() -> None:
    s = ControlSession(name="me", host="h", port=1)
    s.connected(0.0)
    sent(s)
    before = [UserInfo(3, "me", "Lobby"), UserInfo(4, "bob", "Lobby"), UserInfo(5, "cy", "Lobby")]
    s.received(welcome_with(before), 0.0)
    assert notices(s) == []  # the first welcome: the tree says who is there
    s.disconnected(10.0, "the relay closed the connection")
    s.connected(12.0)
    sent(s)
    s.received(encode_message(Error("unknown_token", "gone")), 12.0)
    sent(s)
    # The restarted relay: we are first back; dan is new.
    s.received(welcome_with([UserInfo(1, "me", "Lobby"), UserInfo(2, "dan", "Lobby")], 9, 1), 12.1)
    assert notices(s) == ["dan joined Lobby"]
    s.received(encode_message(UserJoined(6, "bob", "Lobby")), 13.0)  # bob is back: silent
    assert notices(s) == []
    for t in range(14, 27):  # the relay keeps the link alive meanwhile
        s.received(encode_message(Ping(t, 0.0)), float(t))
        s.tick(float(t))
    assert notices(s) == []
    assert s.next_deadline(26.0) <= 12.1 + RETURN_GRACE
    s.tick(12.1 + RETURN_GRACE)  # cy never came back
    assert notices(s) == ["cy left Lobby"]
    s.received(encode_message(UserJoined(7, "eve", "Lobby")), 30.0)  # a real join
    assert notices(s) == ["eve joined Lobby"]


def test_a_resumed_session_is_silent() -> None:
    s = connected_session()
    s.received(encode_message(UserJoined(4, "bob", "Lobby")), 1.0)
    assert notices(s) == ["bob joined Lobby"]
    s.disconnected(2.0, "reset")
    s.connected(4.0)
    sent(s)
    s.received(welcome_with([UserInfo(3, "me", "Lobby"), UserInfo(4, "bob", "Lobby")]), 4.0)
    assert notices(s) == []
    s.tick(100.0)
    assert notices(s) == []


def test_a_changed_name_is_announced_once() -> None:
    s = ControlSession(name="alice", host="h", port=1)
    s.connected(0.0)
    sent(s)
    s.received(welcome_with([UserInfo(3, "alice-2", "Lobby")]), 0.0)
    assert notices(s) == ["you are alice-2 on this server: alice was taken"]
    s.disconnected(1.0, "x")
    s.connected(3.0)
    sent(s)
    s.received(welcome_with([UserInfo(3, "alice-2", "Lobby")]), 3.0)
    assert notices(s) == []


def test_a_forced_move_is_announced_and_a_chosen_one_is_not() -> None:
    s = connected_session()
    s.join("Games")
    assert sent(s) == [Join("Games")]
    s.received(encode_message(UserJoined(3, "me", "Games")), 1.0)
    assert notices(s) == []
    s.received(encode_message(UserJoined(3, "me", "Lobby")), 2.0)  # the operator moved us
    assert notices(s) == ["you were moved to Lobby"]
    s.disconnected(3.0, "x")
    s.connected(5.0)
    sent(s)
    s.received(welcome(), 5.0)
    assert sent(s) == []  # no going back to Games: the move is where we are now


def test_a_channel_gone_while_away_is_announced() -> None:
    s = ControlSession(name="me", host="h", port=1, wanted_channel="Radio")
    s.connected(0.0)
    sent(s)
    s.received(welcome(), 0.0)
    assert sent(s) == []
    assert notices(s) == ["there is no channel Radio any more; you are in Lobby"]


def test_mute_and_deafen_go_to_the_relay_and_come_back_in_the_roster() -> None:
    s = ControlSession(name="me", host="h", port=1)
    s.set_self(muted=True)  # before connecting: sent after the welcome
    s.connected(0.0)
    sent(s)
    s.received(welcome(), 0.0)
    assert sent(s) == [SelfState(True, False)]
    s.set_self(deafened=True)
    assert sent(s) == [SelfState(True, True)]
    s.set_self(deafened=True)
    assert sent(s) == []
    s.take_events()
    s.received(encode_message(UserState(3, True, True)), 1.0)
    s.received(encode_message(UserJoined(4, "bob", "Lobby")), 1.0)
    s.received(encode_message(UserState(4, True, False)), 1.0)
    s.received(encode_message(UserJoined(4, "bob", "Games")), 1.1)  # moves keep the state
    (*_, roster) = rosters(s)
    assert UserInfo(3, "me", "Lobby", True, True) in roster.users
    assert UserInfo(4, "bob", "Games", True, False) in roster.users
    # A resumed session the relay still shows as muted needs nothing sent.
    s.disconnected(2.0, "x")
    s.connected(4.0)
    sent(s)
    s.received(welcome_with([UserInfo(3, "me", "Lobby", True, True)]), 4.0)
    assert sent(s) == []
    s.tick(4.0 + PING_INTERVAL)
    (ping,) = sent(s)
    assert isinstance(ping, Ping)
    s.received(encode_message(Pong(ping.nonce, ping.t)), 5.1)
    stats = [e for e in s.take_events() if isinstance(e, ev.ControlStats)]
    assert stats[-1].muted and stats[-1].deafened


# --- the TCP tunnel --------------------------------------------------------------------


def test_the_relay_is_asked_for_the_tunnel_on_a_change_and_after_every_new_connection() -> None:
    from relay.protocol.messages import Tunnel

    s = connected_session()
    s.take_events()
    s.voice_path(True)
    assert sent(s) == [Tunnel(True)]
    s.voice_path(True)  # told once a second by the network stage: sent on a change only
    assert sent(s) == []
    s.disconnected(1.0, "gone")
    s.voice_path(True)
    assert sent(s) == []  # nobody to tell
    s.connected(4.0)
    s.take_outgoing()
    s.received(welcome(), 4.0)
    assert Tunnel(True) in sent(s)  # a new connection starts on UDP: ask again
    s.voice_path(False)
    assert sent(s) == [Tunnel(False)]


def test_voice_goes_both_ways_in_voice_frames() -> None:
    from relay.protocol.messages import Voice

    s = connected_session()
    frame = s.voice_frame(b"\x02\x02up")
    assert frame == encode_message(Voice(b"\x02\x02up"))
    assert s.voice_frame(b"") is None  # no frame holds it: dropped, not an error
    s.received(encode_message(Voice(b"down1")) + encode_message(Voice(b"down2")), 1.0)
    assert s.take_voice() == [b"down1", b"down2"] and s.take_voice() == []
    s.disconnected(2.0, "gone")
    assert s.voice_frame(b"\x02\x02up") is None  # not connected: nowhere to go


def test_a_relay_without_the_tunnel_keeps_voice_on_udp() -> None:
    s = connected_session()
    s.voice_path(True)
    s.take_outgoing()
    s.take_events()
    err = Error(code="unknown_type", message="unknown message type 'tunnel'")
    s.received(encode_message(err), 1.0)
    assert s.tunnel_refused and s.voice_frame(b"\x02\x02x") is None
    assert any(isinstance(e, ev.Notice) and "stays on UDP" in e.text for e in s.take_events())
    assert not s._reception_refused  # that error was about the tunnel, not loss reports
    s.voice_path(False)
    s.voice_path(True)
    assert sent(s) == []


def test_a_refused_tunnel_is_asked_for_again_in_a_new_session_only() -> None:
    from relay.protocol.messages import Tunnel

    s = connected_session()
    s.voice_path(True)
    s.take_outgoing()
    s.received(encode_message(Error(code="no_tunnel", message="no voice over TCP")), 1.0)
    assert s.tunnel_refused
    s.disconnected(2.0, "closed")  # the same relay, the session resumed: still refused
    s.connected(2.0 + RECONNECT_DELAY)
    assert sent(s) == [Reconnect(77, PROTOCOL)]
    s.received(welcome(), 2.0 + RECONNECT_DELAY)
    assert Tunnel(True) not in sent(s) and s.voice_frame(b"\x02\x02x") is None
    s.disconnected(5.0, "relay restarted")  # upgraded, perhaps: it forgot us
    s.connected(5.0 + RECONNECT_DELAY)
    sent(s)
    s.received(encode_message(Error("unknown_token", "no such session")), 7.0)
    assert sent(s) == [Auth("me", PROTOCOL)]
    s.received(welcome(token=99, uid=1), 7.1)
    assert Tunnel(True) in sent(s)
    assert s.voice_frame(b"\x02\x02x") is not None


def test_voice_goes_to_the_address_the_control_connection_reached() -> None:
    # A name with A and AAAA records: the connection may have reached it by IPv4 only (a
    # relay on 0.0.0.0); UDP to the name's first address, the IPv6 one, would be dead.
    s = ControlSession(name="me", host="relay.example", port=1)
    s.connected(0.0, peer="192.0.2.7")
    s.take_outgoing()
    s.received(welcome(), 0.0)
    (point,) = [e for e in s.take_events() if isinstance(e, ev.VoiceEndpoint)]
    assert point.host == "192.0.2.7"


def test_the_welcomes_udp_host_is_where_voice_goes() -> None:
    s = ControlSession(name="me", host="control.example", port=1)
    s.connected(0.0)
    s.take_outgoing()
    users = [UserInfo(3, "me", "Lobby")]
    head = Welcome(7, 3, 9000, "Lobby", ["Lobby"], users, udp_host="voice.example", **SEALED)
    s.received(encode_message(head), 0.0)
    (point,) = [e for e in s.take_events() if isinstance(e, ev.VoiceEndpoint)]
    assert (point.host, point.udp_port) == ("voice.example", 9000)


def test_a_relay_without_self_state_gets_it_no_more_and_keeps_loss_reports() -> None:
    s = connected_session()
    s.set_self(muted=True)
    assert sent(s) == [SelfState(True, False)]
    s.take_events()
    err = Error(code="unknown_type", message="unknown message type 'self_state'")
    s.received(encode_message(err), 1.0)
    assert s.self_state_refused and not s._reception_refused
    assert notices(s) == ["this server does not show others that you are muted"]
    s.set_self(deafened=True)
    assert sent(s) == []


# --- several relays (SPEC.md, "Several relays") ------------------------------------------

FP_B = ":".join(["B0"] * 32)
FP_C = ":".join(["C0"] * 32)


def welcome_with_relays(relays: Any, token: int = 77, uid: int = 3) -> bytes:
    """What a cluster relay sends: a welcome naming its peers (written by hand here; a
    standalone relay sends none)."""
    users = [UserInfo(uid, "me", "Lobby")]
    return encode_message(
        Welcome(token, uid, 9000, "Lobby", ["Lobby"], users, relays=relays, **SEALED)
    )


def states(s: ControlSession) -> list[ev.ConnectionState]:
    return [e for e in s.take_events() if isinstance(e, ev.ConnectionState)]


def test_a_first_connect_that_fails_tries_the_next_relay_at_once() -> None:
    s = ControlSession(name="me", host="a", port=1, fallbacks=[("b", 2)])
    assert (s.host, s.port) == ("a", 1) and s.connect_due(0.0)
    s.connect_failed(0.1, "cannot reach a:1: Connection refused")
    assert (s.host, s.port) == ("b", 2) and s.connect_due(0.1)  # no wait within a round
    (state,) = states(s)
    assert state.state == ev.RECONNECTING and state.server == "b:2" and state.relays == 2
    s.connect_failed(0.2, "cannot reach b:2: Connection refused")
    assert (s.host, s.port) == ("a", 1)  # both tried: the whole list waits
    assert not s.connect_due(0.2 + RECONNECT_DELAY - 0.01) and s.connect_due(0.2 + RECONNECT_DELAY)
    s.connected(3.0)
    assert sent(s) == [Auth("me", PROTOCOL)]
    s.received(welcome(), 3.0)
    assert s.state == ev.CONNECTED and states(s)[-1].server == "a:1"


def test_a_lost_relay_is_tried_once_then_the_next_with_reconnect_first() -> None:
    s = ControlSession(name="me", host="a", port=1, fallbacks=[("b", 2)])
    s.connected(0.0)
    sent(s)
    s.received(welcome(token=77), 0.0)
    s.take_events()
    s.disconnected(5.0, "the relay closed the connection")
    assert (s.host, s.port) == ("a", 1) and not s.connect_due(5.0 + RECONNECT_DELAY - 0.01)
    assert s.connect_due(5.0 + RECONNECT_DELAY)
    s.connect_failed(7.0, "cannot reach a:1: Connection refused")
    assert (s.host, s.port) == ("b", 2) and s.connect_due(7.0)
    assert states(s)[-1].state == ev.RECONNECTING  # it was connected: reconnecting, not connecting
    s.connected(7.0)
    assert sent(s) == [Reconnect(77, PROTOCOL)]  # b may resume the session (a cluster)
    s.received(encode_message(Error("unknown_token", "no such session")), 7.0)
    assert sent(s) == [Auth("me", PROTOCOL)]  # a standalone b: a new session
    s.received(welcome(token=99, uid=5), 7.1)
    events = s.take_events()
    assert ev.VoiceEndpoint(99, 5, "b", 9000, UDP_KEY, 1, MEDIA) in events  # voice to b
    (state,) = [e for e in events if isinstance(e, ev.ConnectionState)]
    assert state.state == ev.CONNECTED and state.server == "b:2"


def test_a_full_relay_is_left_for_the_next_at_once() -> None:
    s = ControlSession(name="me", host="a", port=1, fallbacks=[("b", 2)])
    s.connected(0.0)
    assert sent(s) == [Auth("me", PROTOCOL)]
    s.received(encode_message(Error("server_full", "the relay has no room")), 0.1)
    assert s.take_close() and (s.host, s.port) == ("b", 2) and s.connect_due(0.1)
    last = states(s)[-1]
    assert last.state == ev.RECONNECTING and "server_full" in last.reason
    s.connected(0.2)
    assert sent(s) == [Auth("me", PROTOCOL)]
    s.received(welcome(), 0.3)
    assert s.state == ev.CONNECTED and not s.take_close()


def test_a_cluster_relay_that_resumes_keeps_the_session_on_the_other_relay() -> None:
    s = ControlSession(name="me", host="a", port=1, fallbacks=[("b", 2)])
    s.connected(0.0)
    sent(s)
    s.received(welcome(token=77, uid=3), 0.0)
    s.disconnected(1.0, "reset")
    s.connect_failed(3.0, "refused")
    s.connected(3.0)
    assert sent(s) == [Reconnect(77, PROTOCOL)]
    s.received(welcome(token=77, uid=3), 3.0)  # the same session, resumed by b
    assert (s.token, s.user_id, s.host) == (77, 3, "b")
    assert not [e for e in s.take_events() if isinstance(e, ev.Notice) and "joined" in e.text]


def test_welcome_relays_are_learnt_and_vouched_for() -> None:
    s = ControlSession(name="me", host="a", port=1)
    s.connected(0.0)
    sent(s)
    relays = [
        {"addr": "b.example:8080", "fingerprint": FP_B},
        {"addr": "[fd00::3]:8080", "fingerprint": FP_C.lower()},
    ]
    s.received(welcome_with_relays(relays), 0.0)
    assert [r.server for r in s.relays.relays] == ["a:1", "b.example:8080", "[fd00::3]:8080"]
    vouched = s.take_vouched()
    assert [(r.host, r.port, r.fingerprint) for r in vouched] == [
        ("b.example", 8080, FP_B),
        ("fd00::3", 8080, FP_C),
    ]
    assert s.take_vouched() == []
    assert states(s)[-1].relays == 3
    # Failover: a once, then the learnt relay, whose fingerprint goes with it to the adapter.
    s.disconnected(1.0, "reset")
    s.connect_failed(3.0, "refused")
    assert s.target.server == "b.example:8080" and s.target.fingerprint == FP_B
    assert s.connect_due(3.0)


def test_bad_relay_entries_are_dropped_and_told_never_the_welcome() -> None:
    s = ControlSession(name="me", host="a", port=1)
    s.connected(0.0)
    sent(s)
    bad = [{"addr": "b:8080", "fingerprint": "AB"}, 7, {"addr": "c:8080", "fingerprint": FP_C}]
    s.received(welcome_with_relays(bad), 0.0)
    assert s.state == ev.CONNECTED
    assert [r.server for r in s.relays.relays] == ["a:1", "c:8080"]
    notices = [e.text for e in s.take_events() if isinstance(e, ev.Notice)]
    assert any("relays[0]: fingerprint must be" in t and "1 more" in t for t in notices)
    s2 = ControlSession(name="me", host="a", port=1)
    s2.connected(0.0)
    sent(s2)
    s2.received(welcome_with_relays("not a list"), 0.0)  # a broken field: still welcomed
    assert s2.state == ev.CONNECTED and len(s2.relays.relays) == 1


def test_a_standalone_welcome_carries_no_relays_key() -> None:
    data = welcome()
    assert b"relays" not in data
    s = connected_session()
    assert s.take_vouched() == [] and len(s.relays.relays) == 1


@given(
    st.lists(
        st.dictionaries(
            st.sampled_from(["addr", "fingerprint", "x"]),
            st.text(max_size=70)
            | st.integers(-(2**63), 2**64 - 1)
            | st.sampled_from([FP_B, "b:1"]),
        ),
        max_size=8,
    )
)
@settings(max_examples=100)
def test_fuzz_welcome_relays_never_cost_the_session(relays: list[dict[str, Any]]) -> None:
    s = ControlSession(name="me", host="a", port=1)
    s.connected(0.0)
    sent(s)
    s.received(welcome_with_relays(relays), 0.0)
    assert s.state == ev.CONNECTED
    assert len(s.relays.relays) <= 1 + len(relays)


def test_the_servers_mute_reaches_the_roster_and_is_said_for_us_and_our_channel() -> None:
    s = ControlSession(name="me", host="h", port=1)
    s.connected(0.0)
    users = [UserInfo(3, "me", "Lobby"), UserInfo(4, "bob", "Lobby"), UserInfo(5, "cy", "Games")]
    s.received(welcome_with(users), 0.0)
    sent(s)
    s.take_events()
    s.received(encode_message(UserState(4, server_muted=True)), 1.0)
    s.received(encode_message(UserState(5, server_muted=True)), 1.0)  # another channel: quiet
    s.received(encode_message(UserState(3, server_muted=True)), 1.0)
    events = s.take_events()
    lines = [e.text for e in events if isinstance(e, ev.Notice)]
    assert lines == [
        "bob was muted by the server",
        "the server muted you: nobody hears you until it unmutes you",
    ]
    (*_, roster) = [e for e in events if isinstance(e, ev.Roster)]
    assert {u.user_id for u in roster.users if u.server_muted} == {3, 4, 5}
    assert sent(s) == []  # the server's mute is not ours: no self_state for it
    s.received(encode_message(UserState(3, muted=True, server_muted=True)), 2.0)  # ours only
    assert notices(s) == []
    s.received(encode_message(UserState(3, muted=True)), 2.0)
    assert notices(s) == ["the server unmuted you: you are heard again"]
