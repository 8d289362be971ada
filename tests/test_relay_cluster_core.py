"""relay/cluster_core.py: the cluster's records, events and view, in memory."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay import cluster_core as cc
from relay.names import NameRefused, normalize_name
from relay.protocol.errors import ProtocolError

ME = "me"


def rec(rid: str, num: int) -> cc.RelayRecord:
    return cc.RelayRecord(rid, num, f"{rid}.example:8080", f"10.0.0.{num}:8080", "AB:CD")


def user(uid: int, relay: str, channel: str = "Lobby") -> cc.RemoteUser:
    return cc.RemoteUser(uid, f"user{uid}", channel, relay)


def view(*alive: str, grace: float = 10.0) -> cc.ClusterView:
    v = cc.ClusterView(ME, grace)
    v.registry([rec("a", 1), rec("b", 2), rec(ME, 3)], [*alive, ME], 0.0)
    return v


# --- records and events ---------------------------------------------------------------


def _takes(name: str) -> bool:
    try:
        normalize_name(name)
    except NameRefused:
        return False
    return True


names = st.text(min_size=1, max_size=32).filter(_takes)  # names a relay takes
users = st.builds(
    cc.RemoteUser,
    st.integers(1, 2**32 - 1),
    names,
    st.text(min_size=1, max_size=64),
    st.text(min_size=1, max_size=64),
    st.booleans(),
    st.booleans(),
    st.booleans(),
)
events = st.one_of(
    st.builds(cc.Joined, users),
    st.builds(cc.Moved, st.text(min_size=1, max_size=64), st.integers(1, 2**32 - 1),
              st.text(min_size=1, max_size=64)),
    st.builds(cc.Left, st.text(min_size=1, max_size=64), st.integers(1, 2**32 - 1)),
    st.builds(cc.State, st.text(min_size=1, max_size=64), st.integers(1, 2**32 - 1),
              st.booleans(), st.booleans(), st.booleans()),
    st.builds(cc.Said, st.text(min_size=1, max_size=64), st.integers(0, 2**32 - 1),
              st.just("") | names, st.text(min_size=1, max_size=64),
              st.text(min_size=1, max_size=200), st.floats(0, 2e9)),
    st.builds(cc.Resumed, users, st.integers(1, 2**32 - 1)),
    st.builds(cc.Synced, st.text(min_size=1, max_size=64), st.lists(users, max_size=5).map(tuple)),
)  # fmt: skip


@given(events)
def test_every_event_round_trips(event: cc.Event) -> None:
    assert cc.parse_event(cc.encode_event(event)) == event


@given(users, st.integers(1, 2**32 - 1), st.binary(min_size=32, max_size=32))
def test_session_records_round_trip(u: cc.RemoteUser, token: int, key: bytes) -> None:
    r = cc.SessionRecord(token, u, key)
    assert cc.SessionRecord.parse(bytes(r)) == r
    assert key.hex() not in repr(r)  # never a key in a log line


@given(st.integers(1, 255), st.binary(min_size=16, max_size=16))
def test_media_key_values_round_trip(key_id: int, key: bytes) -> None:
    assert cc.parse_media_value(cc.media_value(key_id, key)) == (key_id, key)
    assert cc.parse_media_value(cc.media_value(key_id, key).encode()) == (key_id, key)


def test_relay_records_round_trip() -> None:
    r = rec("a", 1)
    assert cc.RelayRecord.parse(bytes(r)) == r
    assert r.udp_addr() == ("10.0.0.1", 8080)


@pytest.mark.parametrize("addr", ["x", "h:", ":8080", "h:x", "h:0", "h:70000", "h:-1", "h:+80",
                                  "h: 80", "h:8_080", "[::1]:99999"])  # fmt: skip
def test_a_relay_record_whose_address_is_no_host_and_port_is_our_error(addr: str) -> None:
    # Redis is input: a port that does not parse would stop the cluster's task, and one
    # out of range would stop the UDP loop at its first mesh datagram (sendto raises).
    for field in ("tcp", "udp"):
        o = {"id": "a", "num": 1, "tcp": "h:1", "udp": "h:1", "fingerprint": "", field: addr}
        with pytest.raises(ProtocolError):
            cc.RelayRecord.parse(json.dumps(o))


@given(st.text(max_size=40))
def test_a_parsed_relay_records_udp_address_is_a_host_and_a_port(addr: str) -> None:
    o = {"id": "a", "num": 1, "tcp": addr, "udp": addr, "fingerprint": ""}
    with contextlib.suppress(ProtocolError):
        host, port = cc.RelayRecord.parse(json.dumps(o)).udp_addr()
        assert host and 1 <= port <= 65535


@pytest.mark.parametrize(
    "data",
    [b"", b"[]", b"{", b'{"kind":"joined"}', b'{"kind":"left","relay":"a","user_id":0}',
     b'{"kind":"moved","relay":"a","user_id":1}', b'{"kind":"nope","relay":"a"}',
     b'{"kind":"said","relay":"a","user_id":1,"name":"x","channel":"c","text":"t","ts":"x"}',
     b'{"kind":"state","relay":"a","user_id":1,"muted":1}', b"\xff\xfe"],
)  # fmt: skip
def test_bad_events_are_our_error(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        cc.parse_event(data)


@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_any_bytes_give_an_event_or_our_error(data: bytes) -> None:
    for parse in (cc.parse_event, cc.SessionRecord.parse, cc.RelayRecord.parse,
                  cc.parse_media_value):  # fmt: skip
        with contextlib.suppress(ProtocolError):
            parse(data)


# --- the view -----------------------------------------------------------------------------


def test_events_of_other_relays_show_users_and_our_own_are_ignored() -> None:
    v = view("a", "b")
    assert v.apply(cc.Joined(user(1, "a"))) == [cc.UserCame(user(1, "a"))]
    assert v.apply(cc.Joined(user(2, ME))) == []
    moved = v.apply(cc.Moved("a", 1, "General"))
    assert moved == [cc.UserChanged(user(1, "a"), user(1, "a", "General"))]
    assert v.apply(cc.Left("b", 1)) == []  # not b's user: a late event, ignored
    assert v.apply(cc.Left("a", 1)) == [cc.UserWent(user(1, "a", "General"))]
    said = cc.Said("a", 1, "user1", "Lobby", "hi", 1.0)
    assert v.apply(said) == [cc.ChatIn(said)]


def test_a_channel_is_sent_to_each_alive_relay_with_a_member_once() -> None:
    v = view("a", "b")
    for uid, relay, ch in ((1, "a", "Lobby"), (2, "a", "Lobby"), (3, "b", "Lobby"),
                           (4, "b", "General")):  # fmt: skip
        v.apply(cc.Joined(user(uid, relay, ch)))
    assert v.channel_relays() == {
        "Lobby": (("10.0.0.1", 8080), ("10.0.0.2", 8080)),
        "General": (("10.0.0.2", 8080),),
    }
    assert v.user_relays()[4] == ("10.0.0.2", 8080)
    assert v.relay_nums() == {1: "a", 2: "b"}
    assert [tcp for tcp, _fp in v.relay_list()] == ["a.example:8080", "b.example:8080"]


def test_a_dead_relay_is_sent_nothing_at_once_and_its_users_leave_after_the_grace() -> None:
    v = view("a", "b", grace=10.0)
    v.apply(cc.Joined(user(1, "a")))
    v.apply(cc.Joined(user(2, "a")))
    assert v.registry([rec("a", 1), rec("b", 2)], ["b"], 5.0)  # a's heartbeat expired
    assert v.channel_relays() == {} and 1 not in v.user_relays()
    assert v.next_deadline() == 15.0
    assert v.expire(14.9) == ([], [])
    v.apply(cc.Resumed(user(2, "b"), 1234))  # 2 resumed on b within the grace
    changes, dead = v.expire(15.0)
    assert changes == [cc.UserWent(user(1, "a"))] and dead == ["a"]
    assert set(v.users) == {2} and v.channel_relays() == {"Lobby": (("10.0.0.2", 8080),)}


def test_a_relay_that_beats_again_within_the_grace_keeps_its_users() -> None:
    v = view("a")
    v.apply(cc.Joined(user(1, "a")))
    v.registry([rec("a", 1)], [], 1.0)
    v.registry([rec("a", 1)], ["a"], 2.0)
    assert v.expire(100.0) == ([], []) and 1 in v.users


def test_a_resume_elsewhere_of_a_local_session_releases_it_quietly() -> None:
    v = view("a")
    changes = v.apply(cc.Resumed(user(7, "a"), 99), local={7})
    assert changes == [cc.Release(99, user(7, "a"))]
    assert v.users[7].relay == "a"


def test_synced_and_load_replace_what_was_known_of_a_relay() -> None:
    v = view("a", "b")
    v.apply(cc.Joined(user(1, "a")))
    v.apply(cc.Joined(user(2, "a")))
    changes = v.apply(cc.Synced("a", (user(2, "a", "General"), user(3, "a"))))
    assert cc.UserWent(user(1, "a")) in changes and cc.UserCame(user(3, "a")) in changes
    assert cc.UserChanged(user(2, "a"), user(2, "a", "General")) in changes
    changes = v.load([cc.SessionRecord(9, user(3, "a")), cc.SessionRecord(8, user(4, ME))])
    assert {type(c) for c in changes} == {cc.UserWent}  # 2 is gone; our own 4 is not shown
    assert set(v.users) == {3}


def test_a_directory_read_never_takes_away_the_users_of_a_relay_not_registered_yet() -> None:
    v = view("a")
    v.apply(cc.Joined(user(1, "a")))
    v.apply(cc.Joined(user(2, "zed")))  # zed: not (yet) in the registry
    changes = v.load([cc.SessionRecord(5, user(3, "zed"))])
    assert set(changes) == {cc.UserWent(user(1, "a")), cc.UserCame(user(3, "zed"))}
    assert set(v.users) == {2, 3}


relay_ids = st.sampled_from(["a", "b", ME])
user_ids = st.integers(1, 6)
channels = st.sampled_from(["Lobby", "General"])
stream = st.lists(
    st.one_of(
        st.builds(lambda r, u, c: cc.Joined(user(u, r, c)), relay_ids, user_ids, channels),
        st.builds(cc.Moved, relay_ids, user_ids, channels),
        st.builds(cc.Left, relay_ids, user_ids),
        st.builds(lambda r, u: cc.Resumed(user(u, r), 1000 + u), relay_ids, user_ids),
        st.builds(lambda r, us: cc.Synced(r, tuple(user(u, r) for u in us)), relay_ids,
                  st.sets(user_ids, max_size=3)),
        st.builds(lambda alive, dt: ("registry", alive, dt), st.sets(st.sampled_from("ab")),
                  st.floats(0, 20)),
    ),
    max_size=40,
)  # fmt: skip


@given(stream)
def test_any_stream_of_events_keeps_the_view_sound(items: list[object]) -> None:
    """Whatever the order of events and heartbeats: our own users are never shown as
    another relay's; only alive relays with a member in a channel are sent its voice;
    the grace never ends a user of a relay that beats."""
    v = view("a", "b", grace=10.0)
    now = 0.0
    for item in items:
        if isinstance(item, tuple):
            _kind, alive, dt = item
            now += dt
            v.registry([rec("a", 1), rec("b", 2)], sorted(alive), now)
            went, _dead = v.expire(now)
            for change in went:
                assert isinstance(change, cc.UserWent) and change.user.relay not in v.alive
        else:
            assert isinstance(item, cc.Joined | cc.Moved | cc.Left | cc.Resumed | cc.Synced)
            v.apply(item, local=set())
        assert all(u.relay != ME for u in v.users.values())
        members = {(u.channel, u.relay) for u in v.users.values()}
        for channel, dests in v.channel_relays().items():
            expected = {rec(r, n).udp_addr() for r, n in (("a", 1), ("b", 2))
                        if r in v.alive and (channel, r) in members}  # fmt: skip
            assert set(dests) == expected and len(dests) == len(set(dests))


@pytest.mark.parametrize("name", ["\u202eevil", "a\x00b", "   ", "a" + "\u0301" * 9])
def test_a_user_whose_name_the_rules_refuse_is_our_error(name: str) -> None:
    # The session table claims every remote user's name: a name the rules refuse raised
    # there, mid-batch, and the rest of the batch (other users, their joins) was lost.
    u = {"user_id": 7, "name": name, "channel": "Lobby", "relay": "a"}
    for data in (
        {"kind": "joined", "user": u},
        {"kind": "resumed", "user": u, "token": 9},
        {"kind": "synced", "relay": "a", "users": [u]},
        {"token": 9, **u, "udp_key": ""},
    ):
        parse = cc.SessionRecord.parse if "token" in data and "kind" not in data else cc.parse_event
        with pytest.raises(ProtocolError):
            parse(json.dumps(data))
    said = {"kind": "said", "relay": "a", "user_id": 7, "name": name, "channel": "Lobby",
            "text": "hi", "ts": 1.0}  # fmt: skip
    if name.strip():  # an empty name is the operator's
        with pytest.raises(ProtocolError):
            cc.parse_event(json.dumps(said))


@given(st.text(max_size=40))
def test_any_user_that_parses_can_be_shown_by_a_session_table(name: str) -> None:
    from relay.session_table import SessionTable

    t = SessionTable(["Lobby"], grace=10.0, sealed=True)
    u = {"kind": "joined", "user": {"user_id": 7, "name": name, "channel": "Lobby", "relay": "a"}}
    try:
        event = cc.parse_event(json.dumps(u))
    except ProtocolError:
        return
    assert isinstance(event, cc.Joined)
    t.remote_join(event.user)  # never raises: the name is one the rules take
