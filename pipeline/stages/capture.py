"""Capture stage: source -> ring of 960-sample frames, each stamped with its capture time.

A file or generated source is paced by an absolute 20 ms schedule (or, with
``realtime=False``, as fast as the ring takes frames, for tests); a sound
device paces itself through its callback. A file or generated source starts only
once the voice path is up (the network stage's first register answer), so the
first seconds of a file are heard rather than dropped while the client connects.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from pipeline.ipc import events as ev
from pipeline.media.frame_clock import FrameClock
from pipeline.media.sound_device import InputDevice
from pipeline.media.sources import MediaSpec, open_source
from pipeline.stages.runtime import StageRuntime, Wiring

VOICE_WAIT = 0.25  # seconds between looks at the stop flag while waiting for the voice path


@dataclass(frozen=True, slots=True)
class CaptureConfig:
    wiring: Wiring
    source: MediaSpec
    realtime: bool = True  # pace a file or generated source at 20 ms; False: as fast as read


def run(cfg: CaptureConfig) -> None:
    with StageRuntime("capture", cfg.wiring) as rt:
        if cfg.source.is_device:
            _device_loop(rt, cfg.source)
        else:
            _paced_loop(rt, cfg.source, cfg.realtime)


def _paced_loop(rt: StageRuntime, spec: MediaSpec, realtime: bool) -> None:
    ring = rt.out
    tracer = rt.tracer("capture.npy", 3)
    source = open_source(spec, loop=True)
    voice_up = rt.wiring.restarted  # a restarted capture stage joins a call under way

    def network(stats: ev.NetworkStats) -> None:
        nonlocal voice_up
        voice_up = voice_up or stats.registered or stats.voice_path == "tcp"

    rt.on(ev.NetworkStats, network)
    while rt.running and not voice_up:
        rt.poll(VOICE_WAIT)  # sleeps on the bus until the network stage reports
        if rt.report_due(now := time.monotonic()):  # alive, waiting: zero frames
            rt.report(now, ev.CaptureStats())
    seq = frames = 0
    clock = FrameClock()
    while rt.running:
        frame = source.read()
        if frame is None:
            break
        now = time.monotonic_ns()
        seq += 1
        if ring.write(frame, seq=seq, timestamp=now):  # a full ring counts the drop
            frames += 1
        tracer.add(seq, now, time.monotonic_ns())
        mono = time.monotonic()
        if rt.report_due(mono):
            rt.poll()
            rt.report(
                mono,
                ev.CaptureStats(
                    frames=frames,
                    resyncs=clock.resyncs,
                ),
            )
        if realtime:
            clock.wait(rt.stop.wait)
        elif ring.fill() >= ring.capacity - 1:
            rt.stop.wait(0.002)  # as fast as possible, but never faster than the reader


def _device_loop(rt: StageRuntime, spec: MediaSpec) -> None:
    device = InputDevice(spec, rt.out, rt.tracer("mic.npy", 4))
    rt.on_close(device.close)
    device.start()
    rt.serve_device(
        device,
        lambda: ev.CaptureStats(
            frames=device.seq,
            overflows=device.overflows,
            resyncs=device.resyncs,
            device_latency_ms=device.latency * 1000,
        ),
    )
