"""relay/cluster_router.py: two relays' routers in memory, joined by a mesh, no sockets."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from relay.cluster_router import ClusterRouter, MeshTable, local_fanout
from relay.protocol.mesh_datagram import MeshDatagram, mesh_key
from relay.protocol.sealed_datagram import TAG_SIZE
from relay.protocol.voice_crypto import Opened, Opener, Sealer
from relay.router import Addr, RouteTable

MEDIA = {1: bytes(16), 2: bytes(range(16))}
KEY = mesh_key(b"the cluster secret of the tests")
RELAY_A, RELAY_B = ("10.1.0.1", 8080), ("10.2.0.1", 8080)
A1, A2 = ("10.0.0.1", 1), ("10.0.0.2", 2)  # clients of relay A (1 in c1, 2 in c2)
B3, B4, B5 = ("10.0.0.3", 3), ("10.0.0.4", 4), ("10.0.0.5", 5)  # of relay B (3, 4 in c1; 5 in c2)


def key(uid: int) -> bytes:
    return bytes([uid]) * 32


def relay(num: int, sessions: dict[int, tuple[str, Addr]], mesh: MeshTable) -> ClusterRouter:
    r = ClusterRouter(MEDIA)
    kid = {"c1": 1, "c2": 2}
    r.update_peers([(uid, 100 + uid, key(uid), kid[ch]) for uid, (ch, _a) in sessions.items()], [])
    r.table = RouteTable.build([(100 + uid, uid, ch, a) for uid, (ch, a) in sessions.items()])
    r.local = local_fanout(r.table, kid)
    r.mesh = mesh
    return r


class Mesh:
    """Relay A (mesh number 1) with users 1 and 2; relay B (2) with 3, 4 and 5."""

    def __init__(self) -> None:
        self.a = relay(
            1,
            {1: ("c1", A1), 2: ("c2", A2)},
            MeshTable(
                1,
                KEY,
                {1: (RELAY_B,), 2: (RELAY_B,)},
                {3: RELAY_B, 4: RELAY_B, 5: RELAY_B},
                frozenset({2}),
            ),
        )
        self.b = relay(
            2,
            {3: ("c1", B3), 4: ("c1", B4), 5: ("c2", B5)},
            MeshTable(
                2, KEY, {1: (RELAY_A,), 2: (RELAY_A,)}, {1: RELAY_A, 2: RELAY_A}, frozenset({1})
            ),
        )
        self.sealers = {}
        for uid, kid in ((1, 1), (2, 2), (3, 1), (4, 1), (5, 2)):
            s = Sealer(uid, key(uid), 10_000)
            s.set_media_key(kid, MEDIA[kid])
            self.sealers[uid] = s


def route(r: ClusterRouter, data: bytes, addr: Addr) -> tuple[tuple[Addr, ...], bytes]:
    buf = bytearray(data) + bytearray(2000 - len(data))
    dests = r.route(buf, len(data), addr)
    return dests, bytes(buf[: r.out_n]) if dests else b""


def test_voice_goes_once_to_the_other_relay_and_out_to_its_channel_there_only() -> None:
    m = Mesh()
    sent = m.sealers[1].voice(1, 2, b"hello")
    dests, _out = route(m.a, sent, A1)
    assert dests == ()  # nobody else in c1 on relay A
    assert m.a.mesh_dests == (RELAY_B,)
    wrapped = m.a.mesh_data
    assert MeshDatagram.open(wrapped, KEY).inner == sent[:-TAG_SIZE]  # forwarded unchanged
    dests, out = route(m.b, wrapped, RELAY_A)
    assert sorted(dests) == [B3, B4]  # c1's members on B; 5 (c2) hears nothing
    assert m.b.mesh_dests == ()  # from the mesh: fanned out locally only (no loops)
    o = Opener()
    o.add_media_key(1, MEDIA[1])
    assert o.open(out) == Opened(1, 1, 2, b"hello")  # sealed on A, opens on B
    assert m.b.mesh_counters.mesh_in == 1 and m.a.mesh_counters.mesh_out == 1


def test_local_listeners_and_the_mesh_both_get_a_speakers_voice() -> None:
    m = Mesh()
    sent = m.sealers[3].voice(1, 2, b"hi")
    dests, _ = route(m.b, sent, B3)
    assert dests == (B4,) and m.b.mesh_dests == (RELAY_A,)
    dests, _ = route(m.a, m.b.mesh_data, RELAY_B)
    assert dests == (A1,)


def test_a_whisper_to_a_user_on_another_relay_goes_to_that_relay_and_that_user() -> None:
    m = Mesh()
    sent = m.sealers[1].voice(1, 2, b"psst", target=5)  # 5 is in c2 on relay B
    dests, _ = route(m.a, sent, A1)
    assert dests == () and m.a.mesh_dests == (RELAY_B,)
    dests, out = route(m.b, m.a.mesh_data, RELAY_A)
    assert dests == (B5,)
    o = Opener()
    o.add_media_key(2, MEDIA[2])  # resealed on B under the listener's channel key
    assert o.open(out) == Opened(1, 1, 2, b"psst")
    assert m.b.mesh_counters.resealed == 1


def test_a_relay_without_listeners_in_a_channel_gets_nothing() -> None:
    m = Mesh()
    m.a.mesh = MeshTable(1, KEY, {2: (RELAY_B,)}, {}, frozenset({2}))
    route(m.a, m.sealers[1].voice(1, 2, b"x"), A1)
    assert m.a.mesh_dests == ()


def test_forged_replayed_and_unknown_mesh_datagrams_are_dropped_by_reason() -> None:
    m = Mesh()
    route(m.a, m.sealers[1].voice(1, 2, b"x"), A1)
    good = m.a.mesh_data
    inner = MeshDatagram.open(good, KEY).inner
    c = m.b.mesh_counters
    assert route(m.b, MeshDatagram(1, 99, inner).seal(mesh_key(b"x" * 16)), RELAY_A)[0] == ()
    assert c.drop_mesh_bad_auth == 1
    assert route(m.b, good[:-TAG_SIZE] + bytes(TAG_SIZE), RELAY_A)[0] == ()
    assert c.drop_mesh_bad_auth == 2
    assert route(m.b, good, RELAY_A)[0]
    assert route(m.b, good, RELAY_A)[0] == ()
    assert c.drop_mesh_replayed == 1
    assert route(m.b, MeshDatagram(7, 1, inner).seal(KEY), RELAY_A)[0] == ()
    assert c.drop_mesh_unknown_relay == 1
    assert route(m.b, good[:20], RELAY_A)[0] == ()
    assert c.drop_mesh_bad_length == 1
    ping = m.sealers[1].ping(5)[:-TAG_SIZE]
    assert route(m.b, MeshDatagram(1, 10**6, ping).seal(KEY), RELAY_A)[0] == ()
    assert c.drop_mesh_bad_inner == 1
    assert c.mesh_in == 1 and c.forwarded == 2


def test_no_registration_yet_sends_nothing_to_the_mesh() -> None:
    m = Mesh()
    m.a.mesh = MeshTable()
    route(m.a, m.sealers[1].voice(1, 2, b"x"), A1)
    assert m.a.mesh_dests == ()


@given(st.binary(max_size=1500))
def test_any_datagram_from_anywhere_is_routed_or_dropped(data: bytes) -> None:
    m = Mesh()
    for first in (data, bytes([0xC7]) + data):
        dests, _ = route(m.b, first, RELAY_A)
        assert dests == () and m.b.mesh_dests == ()
