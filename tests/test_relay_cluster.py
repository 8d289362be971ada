"""A relay cluster as real processes: three relays and a real redis-server on loopback
(relay/cluster.py and what it drives: the session table's remote users, the cluster
router's mesh, failover through the directory)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TypeVar

import pytest
import redis

from relay import cluster_core as cc
from relay import launch
from relay.probe import ProbeClient
from relay.protocol.mesh_datagram import MeshDatagram, mesh_key
from relay.protocol.messages import (
    PROTOCOL,
    Bye,
    Chat,
    Join,
    MediaKey,
    Message,
    Reconnect,
    SelfState,
    UserJoined,
    UserLeft,
    UserState,
    Voice,
    Welcome,
)
from relay.tls import fingerprint as tls_fingerprint

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parent.parent
SECRET = "a cluster secret of the tests, 32+"
GRACE = 4.0  # longer than a heartbeat's expiry and a late resume after it, on a loaded machine
M = TypeVar("M", bound=Message)


@dataclass
class Node:
    proc: subprocess.Popen[str]
    port: int
    log: IO[str]

    def client(self, name: str) -> ProbeClient:
        c = ProbeClient(HOST, self.port, sealed=True, timeout=5.0)
        c.auth(name)
        c.register()
        return c

    def counters(self) -> dict[str, int]:
        """The relay's counters now (SIGUSR1 makes it log them)."""
        before = self.text().count("counters:")
        self.proc.send_signal(signal.SIGUSR1)
        assert until(lambda: self.text().count("counters:") > before), self.text()[-3000:]
        line = [ln for ln in self.text().splitlines() if "counters:" in ln][-1]
        return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}

    def text(self) -> str:
        """The relay's log so far. Read at an offset (pread): the relay writes through the
        same open file, whose offset a seek here would move under its writes."""
        fd = self.log.fileno()
        return os.pread(fd, os.fstat(fd).st_size, 0).decode(errors="replace")


@dataclass
class Cluster:
    url: str
    secret_file: str
    nodes: list[Node]
    redis: subprocess.Popen[bytes]
    redis_port: int

    def start(self, n: int = 1, *args: str) -> list[Node]:
        """``n`` more relays, started side by side (each takes a second or two to start),
        with ``args`` besides the cluster's."""

        def one(_: int) -> Node:
            log = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed at the end)
            proc, port = launch.start_relay(
                "--cluster", self.url, "--cluster-secret-file", self.secret_file,
                "--grace", str(GRACE), "--log-level", "debug", *args, host=HOST, log=log,
            )  # fmt: skip
            return Node(proc, port, log)

        with ThreadPoolExecutor(n) as pool:
            futures = [pool.submit(one, i) for i in range(n)]
        nodes = [f.result() for f in futures if f.exception() is None]
        self.nodes += nodes  # stopped at the end even if another did not start
        for f in futures:
            f.result()  # raises the first failure
        return nodes


@pytest.fixture
def cluster(redis_server: tuple[subprocess.Popen[bytes], int]) -> Iterator[Cluster]:
    proc, port = redis_server
    with tempfile.NamedTemporaryFile("w", suffix=".secret", delete=False) as f:
        f.write(SECRET + "\n")
    c = Cluster(f"redis://{HOST}:{port}/0", f.name, [], proc, port)
    try:
        yield c
    finally:
        with ThreadPoolExecutor(max(1, len(c.nodes))) as pool:
            list(pool.map(lambda n: launch.stop_relay(n.proc), c.nodes))
        for n in c.nodes:
            n.log.close()
        if c.redis is not proc:  # restarted by a test
            launch.stop_redis(c.redis)
        Path(f.name).unlink()


@pytest.fixture
def three(cluster: Cluster) -> list[Node]:
    return cluster.start(3)


