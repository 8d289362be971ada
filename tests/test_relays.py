"""pipeline/core/relays.py: server lists, welcome.relays entries, the failover order."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.core.relays import (
    MAX_RELAYS,
    RECONNECT_DELAY,
    Relay,
    RelayEntry,
    RelayList,
    parse_relays,
    servers_text,
    split_server,
    split_servers,
)
from relay.protocol.errors import ProtocolError

FP_A = ":".join(["AB"] * 32)
FP_B = ":".join(["0f"] * 32)


def test_split_server_keeps_its_forms() -> None:
    assert split_server(" relay.example:9000 ") == ("relay.example", 9000)
    assert split_server("[::1]:8080") == ("::1", 8080)
    assert split_server("::1:8080") == ("::1", 8080)
    for bad in ("relay", "relay:", ":80", "relay:0", "relay:70000", "relay:http", "a b:1"):
        with pytest.raises(ValueError, match="HOST:PORT"):
            split_server(bad)
    with pytest.raises(ValueError, match="HOST:PORT"):
        split_server("relay:\u0661\u0662")  # Arabic-Indic digits: int() takes them, we do not


def test_split_servers_reads_a_list_in_order() -> None:
    assert split_servers("a:8080") == [("a", 8080)]
    assert split_servers(" a:8080 , [::1]:9000,b.example:1") == [
        ("a", 8080),
        ("::1", 9000),
        ("b.example", 1),
    ]
    assert servers_text([("a", 8080), ("::1", 9000)]) == "a:8080,[::1]:9000"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("a:8080,b", "server 2 of 2: expected HOST:PORT"),
        ("a:8080,,b:1", "server 2 of 3: empty"),
        ("a:8080,", "server 2 of 2: empty"),
        ("", "empty"),
        ("a:1,[::1]:2,a:1", "server 3 of 3: a:1 is listed twice"),
        (",".join(f"h{i}:1" for i in range(MAX_RELAYS + 1)), f"at most {MAX_RELAYS}"),
    ],
)
def test_split_servers_names_the_entry_at_fault(text: str, words: str) -> None:
    with pytest.raises(ValueError, match=words.replace("[", r"\[").replace("]", r"\]")):
        split_servers(text)


@given(st.text(max_size=80))
def test_fuzz_split_servers_gives_a_list_or_a_value_error(text: str) -> None:
    try:
        servers = split_servers(text)
    except ValueError as exc:
        assert str(exc)
        return
    assert 1 <= len(servers) <= MAX_RELAYS and len(set(servers)) == len(servers)
    assert split_servers(servers_text(servers)) == servers  # written back, read the same


hosts = st.from_regex(r"[a-z0-9][a-z0-9.-]{0,20}", fullmatch=True) | st.ip_addresses().map(str)


@given(st.lists(st.tuples(hosts, st.integers(1, 65535)), min_size=1, max_size=5, unique=True))
def test_a_list_written_out_reads_back(servers: list[tuple[str, int]]) -> None:
    assert split_servers(servers_text(servers)) == servers


def test_a_relay_entry_parses_and_round_trips() -> None:
    e = RelayEntry.parse({"addr": "b.example:8080", "fingerprint": FP_B})
    assert e == RelayEntry("b.example", 8080, FP_B.upper())  # the pinned form: upper case
    assert RelayEntry.parse(e.to_map()) == e
    v6 = RelayEntry.parse({"addr": "[fd00::2]:8080", "fingerprint": FP_A, "load": 3})
    assert (v6.host, v6.port) == ("fd00::2", 8080) and v6.to_map()["addr"] == "[fd00::2]:8080"


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ([], "must be a map"),
        ({"fingerprint": FP_A}, "addr must be"),
        ({"addr": "b:1"}, "fingerprint must be"),
        ({"addr": "b:1", "fingerprint": FP_A[:-3]}, "fingerprint must be"),
        ({"addr": "b:1", "fingerprint": FP_A.replace(":", "")}, "fingerprint must be"),
        ({"addr": "b:1", "fingerprint": FP_A + "\n"}, "fingerprint must be"),
        ({"addr": "b", "fingerprint": FP_A}, "addr: expected HOST:PORT"),
        ({"addr": "b:1,c:2", "fingerprint": FP_A}, "addr: expected HOST:PORT"),
        ({"addr": "b" * 300 + ":1", "fingerprint": FP_A}, "at most 261"),
        ({"addr": 5, "fingerprint": FP_A}, "addr must be"),
    ],
)
def test_a_bad_relay_entry_says_why(value: object, words: str) -> None:
    with pytest.raises(ProtocolError, match=words):
        RelayEntry.parse(value)


def test_parse_relays_drops_the_bad_keeps_the_good_and_caps() -> None:
    good = {"addr": "b:1", "fingerprint": FP_B}
    entries, dropped = parse_relays(
        [good, {"addr": "c"}, "x", good, {"addr": "d:2", "fingerprint": FP_A}]
    )
    assert [(e.host, e.port) for e in entries] == [("b", 1), ("d", 2)]
    assert len(dropped) == 3 and "relays[1]" in dropped[0] and "listed twice" in dropped[2]
    many = [{"addr": f"h{i}:1", "fingerprint": FP_A} for i in range(MAX_RELAYS + 5)]
    entries, dropped = parse_relays(many)
    assert len(entries) == MAX_RELAYS and dropped == [f"5 entries beyond the first {MAX_RELAYS}"]
    assert parse_relays({"addr": "b:1"}) == ([], ["relays must be a list, got dict"])


wire = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
entry_like = st.fixed_dictionaries(
    {
        "addr": st.text(max_size=30) | hosts.map(lambda h: f"{h}:8080"),
        "fingerprint": st.sampled_from([FP_A, FP_B, "AB", ""]) | st.text(max_size=100),
    }
)


@given(st.one_of(wire, st.lists(entry_like | wire, max_size=40)))
def test_fuzz_parse_relays_never_raises(value: Any) -> None:
    entries, dropped = parse_relays(value)
    assert len(entries) <= MAX_RELAYS
    assert len({(e.host, e.port) for e in entries}) == len(entries)
    for e in entries:
        assert RelayEntry.parse(e.to_map()) == e
    if isinstance(value, list):
        assert len(entries) + len(dropped) <= len(value)


def relays(*names: str) -> RelayList:
    return RelayList([Relay(n, 1) for n in names])


def test_one_relay_retries_itself_every_reconnect_delay() -> None:
    r = relays("a")
    assert r.lost() == RECONNECT_DELAY and r.current.host == "a"
    assert r.failed() == RECONNECT_DELAY and r.current.host == "a" and r.rounds == 1
    assert r.failed() == RECONNECT_DELAY and r.rounds == 2
    r.welcomed()
    assert r.rounds == 0


def test_the_lost_relay_first_once_then_the_others_in_turn() -> None:
    r = relays("a", "b", "c")
    r.failed()  # a fails: b at once
    assert r.current.host == "b"
    r.welcomed()  # b welcomed us, then is lost
    assert r.lost() == RECONNECT_DELAY and r.current.host == "b"  # b again first, once
    assert r.failed() == 0.0 and r.current.host == "c"
    assert r.failed() == 0.0 and r.current.host == "a"
    assert r.failed() == RECONNECT_DELAY and r.current.host == "b" and r.rounds == 1  # all tried


def test_learnt_relays_come_after_the_configured_newest_first_capped() -> None:
    r = relays("a", "b")
    vouched = r.learn([RelayEntry("c", 1, FP_A), RelayEntry("a", 1, FP_B)])
    assert [v.server for v in vouched] == ["c:1", "a:1"]  # a's fingerprint is pinned too
    assert [x.server for x in r.relays] == ["a:1", "b:1", "c:1"]  # a keeps its place
    r.learn([RelayEntry("d", 1, FP_A)])
    assert [x.server for x in r.relays] == ["a:1", "b:1", "d:1", "c:1"]
    r.learn([RelayEntry(f"h{i}", 1, FP_A) for i in range(MAX_RELAYS)])
    assert len(r.learnt) == MAX_RELAYS and r.learnt[0].host == "h0"
    assert r.configured == [Relay("a", 1), Relay("b", 1)]


def test_failover_reaches_a_learnt_relay_with_its_fingerprint() -> None:
    r = relays("a")
    r.learn([RelayEntry("b", 2, FP_B)])
    r.lost()
    assert r.current == Relay("a", 1)
    assert r.failed() == 0.0 and r.current == Relay("b", 2, FP_B)
    # The current relay re-vouched with another fingerprint: the list holds the newest.
    r.learn([RelayEntry("b", 2, FP_A)])
    assert r.current == Relay("b", 2, FP_A)
    # ... and no longer listed at all: the next after it is the first relay.
    r.learn([RelayEntry(f"h{i}", 1, FP_A) for i in range(MAX_RELAYS)])
    assert r.current.host == "b" and r.failed() == 0.0 and r.current.host == "a"


@dataclass(frozen=True, slots=True)
class Peer:  # a relay's own record of a peer, as a cluster might hold one
    addr: str
    fingerprint: str


def test_an_entry_held_as_a_record_reads_as_its_map() -> None:
    """The relay side may hold entries as dataclasses: they read as the map they send."""
    e = RelayEntry("b", 1, FP_B.upper())
    assert RelayEntry.parse(e) == e
    assert parse_relays([Peer("b:1", FP_B), Peer("c", FP_B)]) == (
        [e],
        ["relays[1]: addr: expected HOST:PORT or [IPV6]:PORT, got 'c'"],
    )
