"""Capture stage: source -> ring of 960-sample frames, each stamped with its capture time.

A file or generated source is paced by an absolute 20 ms schedule (or, with
``realtime=False``, as fast as the ring takes frames, for tests); a sound
device paces itself through its callback.
"""

from __future__ import annotations

import os
import time

import numpy as np

from pipeline.ipc import events as ev
from pipeline.ipc.bus import BusAddress, BusClient
from pipeline.ipc.child_process import StopFlag, child_setup, poll_quit
from pipeline.ipc.ring import Ring, RingHandle
from pipeline.media.frame_clock import FrameClock
from pipeline.media.sound_device import InputDevice
from pipeline.media.sources import MediaSpec, open_source
from pipeline.stages.stats import StageStats, Tracer


def run(
    bus: BusAddress,
    out: RingHandle,
    source: MediaSpec,
    realtime: bool = True,
    trace_dir: str | None = None,
) -> None:
    stop = child_setup("capture")
    client = BusClient(bus, topics=("cmd.quit",))
    ring = Ring.attach(out)
    stats = StageStats("capture", client)
    tracer = Tracer(os.path.join(trace_dir, "capture.npy") if trace_dir else None, 3)
    try:
        if source.is_device:
            _device_loop(source, ring, client, stats, stop)
        else:
            _paced_loop(source, ring, client, stats, stop, realtime, tracer)
    finally:
        tracer.save()
        ring.close()
        client.close()


def _paced_loop(
    spec: MediaSpec,
    ring: Ring,
    client: BusClient,
    stats: StageStats,
    stop: StopFlag,
    realtime: bool,
    tracer: Tracer,
) -> None:
    source = open_source(spec, loop=True)
    seq = 0
    level = 0.0
    clock = FrameClock()
    while not stop.check_parent():
        frame = source.read()
        if frame is None:
            break
        now = time.monotonic_ns()
        seq += 1
        if ring.write(frame, seq=seq, timestamp=now):
            stats.count("frames")
        else:
            stats.count("dropped")
        tracer.add(seq, now, time.monotonic_ns())
        level = max(level * 0.8, float(np.sqrt(np.mean(frame * frame))))
        mono = time.monotonic()
        if stats.due(mono):
            poll_quit(client, stop)
            stats.publish(mono, {"ring_fill": ring.fill(), "resyncs": clock.resyncs})
            client.publish(ev.InputLevel(level))
        if realtime:
            clock.wait(stop.wait)
        elif ring.fill() >= ring.capacity - 1:
            stop.wait(0.002)  # as fast as possible, but never faster than the reader


def _device_loop(
    spec: MediaSpec, ring: Ring, client: BusClient, stats: StageStats, stop: StopFlag
) -> None:
    device = InputDevice(spec, ring)
    device.start()
    try:
        while not stop.check_parent():
            stop.wait(0.25)
            poll_quit(client, stop)
            stats.publish(
                time.monotonic(),
                {
                    "frames": device.seq,
                    "dropped": device.dropped,
                    "overflows": device.overflows,
                    "ring_fill": ring.fill(),
                    "device_latency_ms": device.latency * 1000,
                },
            )
    finally:
        device.close()
