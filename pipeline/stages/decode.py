"""Decode stage: received packets -> jitter buffers and decoders -> one mixed frame -> playback.

Paced by the playback ring, i.e. by the sound card's clock: a frame is made
whenever the ring holds fewer than ``target`` frames, never by a free-running
timer that would drift against the card. Between arrivals the stage sleeps on
the receive ring's wake-up: after topping the ring up it knows the sink will not
take another frame for about one frame time, so it sleeps most of that, then
looks at the fill every FILL_CHECK until the sink has taken one.
"""

from __future__ import annotations

import os
import time

from pipeline.core.speakers import Speakers
from pipeline.ipc import events as ev
from pipeline.ipc.bus import BusAddress, BusClient
from pipeline.ipc.child_process import child_setup
from pipeline.ipc.ring import Ring, RingHandle
from pipeline.stages.stats import StageStats, Tracer

FILL_CHECK = 0.005  # seconds between looks at the playback ring once the sink is due
QUIET_AFTER_TOP_UP = 0.016  # seconds the sink surely needs to take a frame (of 20 ms)


def run(
    bus: BusAddress,
    inp: RingHandle,
    out: RingHandle,
    target: int = 2,
    trace_dir: str | None = None,
    fec: bool = True,
    plc: bool = True,
) -> None:
    stop = child_setup("decode")
    client = BusClient(bus, topics=("cmd.",))
    src, dst = Ring.attach(inp), Ring.attach(out)
    speakers = Speakers(fec=fec, plc=plc)
    stats = StageStats("decode", client)
    push_trace = Tracer(os.path.join(trace_dir, "push.npy") if trace_dir else None, 2)
    tracer = Tracer(os.path.join(trace_dir, "decode.npy") if trace_dir else None, 3)
    deafened = False
    last_speaking: list[int] = []
    next_look = 0.0  # monotonic time of the next look at the playback fill
    try:
        while not stop.check_parent():
            slot = src.read(timeout=max(0.001, next_look - time.monotonic()))
            while slot is not None:
                now = time.monotonic_ns()
                stats.window("receive_to_decode").add(now - slot.timestamp)
                speakers.push(slot.speaker, slot.seq, slot.timestamp, bytes(slot.data), now)
                push_trace.add(slot.seq, now)
                src.release()
                slot = src.read(timeout=0)
            topped_up = False
            while dst.fill() < target:
                topped_up = True
                t0 = time.monotonic_ns()
                pcm, info = speakers.render(t0, deafened)
                t1 = time.monotonic_ns()
                if not dst.write(
                    pcm,
                    seq=info.seq,
                    timestamp=info.timestamp,
                    speaker=info.speaker,
                    flags=info.flags,
                ):
                    stats.count("ring_dropped")
                    break
                stats.window("decode").add(t1 - t0)
                for waited in info.waited_ns:
                    stats.window("jitter_wait").add(waited)
                if info.timestamp:
                    stats.window("capture_to_decoded").add(t1 - info.timestamp)
                    tracer.add(info.seq, t0, t1)
            mono = time.monotonic()
            if topped_up:
                next_look = mono + QUIET_AFTER_TOP_UP
            elif mono >= next_look:
                next_look = mono + FILL_CHECK
            for event in client.poll(0):
                if isinstance(event, ev.DeafenCmd):
                    deafened = event.deafened
                elif isinstance(event, ev.QuitCmd):
                    stop.set("quit")
            mono = time.monotonic()
            if stats.due(mono):
                now = time.monotonic_ns()
                per_speaker = speakers.stats()
                losses = [s["loss_percent"] for s in per_speaker.values()]
                stats.publish(
                    mono,
                    {
                        "speakers": per_speaker,
                        "loss_percent": max(losses) if losses else 0.0,
                        "retired": speakers.retired,
                        "deafened": deafened,
                        "playback_fill": dst.fill(),
                    },
                )
                speaking = speakers.speaking(now)
                if speaking != last_speaking:
                    client.publish(ev.Activity(speaking))
                    last_speaking = speaking
    finally:
        push_trace.save()
        tracer.save()
        src.close()
        dst.close()
        client.close()