def redis_command(port: int, *words: str) -> bytes:
    """One Redis command by hand (RESP), its first reply line."""
    with socket.create_connection((HOST, port), timeout=2) as s:
        s.sendall(f"*{len(words)}\r\n".encode() + b"".join(
            f"${len(w)}\r\n{w}\r\n".encode() for w in words))  # fmt: skip
        return s.recv(4096).split(b"\r\n")[0]


def until(cond: Callable[[], bool], timeout: float = 5.0, every: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(every)
    return False


def heard(c: ProbeClient, quiet: float = 0.5) -> list[tuple[int, bytes]]:
    """(speaker, payload) of every voice datagram until ``quiet`` seconds pass without one."""
    out = []
    while (v := c.recv_voice(quiet)) is not None:
        out.append((v.token, v.payload))
    return out


def sees(
    c: ProbeClient, cls: type[M], match: Callable[[M], bool] = lambda m: True, timeout: float = 5.0
) -> M:
    """The first message of type ``cls`` that satisfies ``match``, within ``timeout``."""
    c.timeout = timeout
    msg = c.recv(lambda m: isinstance(m, cls) and match(m))
    assert isinstance(msg, cls)
    return msg


def arrived(user_id: int, channel: str) -> Callable[[UserJoined], bool]:
    return lambda m: m.user_id == user_id and m.channel == channel


def wait_in_tree(c: ProbeClient, user_id: int) -> None:
    sees(c, UserJoined, lambda m: m.user_id == user_id)


def settle(clients: list[ProbeClient], total: int) -> None:
    """Wait until every client has been told of all ``total`` users (welcome + joins)."""
    for c in clients:
        assert c.welcome is not None
        known = {u.user_id for u in c.welcome.users}
        while len(known) < total:
            m = c.recv(lambda m: isinstance(m, UserJoined))
            assert isinstance(m, UserJoined)
            known.add(m.user_id)


# --- voice ----------------------------------------------------------------------------


def test_voice_across_three_relays(three: list[Node]) -> None:
    """Everyone in the channel hears everyone else exactly once (no duplicates, no
    loops), nobody themselves, another channel nothing; a whisper reaches its target on
    another relay alone; forged mesh datagrams are dropped and counted."""
    users = [n.client(f"u{i}{j}") for i, n in enumerate(three) for j in range(2)]
    other = three[1].client("elsewhere")
    other.send(Join("General"))
    settle(users, 7)
    time.sleep(0.3)  # every relay has seen every relay's heartbeat and joins
    sent = [u.send_voice(1, f"from {i}".encode()) for i, u in enumerate(users)]
    for i, u in enumerate(users):
        got = heard(u)
        want = {(v.user_id, f"from {k}".encode()) for k, v in enumerate(users) if k != i}
        assert sorted(got) == sorted(want), f"user {i}: no duplicates, nobody's own voice"
    assert heard(other, 0.3) == []
    # Once to each other relay, not once per listener there: its 2 speakers, 2 relays.
    assert three[0].counters()["mesh_out"] == 4

    whisperer, target = users[0], users[5]  # relay 0 to relay 2
    whisperer.send_voice(2, b"psst", target=target.user_id)
    assert heard(target) == [(whisperer.user_id, b"psst")]
    assert all(heard(u, 0.2) == [] for u in users[1:5])
    assert three[0].counters()["mesh_out"] == 5  # to the target's relay alone

    # Voice through the TCP tunnel (a client whose UDP is blocked) crosses relays too.
    talker = users[1]
    assert talker.sealer is not None
    talker.send(Voice(talker.sealer.voice(3, 3, b"through tcp")))
    for i, u in enumerate(users):
        if i != 1:
            assert heard(u) == [(talker.user_id, b"through tcp")], f"user {i}"

    # Relay 0 is mesh number 1 (the first to start may be any: try both numbers).
    inner = sent[0][:-16]  # what a relay forwards: the client's datagram minus its tag
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for num in (1, 2, 3):
            forged = MeshDatagram(num, 10**12, inner)
            s.sendto(
                forged.seal(mesh_key(b"not the cluster's secret at all")), (HOST, three[1].port)
            )
            s.sendto(forged.seal(b"")[:-16] + bytes(16), (HOST, three[1].port))  # no tag
    assert heard(users[2], 0.3) == [] and heard(users[3], 0.2) == []
    counted = three[1].counters()
    assert counted["drop_mesh_bad_auth"] == 4  # the two of the other relays' numbers
    assert counted["drop_mesh_unknown_relay"] == 2  # its own number is no other relay's
    for c in [*users, other]:
        c.close()


# --- presence and chat ----------------------------------------------------------------


def test_presence_and_chat_across_relays(cluster: Cluster, three: list[Node]) -> None:
    a = three[0].client("ann")
    b = three[1].client("bea")
    wait_in_tree(a, b.user_id)  # a join on relay B is seen on relay A
    c = three[2].client("cid")
    assert c.welcome is not None
    check_registry_and_directory(cluster, three, [a, b, c])
    assert {u.user_id for u in c.welcome.users} >= {a.user_id, b.user_id}
    # Where it may fail over: the two other relays, with the fingerprint it would pin.
    fingerprint = c.tcp.getpeercert(binary_form=True)  # type: ignore[attr-defined]
    assert fingerprint is not None
    assert sorted(r["addr"] for r in c.welcome.relays) == sorted(
        f"{HOST}:{n.port}" for n in three[:2]
    )
    assert {r["fingerprint"] for r in c.welcome.relays} == {tls_fingerprint(fingerprint)}
    b.send(Join("General"))
    for x in (a, c):
        left = sees(x, UserLeft, lambda m: m.user_id == b.user_id)
        assert left.channel == "Lobby"
        joined = sees(x, UserJoined, lambda m: m.user_id == b.user_id)
        assert joined.channel == "General"
    a.send(SelfState(muted=True))
    state = sees(c, UserState, lambda m: m.user_id == a.user_id)
    assert state.muted
    a.send(Chat("hello everyone in Lobby"))
    said = sees(c, Chat)
    assert (said.user_id, said.name, said.text) == (a.user_id, "ann", "hello everyone in Lobby")
    with pytest.raises(TimeoutError):  # bea is in General now
        sees(b, Chat, timeout=0.5)
    b.close()
    left = sees(a, UserLeft, lambda m: m.user_id == b.user_id, timeout=GRACE + 4)
    assert left.channel == "General"
    a.close()
    c.close()


def check_registry_and_directory(
    cluster: Cluster, nodes: list[Node], users: list[ProbeClient]
) -> None:
    """What Redis holds: each relay's record (id, TCP and UDP address) and its heartbeat
    key (its load: how many sessions it holds), which expires; each session's record
    (token to user id, name, channel, home relay) and its channel's membership."""
    r = redis.Redis(HOST, cluster.redis_port)
    try:
        records = [cc.RelayRecord.parse(v) for v in r.hgetall(cc.RELAYS_KEY).values()]
        assert sorted(rec.tcp for rec in records) == sorted(f"{HOST}:{n.port}" for n in nodes)
        assert all(rec.udp == rec.tcp for rec in records)  # one port for TCP and UDP
        for rec in records:
            beat = cc.ALIVE_KEY + rec.id
            assert 0 < r.pttl(beat) <= cc.ALIVE_TTL * 1000, "a heartbeat that expires"
            # each relay holds one of the users: its load, at the next heartbeat at last
            assert until(lambda beat=beat: r.get(beat) == b"1")  # type: ignore[misc]
        homes = {rec.tcp: rec.id for rec in records}
        directory = [cc.SessionRecord.parse(v) for v in r.hgetall(cc.SESSIONS_KEY).values()]
        got = {
            (d.token, d.user.user_id, d.user.name, d.user.channel, d.user.relay) for d in directory
        }
        names = ("ann", "bea", "cid")
        assert got == {(u.token, u.user_id, name, "Lobby", homes[f"{HOST}:{n.port}"])
                       for u, name, n in zip(users, names, nodes, strict=True)}  # fmt: skip
        assert r.smembers(cc.MEMBERS_KEY + "Lobby") == {str(u.user_id).encode() for u in users}
    finally:
        r.close()


def story(c: ProbeClient, user_id: int, n: int) -> list[tuple[object, ...]]:
    """The first ``n`` presence and chat messages ``c`` was sent about ``user_id``, in the
    order received, without what tells two users apart (their id and name)."""
    kinds = (UserJoined, UserLeft, UserState, Chat)
    c.timeout = GRACE + 6
    out: list[tuple[object, ...]] = []
    for _ in range(n):
        try:
            m = c.recv(lambda m: isinstance(m, kinds) and m.user_id == user_id)
        except TimeoutError:
            break  # what came, for the assertion to show
        if isinstance(m, UserJoined | UserLeft):
            out.append((type(m).__name__, m.channel))
        elif isinstance(m, UserState):
            out.append(("UserState", m.muted, m.deafened, m.server_muted))
        else:
            assert isinstance(m, Chat)
            out.append(("Chat", m.channel, m.text))
    return out


def live(actor: ProbeClient) -> None:
    """Move to General, mute, move back and chat at once, leave: the steps before the chat
    each once the actor's relay has told it to its own users, the actor among them (a
    relay tells a session that arrives and leaves within one presence round, 50 ms, to
    no one); the chat right after the move (it must not overtake the move's presence)."""
    me = actor.user_id
    actor.send(Join("General"))
    sees(actor, UserJoined, lambda m: m.user_id == me and m.channel == "General")
    actor.send(SelfState(muted=True))
    sees(actor, UserState, lambda m: m.user_id == me and m.muted)
    actor.send(Join("Lobby"))
    actor.send(Chat("hi all"))
    sees(actor, Chat, lambda m: m.user_id == me)
    actor.send(Bye())
    assert actor.closed_by_relay(10.0)
    actor.close()


def test_a_user_on_another_relay_is_seen_in_the_same_order_of_events_as_one_on_this(
    three: list[Node],
) -> None:
    """The same life (arrive, move, mute, move back, chat, leave) of a user on relay A and
    of one on relay B reads the same, event for event, to a watcher on A and one on C."""
    on_a, on_c = three[0].client("watch_a"), three[2].client("watch_c")
    settle([on_a, on_c], 2)
    actors = [three[0].client("local"), three[1].client("remote")]
    for actor in actors:
        live(actor)
    life = [
        ("UserJoined", "Lobby"),
        ("UserLeft", "Lobby"), ("UserJoined", "General"),
        ("UserState", True, False, False),
        ("UserLeft", "General"), ("UserJoined", "Lobby"),
        ("Chat", "Lobby", "hi all"),
        ("UserLeft", "Lobby"),
    ]  # fmt: skip
    for watcher in (on_a, on_c):
        for actor in actors:
            assert story(watcher, actor.user_id, len(life)) == life, (watcher, actor.user_id)
    on_a.close()
    on_c.close()


# --- failover --------------------------------------------------------------------------


def resume(old: ProbeClient, node: Node) -> tuple[ProbeClient, Welcome]:
    """What a failing-over client does, by hand: reconnect with its token elsewhere."""
    c = ProbeClient(HOST, node.port, sealed=True, timeout=5.0)
    c.send(Reconnect(token=old.token, version=PROTOCOL))
    welcome = c.recv_type(Welcome)
    assert isinstance(welcome, Welcome)
    c.take_welcome(welcome)
    c.register()
    return c, welcome


def test_sigkill_of_a_talkers_relay_resumes_it_on_another(
    cluster: Cluster, three: list[Node]
) -> None:
    """The talker resumes on relay C (same user id and channel) and is heard again; the
    others stop sending to the dead relay once its heartbeat expired; of its other
    sessions, the one that resumes late (after the expiry, within the grace) is never
    announced as left, the one that never resumes is, after the grace."""
    talker = three[0].client("talker")
    idle = three[0].client("idle")  # on the same relay; it never resumes
    late = three[0].client("late")  # on the same relay; it resumes after the expiry
    listener = three[1].client("listener")
    far = three[2].client("far")
    settle([talker, idle, late, listener, far], 5)
    talker.send(Join("General"))
    listener.send(Join("General"))
    talker.recv_type(MediaKey)  # the new channel's key, before any voice in it
    listener.recv_type(MediaKey)
    for watcher in (listener, far):  # the moves, read: any later join is churn
        for mover in (talker, listener):
            if watcher is not mover:
                sees(watcher, UserJoined, arrived(mover.user_id, "General"))
    time.sleep(0.3)
    talker.send_voice(1, b"before")
    assert heard(listener) == [(talker.user_id, b"before")]
    # far's voice in the Lobby goes to relay A (idle and late) and to nobody else
    assert mesh_sends(three[2], far) == 1

    killed = time.monotonic()
    three[0].proc.send_signal(signal.SIGKILL)
    three[0].proc.wait()
    moved, welcome = resume(talker, three[2])
    assert (welcome.user_id, welcome.channel, welcome.token) == (
        talker.user_id,
        "General",
        talker.token,
    )
    back = None
    for seq in range(2, 200):
        moved.send_voice(seq, b"after")
        v = listener.recv_voice(0.05)
        if v is not None:
            back = time.monotonic() - killed
            assert (v.token, v.payload) == (talker.user_id, b"after")
            break
    assert back is not None and back < 5.0, f"heard again after {back} s"
    print(f"heard again {back:.2f} s after the kill")

    # A's heartbeat expires: from then on relay C sends A nothing (idle and late are still
    # in everyone's tree, in the grace).
    assert until(lambda: redis_command(cluster.redis_port, "KEYS", "vc:alive:*") == b"*2", 10)
    assert until(lambda: mesh_sends(three[2], far) == 0, 6, every=1.0)  # once a heartbeat
    late_moved, late_welcome = resume(late, three[1])
    assert (late_welcome.user_id, late_welcome.channel) == (late.user_id, "Lobby")
    # The one that did not resume leaves after the grace; the two that did, never.
    sees(listener, UserLeft, lambda m: m.user_id == idle.user_id, timeout=GRACE + 8)
    assert time.monotonic() - killed >= GRACE
    sees(far, UserLeft, lambda m: m.user_id == idle.user_id, timeout=5)
    for watcher in (listener, far):
        with pytest.raises(TimeoutError):
            sees(watcher, UserLeft, lambda m: m.user_id == late.user_id, timeout=0.5)
        with pytest.raises(TimeoutError):  # (its move's leave of the Lobby may be unread)
            sees(watcher, UserLeft,
                 lambda m: m.user_id == talker.user_id and m.channel == "General",
                 timeout=0.2)  # fmt: skip
        with pytest.raises(TimeoutError):  # nor joined again: the same sessions, resumed
            sees(watcher, UserJoined, lambda m: m.user_id in (talker.user_id, late.user_id),
                 timeout=0.2)  # fmt: skip
    for x in (talker, idle, late, listener, far, moved, late_moved):
        x.close()


def mesh_sends(node: Node, speaker: ProbeClient) -> int:
    """How many other relays ``node`` sends one datagram of ``speaker`` to. (Few counter
    lines: a relay logs at most 20 of them in 10 s, relay/lograte.py.)"""
    before = node.counters()
    speaker.send_voice(1, b"where to")
    time.sleep(0.2)
    after = node.counters()
    for _ in range(6):
        if after["voice_in"] > before["voice_in"]:
            return after["mesh_out"] - before["mesh_out"]
        time.sleep(0.5)  # not taken yet: a loaded machine
        after = node.counters()
    raise AssertionError("the relay never took the datagram")


def test_a_real_client_resumes_its_session_on_another_relay(
    cluster: Cluster, tmp_path: Path
) -> None:
    """The real client (six processes, a tone), given relay A alone: it learns relay B
    from its welcome, and when A is SIGKILLed it resumes the same session on B, where a
    listener hears it again."""
    from pipeline.client.config import ClientConfig
    from pipeline.client.local_client import LocalClient, connected
    from pipeline.media.sources import MediaSpec

    a, b = cluster.start(2)
    pins = str(tmp_path / "pins.json")
    rx_cfg = ClientConfig(HOST, b.port, "rx", pins_file=pins)
    tx_cfg = ClientConfig(HOST, a.port, "tx", source=MediaSpec("tone"), pins_file=pins)
    with LocalClient(rx_cfg) as rx, LocalClient(tx_cfg) as tx:
        rx.until(connected, 60, "the listener on B")  # six processes each: slow when loaded
        # Connected comes with the welcome, the channel with the roster just after it.
        tx.until(lambda v: connected(v) and bool(v.roster.channel), 60, "the talker on A")
        old, channel = tx.view.endpoint, tx.view.roster.channel
        assert old is not None and channel

        def heard_before() -> bool:
            tx.pump(0.05)
            rx.pump(0.05)
            return old.user_id in rx.view.heard

        assert until(heard_before, 10), "not heard across relays before the kill"
        a.proc.kill()
        a.proc.wait()
        killed = time.monotonic()

        def back() -> bool:
            tx.pump(0.05)
            rx.pump(0.05)
            me = tx.view.endpoint
            return me is not None and me.udp_port == b.port and old.user_id in rx.view.heard

        assert until(back, 15), tx.view.status_line()
        print(f"the real client was heard again {time.monotonic() - killed:.2f} s after the kill")
        me = tx.view.endpoint
        assert me is not None and me.user_id == old.user_id  # the same session, resumed
        assert tx.view.roster.channel == channel
    assert "event=resume" in b.text()


def test_a_relay_started_again_under_its_id_ends_its_earlier_runs_sessions(
    cluster: Cluster,
) -> None:
    """Their home beats again, so no relay would ever expire them: it takes them out of
    the directory itself (its earlier run's clients start new sessions, as with a relay
    alone that restarted)."""
    (first,) = cluster.start(1, "--relay-id", "a")
    old = first.client("old")
    assert until(lambda: redis_command(cluster.redis_port, "HLEN", "vc:sessions") == b":1")
    first.proc.kill()
    first.proc.wait()
    (again,) = cluster.start(1, "--relay-id", "a")
    assert until(lambda: redis_command(cluster.redis_port, "HLEN", "vc:sessions") == b":0")
    assert redis_command(cluster.redis_port, "SCARD", "vc:members:Lobby") == b":0"
    new = again.client("new")
    assert new.user_id != old.user_id
    for c in (old, new):
        c.close()


# --- Redis away -------------------------------------------------------------------------


class Talk:
    """``speaker`` talks to ``listener`` (one datagram every 20 ms) in two threads until
    :meth:`stop` (or the end of a ``with``): which of the numbered datagrams were sent and
    which were heard."""

    def __init__(self, speaker: ProbeClient, listener: ProbeClient) -> None:
        self.speaker, self.listener = speaker, listener
        self.sent: list[int] = []
        self.got: list[int] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=f, daemon=True) for f in (self._talk, self._hear)]
        for t in self._threads:
            t.start()

    def _talk(self) -> None:
        seq = 0
        while not self._stop.wait(0.02):
            seq += 1
            self.speaker.send_voice(seq, seq.to_bytes(4, "big"))
            self.sent.append(seq)

    def _hear(self) -> None:
        while not self._stop.is_set() or len(self.got) < len(self.sent):
            v = self.listener.recv_voice(1.0)
            if v is None and self._stop.is_set():
                return
            if v is not None:
                self.got.append(int.from_bytes(v.payload, "big"))

    def stop(self) -> tuple[list[int], list[int]]:
        self._stop.set()
        for t in self._threads:
            t.join()
        return self.sent, self.got

    def __enter__(self) -> Talk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()  # a failed check ends the threads too


