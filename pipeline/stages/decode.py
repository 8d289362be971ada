"""Decode stage: received packets -> jitter buffers and decoders -> one mixed frame -> playback.

Paced by the playback ring, i.e. by the sound card's clock, never by a
free-running timer that would drift against the card. The ring carries blocks of a
quarter frame (``BLOCK_SAMPLES``, the sound device's own block), so a packet must be
here only just before the block its audio starts in. By default each block is
made just in time: the sink says in the ring when it next wants one
(``Ring.set_due``) and :class:`~pipeline.core.pacer.Pacer` says when to make it,
as late as this machine's measured scheduling allows, so a block waits a few ms
for the sink instead of a whole frame or two. With ``target`` > 0 the stage
keeps that many frames queued instead (``--playback-frames``): after topping the
ring up it sleeps most of a block's time, then looks at the fill every FILL_CHECK.
Each block is mixed straight into its playback ring slot (``Ring.claim``/
``publish``): no copy between mixer and ring. Between looks the stage sleeps on
the receive ring's wake-up, so packets go into the jitter buffers as they come.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from pipeline.core.audio_test import (
    LOOPBACK,
    LOOPBACK_SPEAKER,
    STOP,
    TONE,
    AudioTestError,
    TestClock,
    TestTone,
    check_kind,
)
from pipeline.core.pacer import WAIT_STALLED_NS, Pacer
from pipeline.core.speakers import Speakers
from pipeline.ipc import events as ev
from pipeline.media.audio_format import BLOCK_NS, BLOCK_SAMPLES, BLOCKS_PER_FRAME
from pipeline.stages.runtime import StageRuntime, Wiring

FILL_CHECK = 0.002  # seconds between looks at the playback ring once the sink is due
QUIET_AFTER_TOP_UP = 0.004  # seconds the sink surely needs to take a block (of 5 ms)
PACE_STALLED_LOOK = WAIT_STALLED_NS  # a paced stage's look at a sink taking no frames
IDLE_LOOK_NS = 20_000_000  # with nothing to play: a packet wakes the stage at once anyway


@dataclass(frozen=True, slots=True)
class DecodeConfig:
    wiring: Wiring
    target: int = 0  # frames kept queued for the sink; 0: each made just in time (Pacer)
    fec: bool = True
    plc: bool = True
    adaptive: bool = True  # adaptive playout (see pipeline/core/jitter.py) or a fixed watermark


def run(cfg: DecodeConfig) -> None:
    hops = (ev.HOP_RECEIVE_TO_DECODE, ev.HOP_DECODE, ev.HOP_JITTER_WAIT)
    with StageRuntime("decode", cfg.wiring, hops) as rt:
        src, dst, lat = rt.inp, rt.out, rt.latency
        speakers = Speakers(fec=cfg.fec, plc=cfg.plc, adaptive=cfg.adaptive, block=BLOCK_SAMPLES)
        push_trace = rt.tracer("push.npy", 2)
        tracer = rt.tracer("decode.npy", 4)
        # Every block mixed: start, flags, the pacer's lead, when it was planned, end.
        mix_trace = rt.tracer("mix.npy", 5)
        deafened = False

        def deafen(cmd: ev.DeafenCmd) -> None:
            nonlocal deafened
            deafened = cmd.deafened

        rt.on(ev.DeafenCmd, deafen)

        def gain(cmd: ev.GainCmd) -> None:
            speakers.set_gain(cmd.user_id, cmd.gain)  # refused past MAX_GAINS: stats show it

        rt.on(ev.GainCmd, gain)
        tone = TestTone()  # the settings' audio test (pipeline/core/audio_test.py)
        loopback = TestClock()  # while it runs, the looped-back microphone is heard deafened

        def audio_test(cmd: ev.AudioTestCmd) -> None:
            try:
                check_kind(cmd.kind)
            except AudioTestError as exc:  # the encode stage ignores it too
                rt.publish(ev.Notice(f"audio test not run: {exc}"))
            if cmd.kind == TONE:
                tone.start(cmd.seconds)
            elif cmd.kind == LOOPBACK:
                loopback.start(time.monotonic(), cmd.seconds + 1.0)  # + what is still queued
            elif cmd.kind == STOP:
                tone.stop()
                loopback.stop()

        rt.on(ev.AudioTestCmd, audio_test)
        pacer = Pacer(BLOCK_NS) if cfg.target == 0 else None  # 0: each block just in time
        queue = cfg.target * BLOCKS_PER_FRAME  # blocks
        next_look = 0.0  # monotonic time of the next look at the playback ring
        last_look = 0  # monotonic ns of the last look that made nothing
        speaking: list[int] = []  # as last published

        def render_one(planned: int = 0) -> None:
            """Mix the next block into the ring; ``planned``: when the pacer planned it
            (traced; 0 for a queue)."""
            frame = dst.claim()
            if frame is None:  # not with a target the graph allows (check_config)
                return
            t0 = time.monotonic_ns()
            keep = LOOPBACK_SPEAKER if loopback.active(t0 / 1e9) else None
            _, info = speakers.render(t0, deafened, out=frame, keep=keep)
            tone.add_to(frame)  # heard deafened too: the user asked for it
            t1 = time.monotonic_ns()
            dst.publish(
                frame.nbytes,
                seq=info.seq,
                timestamp=info.timestamp,
                speaker=info.speaker,
                flags=info.flags,
                media=info.media,
            )
            lat.add(ev.HOP_DECODE, t1 - t0)
            for waited in info.waited_ns:
                lat.add(ev.HOP_JITTER_WAIT, waited)
            if info.timestamp:
                tracer.add(info.seq, t0, t1, info.ahead_ns)
            mix_trace.add(t0, info.flags, pacer.lead_ns if pacer else 0, planned, t1)

        started = False  # the first block is made when there is something to play

        def idle() -> bool:
            """Nothing to play yet: no block is made, and the sink plays silence of its own
            (counting no underflow before its first block). A stage just started shares
            the CPU with five more starting, and woke 9-13 ms late for its first blocks."""
            nonlocal started
            started = started or speakers.heard or tone.playing
            return not started

        while rt.running:
            slot = src.read(timeout=max(0.0005, next_look - time.monotonic()))
            while slot is not None:
                now = time.monotonic_ns()
                lat.add(ev.HOP_RECEIVE_TO_DECODE, now - slot.timestamp)
                speakers.receive(slot.speaker, slot.seq, slot.media, bytes(slot.data), now)
                push_trace.add(slot.seq, now)
                src.release()
                slot = src.read(timeout=0)
            topped_up = False
            if pacer is None:  # a queue of cfg.target frames
                while dst.fill() < queue and not idle():
                    render_one()
                    topped_up = True
                mono = time.monotonic()
                if topped_up:
                    next_look = mono + QUIET_AFTER_TOP_UP
                elif mono >= next_look:
                    next_look = mono + FILL_CHECK
            else:  # each frame just in time
                now = time.monotonic_ns()
                pacer.sink_starved(dst.starved, now)
                due, pending, taken = dst.due_and_pending()
                at = pacer.render_at(now, pending, due, taken)
                if at is not None and at <= now and idle():
                    at = now + IDLE_LOOK_NS  # look again then, or at a packet
                    last_look = now
                elif at is not None and at <= now:
                    planned = max(at, last_look)
                    render_one(planned)
                    topped_up = True
                    now = time.monotonic_ns()
                    pacer.rendered(planned, now)
                    due, pending, taken = dst.due_and_pending()
                    at = pacer.render_at(now, pending, due, taken)
                else:
                    last_look = now
                wait_ns = PACE_STALLED_LOOK if at is None else at - now
                mono = time.monotonic()
                next_look = mono + max(0, wait_ns) / 1e9
            if topped_up:  # who is audible changed: tell the UI now, not at the next report
                heard = speakers.speaking(time.monotonic_ns())
                if heard != speaking:
                    speaking = heard
                    rt.publish(ev.Activity(heard))
            rt.poll()
            if rt.report_due(mono):
                per_speaker = speakers.stats()
                worst = max(per_speaker, key=lambda s: s.loss_percent, default=None)
                rt.report(
                    mono,
                    ev.DecodeStats(
                        speakers=per_speaker,
                        loss_percent=worst.loss_percent if worst else 0.0,
                        burst_mean=worst.burst_mean if worst else 0.0,
                        retired=speakers.retired,
                        refused_speakers=speakers.refused,
                        bad_bodies=speakers.bad_bodies,
                        deafened=deafened,
                        playback_fill=dst.fill(),
                        lead_ms=pacer.stats.lead_ms if pacer else 0.0,
                        worst_late_ms=pacer.stats.worst_late_ms if pacer else 0.0,
                        test_tone=tone.playing,
                        gains=[ev.SpeakerGain(u, g) for u, g in sorted(speakers.gains.items())],
                    ),
                )
                # With every report, not only on a change: a subscriber that joined late
                # or lost a message catches up within half a second.
                speaking = speakers.speaking(time.monotonic_ns())
                rt.publish(ev.Activity(speaking))
