"""pipeline/stages/decode.py: a real decode process fed packets with hostile headers.

A peer chooses every field of its datagrams; the relay passes them on. Whatever it
chooses, the decode stage keeps making mixed frames for the sink and keeps reporting.
"""

from __future__ import annotations

import multiprocessing
import random
import time
from collections import Counter

from pipeline.ipc import events as ev
from pipeline.ipc.bus import Broker, BusClient
from pipeline.ipc.ring import Ring
from pipeline.media import synthetic
from pipeline.media.audio_format import BLOCK_BYTES, BLOCK_NS, BLOCKS_PER_FRAME
from pipeline.media.frame_clock import FrameClock
from pipeline.media.opus import OpusEncoder
from pipeline.stages import decode
from pipeline.stages.runtime import Wiring
from relay.protocol.voice_body import plain

U64 = (1 << 64) - 1


def test_hostile_packets_never_stop_the_frames_or_the_stats() -> None:
    enc = OpusEncoder(48000)
    opus = [plain(enc.encode(f)) for f in synthetic.frames(synthetic.tone(1.0, 440))]
    rng = random.Random(18)
    edges = [0, 1, U64, U64 - 1, 1 << 63, 1 << 62]
    ctx = multiprocessing.get_context("spawn")
    with (
        Broker() as broker,
        Ring.create(128, 1276) as received,
        Ring.create(32, BLOCK_BYTES) as mixed,
        BusClient(broker.address, (ev.DecodeStats.TOPIC,)) as bus,
    ):
        cfg = decode.DecodeConfig(Wiring(broker.address, received.handle, mixed.handle))
        proc = ctx.Process(target=decode.run, args=(cfg,), daemon=True)
        proc.start()
        try:
            # The 4 s start once the stage is up (its first report): spawning it under the
            # test suite's load took over 2 s of them, and the frame count with them.
            up = time.monotonic() + 30
            while time.monotonic() < up and not any(
                isinstance(e, ev.DecodeStats) for e in bus.poll(0.1)
            ):
                pass
            blocks = 0
            clock = FrameClock(BLOCK_NS)  # the sink, clocked, saying when it wants each block
            end = time.monotonic() + 4.0
            while time.monotonic() < end:
                for _ in range(2):  # 400 packets a second: many speakers, any header
                    payload = rng.choice(opus) if rng.random() < 0.7 else rng.randbytes(40)
                    received.write(
                        payload,
                        seq=rng.choice(edges) if rng.random() < 0.5 else rng.getrandbits(64),
                        timestamp=time.monotonic_ns(),
                        speaker=rng.randrange(1, 100),
                        media=rng.choice(edges) if rng.random() < 0.5 else rng.getrandbits(64),
                    )
                if mixed.read(timeout=0) is not None:  # the sink takes a block a tick
                    mixed.release()
                    blocks += 1
                mixed.set_due(clock.following_ns)
                clock.wait(time.sleep)
            reports = [e for e in bus.poll(0.6) if isinstance(e, ev.DecodeStats)]
            assert proc.is_alive()
            assert blocks > 400, blocks  # about one per 5 ms tick (800), however hostile
            assert reports
            last = reports[-1]
            assert len(last.speakers) <= 64 and last.refused_speakers > 0
            assert last.bad_bodies > 0  # the random bytes that are not a voice body
            bus.publish(ev.QuitCmd("test over"))
            proc.join(10)
            assert proc.exitcode == 0
        finally:
            if proc.is_alive():
                proc.kill()
                proc.join(5)


def _paced_run(target: int, seconds: float = 3.0) -> tuple[list[int], ev.DecodeStats | None]:
    """A decode process and a sink clocked like a sound card that says in the ring when
    it wants its next block: the blocks queued at each of the sink's ticks."""
    ctx = multiprocessing.get_context("spawn")
    with (
        Broker() as broker,
        Ring.create(128, 1276) as received,
        Ring.create(32, BLOCK_BYTES) as mixed,
        BusClient(broker.address, (ev.DecodeStats.TOPIC,)) as bus,
    ):
        wiring = Wiring(broker.address, received.handle, mixed.handle)
        proc = ctx.Process(
            target=decode.run, args=(decode.DecodeConfig(wiring, target=target),), daemon=True
        )
        proc.start()
        try:
            # A speaker heard: until then the stage makes no blocks (the sink plays its own
            # silence), so the sink's ticks below measure the pacing, not the start.
            opus = plain(
                OpusEncoder(48000).encode(next(iter(synthetic.frames(synthetic.tone(0.1, 440)))))
            )
            received.write(opus, seq=1, timestamp=time.monotonic_ns(), speaker=7, media=960)
            queued: list[int] = []
            clock = FrameClock(BLOCK_NS)
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                queued.append(mixed.pending())
                if mixed.read(timeout=0) is not None:
                    mixed.release()
                mixed.set_due(clock.following_ns)
                clock.wait(time.sleep)
            reports = [e for e in bus.poll(0.6) if isinstance(e, ev.DecodeStats)]
            bus.publish(ev.QuitCmd("test over"))
            proc.join(10)
            assert proc.exitcode == 0
            return queued[100:], reports[-1] if reports else None
        finally:
            if proc.is_alive():
                proc.kill()
                proc.join(5)


def test_a_sink_that_says_when_it_wants_frames_gets_each_just_in_time() -> None:
    paced, stats = _paced_run(target=0)
    queued, _ = _paced_run(target=2)
    # Just in time: a block or two made when the sink comes for it (as many as the lead
    # needs), not the two frames (eight blocks) of a queue.
    assert Counter(paced).most_common(1)[0][0] <= 3
    assert Counter(queued).most_common(1)[0][0] == 2 * BLOCKS_PER_FRAME
    assert max(paced) <= 12  # never more than LEAD_MAX_NS of blocks ahead
    assert stats is not None and 0 < stats.lead_ms <= 60