def test_redis_killed_and_restarted_mid_call(cluster: Cluster) -> None:
    """Local voice never stops (every datagram sent from before Redis's SIGKILL to after
    its return and the relays' re-sync is heard); the call across relays goes on while it
    is away; cross-relay presence converges again when it is back (empty)."""
    n0, n1 = cluster.start(2)
    a, b = n0.client("a"), n0.client("b")  # local to each other
    c = n1.client("c")
    settle([a, b, c], 3)
    time.sleep(0.3)
    with Talk(a, b) as talk:
        assert until(lambda: len(talk.got) >= 5)
        cluster.redis.kill()
        cluster.redis.wait()
        time.sleep(0.5)
        sent, got = talk.stop()
    assert got == sent  # local voice went on without Redis, none missing
    drain_voice(c)
    for seq in range(5):  # and so does the call across relays, as routed before
        a.send_voice(seq, b"across")
    assert heard(c) == [(a.user_id, b"across")] * 5
    drain_voice(b)
    with Talk(a, b) as talk:  # through Redis's return and both relays' re-sync
        cluster.redis, _ = launch.start_redis(cluster.redis_port)  # back, and empty
        d = n1.client("d")  # joins while the relays may still be reconnecting
        assert d.user_id not in {a.user_id, b.user_id, c.user_id}
        assert_converges(a, d.user_id, [n0, n1])  # cross-relay presence converges again
        # Both relays put their sessions back in the directory.
        assert until(lambda: redis_command(cluster.redis_port, "HLEN", "vc:sessions") == b":4")
        sent, got = talk.stop()
    assert got == sent and len(sent) > 5  # local voice never stopped
    time.sleep(0.3)
    drain_voice(c)  # the talk reached c too (the mesh)
    d.send_voice(1, b"again")
    for x in (a, b, c):
        assert heard(x) == [(d.user_id, b"again")]
    assert "lost the cluster's Redis" in n0.text()
    with pytest.raises(TimeoutError):  # and c never left anyone's tree meanwhile
        sees(a, UserLeft, lambda m: m.user_id == c.user_id, timeout=0.3)
    for x in (a, b, c, d):
        x.close()


