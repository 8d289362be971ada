"""Playback stage: mixed frames from the ring -> sink (sound device, WAV file or null).

A file or null sink is clocked like a sound card: one frame every 20 ms on an
absolute schedule, silence when the ring is empty (counted as an underflow).
"""

from __future__ import annotations

import os
import time

import numpy as np

from pipeline.ipc.bus import BusAddress, BusClient
from pipeline.ipc.child_process import StopFlag, child_setup, poll_quit
from pipeline.ipc.ring import Ring, RingHandle
from pipeline.media.audio_format import FRAME_SAMPLES
from pipeline.media.frame_clock import FrameClock
from pipeline.media.sound_device import OutputDevice
from pipeline.media.sources import MediaSpec, open_sink
from pipeline.stages.stats import StageStats, Tracer


class _Player:
    """Latency bookkeeping shared by the device callback and the clocked loop."""

    def __init__(self, stats: StageStats, tracer: Tracer, output_latency_ns: int) -> None:
        self.stats = stats
        self.tracer = tracer
        self.output_latency_ns = output_latency_ns
        self.frames = 0

    def played(self, seq: int, timestamp: int, flags: int) -> None:
        self.frames += 1
        if timestamp:
            now = time.monotonic_ns() + self.output_latency_ns
            self.stats.window("mouth_to_ear").add(now - timestamp)
            self.tracer.add(seq, now, flags)


def run(bus: BusAddress, inp: RingHandle, sink: MediaSpec, trace_dir: str | None = None) -> None:
    stop = child_setup("playback")
    client = BusClient(bus, topics=("cmd.quit",))
    ring = Ring.attach(inp)
    stats = StageStats("playback", client)
    tracer = Tracer(os.path.join(trace_dir, "playback.npy") if trace_dir else None, 3)
    try:
        if sink.is_device:
            player = _Player(stats, tracer, 0)
            device = OutputDevice(sink, ring, player.played)
            player.output_latency_ns = int(device.latency * 1e9)
            device.start()
            try:
                while not stop.check_parent():
                    stop.wait(0.25)
                    poll_quit(client, stop)
                    stats.publish(
                        time.monotonic(),
                        {
                            "underflows": device.underflows,
                            "frames": player.frames,
                            "ring_fill": ring.fill(),
                        },
                    )
            finally:
                device.close()
        else:
            _clocked_loop(sink, ring, client, _Player(stats, tracer, 0), stop)
    finally:
        tracer.save()
        ring.close()
        client.close()


def _clocked_loop(
    spec: MediaSpec, ring: Ring, client: BusClient, player: _Player, stop: StopFlag
) -> None:
    silence = np.zeros(FRAME_SAMPLES, dtype=np.float32)
    started = False
    underflows = 0
    clock = FrameClock()
    sink = open_sink(spec)
    try:
        while not stop.check_parent():
            slot = ring.read(timeout=0)
            if slot is None:
                if started:
                    underflows += 1
                sink.write(silence)
            else:
                started = True
                sink.write(slot.samples())
                player.played(slot.seq, slot.timestamp, slot.flags)
                ring.release()
            mono = time.monotonic()
            if player.stats.due(mono):
                poll_quit(client, stop)
                player.stats.publish(
                    mono,
                    {"underflows": underflows, "frames": player.frames, "ring_fill": ring.fill()},
                )
            clock.wait(stop.wait)
    finally:
        sink.close()
