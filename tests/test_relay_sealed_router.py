"""relay/sealed_router.py: protocol 2's per-datagram decision, in memory, no sockets."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from relay.protocol.sealed_datagram import TAG_SIZE
from relay.protocol.voice_crypto import Opened, Opener, Sealer, direction_keys, tag
from relay.router import Addr, RouteTable
from relay.sealed_router import SealedRouter

MEDIA = {1: bytes(16), 2: bytes(range(16))}
A, B, C = ("10.0.0.1", 1), ("10.0.0.2", 2), ("10.0.0.3", 3)
EVE = ("10.6.6.6", 6)


def key(uid: int) -> bytes:
    return bytes([uid]) * 32


class World:
    """Three sessions: 1 and 2 in channel 1 (key 1), 3 in channel 2 (key 2)."""

    def __init__(self, echo: bool = False) -> None:
        self.binds: list[tuple[int, tuple[str, int], bytes]] = []
        self.router = SealedRouter(
            MEDIA, echo=echo, on_bind=lambda t, a, p: self.binds.append((t, a, p))
        )
        self.where = {1: ("c1", A), 2: ("c1", B), 3: ("c2", C)}
        self.install()
        self.router.update_peers(
            [(1, 101, key(1), 1), (2, 102, key(2), 1), (3, 103, key(3), 2)], []
        )
        self.sealers = {}
        for uid, (channel, _addr) in self.where.items():
            s = Sealer(uid, key(uid), 10_000)
            s.set_media_key(1 if channel == "c1" else 2, MEDIA[1 if channel == "c1" else 2])
            self.sealers[uid] = s

    def install(self, silenced: frozenset[int] = frozenset()) -> None:
        entries = [(100 + uid, uid, ch, addr) for uid, (ch, addr) in self.where.items()]
        self.router.table = RouteTable.build(entries, silenced=silenced)

    def route(self, data: bytes, addr: Addr) -> tuple[tuple[Addr, ...], bytes]:
        buf = bytearray(data) + bytearray(2000 - len(data))
        dests = self.router.route(buf, len(data), addr)
        return dests, bytes(buf[: self.router.out_n]) if dests else b""


def test_voice_is_authenticated_forwarded_without_the_tag_and_opens() -> None:
    w = World()
    sent = w.sealers[1].voice(1, 2, b"hello")
    dests, out = w.route(sent, A)
    assert dests == (B,) and out == sent[:-TAG_SIZE]
    o = Opener()
    o.add_media_key(1, MEDIA[1])
    assert o.open(out) == Opened(1, 1, 2, b"hello")
    assert w.router.sealed.voice_in == 1 and w.router.sealed.forwarded == 1


def test_a_ping_is_answered_with_the_down_key() -> None:
    w = World()
    ping = w.sealers[2].ping(5)
    dests, out = w.route(ping, B)
    assert dests == (B,)
    _up, down = direction_keys(key(2))
    assert out[-TAG_SIZE:] == tag(down, ping[:-TAG_SIZE])
    assert not isinstance(w.sealers[2].ping_answer(out), str)


def test_replays_from_the_same_or_another_address_are_dropped() -> None:
    w = World()
    sent = w.sealers[1].voice(1, 2, b"hello")
    assert w.route(sent, A)[0]
    assert w.route(sent, A)[0] == ()
    assert w.route(sent, EVE)[0] == ()
    c = w.router.sealed
    assert c.drop_replayed == 2 and c.forwarded == 1


def test_a_flipped_bit_anywhere_is_dropped() -> None:
    w = World()
    sent = w.sealers[1].voice(1, 2, b"hello")
    for i in range(len(sent)):
        bad = bytearray(sent)
        bad[i] ^= 0x01
        assert w.route(bytes(bad), A)[0] == ()
    c = w.router.sealed
    assert c.forwarded == 0 and c.drop_bad_auth + c.drop_version + c.drop_unknown_token == len(sent)
    assert w.route(sent, A)[0] == (B,)  # the genuine one still passes: nothing was spent


def test_a_captured_ping_sent_from_another_address_moves_nothing() -> None:
    w = World()
    ping = w.sealers[1].ping(5)
    assert w.route(ping, A)[0] == (A,)
    assert w.route(ping, EVE)[0] == ()
    assert w.binds == [] and w.router.sealed.drop_replayed == 1
    # A fresh ping from a new address (a NAT rebinding) is the owner's: it goes to bind.
    assert w.route(w.sealers[1].ping(6), EVE)[0] == ()
    assert [(t, a) for t, a, _p in w.binds] == [(101, EVE)]


def test_voice_and_pings_count_apart_and_each_kind_refuses_its_replays() -> None:
    w = World()
    s = w.sealers[1]
    voice, ping = s.voice(1, 2, b"hello"), s.ping(5)
    assert voice[7:15] == ping[7:15]  # the same counter, in two kinds: both fresh
    assert w.route(ping, A)[0] == (A,) and w.route(voice, A)[0] == (B,)
    assert w.route(ping, A)[0] == () and w.route(voice, A)[0] == ()  # each a replay now
    for _ in range(5):  # pings between frames leave no hole in the voice window
        assert w.route(s.ping(6), A)[0] == (A,)
        assert w.route(s.voice(2, 3, b"on"), A)[0] == (B,)
    c = w.router.sealed
    assert c.drop_replayed == 2 and c.forwarded == 6
    assert w.router.window_totals() == {
        "good": 12, "late": 0, "lost": 0, "replayed": 2, "too_old": 0
    }  # fmt: skip


def test_forged_sessions_and_versions_are_counted() -> None:
    w = World()
    forged = Sealer(1, bytes(32), 10**9)  # sid 1 without its key
    forged.set_media_key(1, MEDIA[1])
    assert w.route(forged.voice(1, 1, b"x"), A)[0] == ()
    unknown = Sealer(99, bytes(32), 0)
    unknown.set_media_key(1, MEDIA[1])
    assert w.route(unknown.voice(1, 1, b"x"), A)[0] == ()
    assert w.route(b"\x01" + bytes(60), A)[0] == ()
    c = w.router.sealed
    assert (c.drop_bad_auth, c.drop_unknown_token, c.drop_version) == (1, 1, 1)


def test_a_whisper_to_another_channel_is_sealed_again_for_it() -> None:
    w = World()
    sent = w.sealers[1].voice(1, 2, b"psst", target=3)
    dests, out = w.route(sent, A)
    assert dests == (C,) and out[2] == 2
    o = Opener()
    o.add_media_key(2, MEDIA[2])
    assert o.open(out) == Opened(1, 1, 2, b"psst")
    assert w.router.sealed.resealed == 1
    same = w.sealers[1].voice(2, 2, b"psst", target=2)  # same channel: forwarded as is
    assert w.route(same, A) == ((B,), same[:-TAG_SIZE])
    assert w.route(w.sealers[1].voice(3, 2, b"me", target=1), A)[0] == ()  # to oneself


def test_a_silenced_sender_is_authenticated_answered_and_forwarded_to_no_one() -> None:
    w = World()
    w.install(silenced=frozenset({101}))
    assert w.route(w.sealers[1].voice(1, 2, b"hello"), A)[0] == ()
    assert w.route(w.sealers[1].voice(2, 2, b"psst", target=3), A)[0] == ()
    assert w.router.sealed.drop_server_muted == 2 and w.router.sealed.forwarded == 0
    assert w.route(w.sealers[1].ping(3), A)[0] == (A,)  # its path stays up
    assert w.route(w.sealers[2].voice(1, 2, b"hi"), B)[0] == (A,)  # and it hears
    w.install()
    assert w.route(w.sealers[1].voice(4, 2, b"again"), A)[0] == (B,)


def test_echo_mode_sends_voice_back_to_its_sender() -> None:
    w = World(echo=True)
    sent = w.sealers[2].voice(1, 2, b"me")
    assert w.route(sent, B) == ((B,), sent[:-TAG_SIZE])


def test_windows_survive_peer_updates_and_are_summed_when_gone() -> None:
    w = World()
    sent = w.sealers[1].voice(1, 2, b"x")
    w.route(sent, A)
    w.router.update_peers([(1, 101, key(1), 2)], [])  # moved channel: same window
    assert w.route(sent, A)[0] == ()
    w.router.update_peers([], [1])
    totals = w.router.window_totals()
    assert totals["good"] == 1 and totals["replayed"] == 1


@given(st.binary(max_size=1400))
def test_fuzz_any_datagram_is_dropped_and_counted(data: bytes) -> None:
    w = World()
    assert w.route(data, A)[0] == ()
    c = w.router.sealed.as_dict()
    assert sum(v for k, v in c.items() if k.startswith("drop_") or k == "keepalive") == 1


def test_a_key_id_given_again_to_a_new_key_is_used_with_the_new_key() -> None:
    # Channel keys rotate and ids wrap around: the router's cipher for an id follows the key.
    media = dict(MEDIA)
    router = SealedRouter(media)
    router.table = RouteTable.build([(101, 1, "c1", A), (103, 3, "c2", C)])
    router.update_peers([(1, 101, key(1), 1), (3, 103, key(3), 2)], [])
    sender = Sealer(1, key(1), 10_000)
    sender.set_media_key(1, media[1])
    listener = Opener()
    listener.add_media_key(2, media[2])
    for round_ in range(2):
        buf = bytearray(sender.voice(round_, 0, b"psst", target=3)) + bytearray(2000)
        n = len(buf) - 2000
        assert router.route(buf, n, A) == (C,)
        got = listener.open(bytes(buf[: router.out_n]))
        assert isinstance(got, Opened) and got.opus == b"psst"
        media[2] = bytes([9]) * 16  # channel c2's key rotated; its id was given again
        listener = Opener()
        listener.add_media_key(2, media[2])
    assert router.sealed.resealed == 2