def assert_converges(c: ProbeClient, user_id: int, nodes: list[Node]) -> None:
    """``c`` is told of ``user_id``; if not, the relays' logs say why. Convergence is what
    is asked, not its speed: 15 s (one run in twelve took over 5 s on a quiet machine)."""
    try:
        sees(c, UserJoined, lambda m: m.user_id == user_id, timeout=15.0)
    except TimeoutError:
        logs = "\n\n".join(n.text()[-4000:] for n in nodes)
        raise AssertionError(f"user {user_id} never shown; the relays' logs:\n{logs}") from None


def drain_voice(c: ProbeClient) -> None:
    """Read and forget what ``c`` was sent until now."""
    heard(c, 0.2)


# --- start-up ------------------------------------------------------------------------------


def test_without_cluster_nothing_of_redis_is_imported() -> None:
    code = (
        "import sys, relay.__main__, relay.server; "
        "assert not [m for m in sys.modules if m.startswith('redis')], 'redis imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_a_relay_that_cannot_reach_redis_says_so_and_exits(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text(SECRET + "\n")
    with socket.socket() as s:
        s.bind((HOST, 0))
        closed = s.getsockname()[1]  # nothing listens there once the socket is closed
    args = [sys.executable, "-m", "relay", "--host", HOST, "--port", "0"]
    done = subprocess.run(
        [*args, "--cluster", f"redis://{HOST}:{closed}/0", "--cluster-secret-file", str(secret)],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 1 and "the cluster's Redis at" in done.stderr
    done = subprocess.run([*args, "--cluster", "redis://x:1/0"], cwd=ROOT, capture_output=True,
                          text=True, timeout=30)  # fmt: skip
    assert done.returncode == 2 and "--cluster-secret-file" in done.stderr
