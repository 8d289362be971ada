"""Playback stage: mixed frames from the ring -> sink (sound device, WAV file or null).

A file or null sink is clocked like a sound card with the device's block: one block
(5 ms, ``BLOCK_SAMPLES``) every 5 ms on an absolute schedule, silence when the ring is
empty (each empty block counted as an underflow).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from pipeline.ipc import events as ev
from pipeline.media.audio_format import BLOCK_NS, BLOCK_SAMPLES, FRAME_SAMPLES
from pipeline.media.frame_clock import FrameClock
from pipeline.media.sound_device import OutputDevice
from pipeline.media.sources import MediaSpec, open_sink
from pipeline.stages.runtime import StageRuntime, Wiring
from pipeline.stages.trace import Tracer


@dataclass(frozen=True, slots=True)
class PlaybackConfig:
    wiring: Wiring
    sink: MediaSpec


class _Player:
    """Latency bookkeeping shared by the device callback and the clocked loop."""

    def __init__(self, rt: StageRuntime, tracer: Tracer, output_latency_ns: int) -> None:
        self.rt = rt
        self.tracer = tracer
        self.output_latency_ns = output_latency_ns
        self.samples = 0  # played from the ring

    @property
    def frames(self) -> int:
        """20 ms frames played (the ring carries blocks of a quarter frame)."""
        return self.samples // FRAME_SAMPLES

    def played(
        self,
        seq: int,
        timestamp: int,
        flags: int,
        media: int,
        ear_ns: int | None,
        samples: int,
    ) -> None:
        """A block of ``samples`` starts to play; ``ear_ns`` is when it reaches the ear
        (monotonic ns), by the device's own timing; without it, now plus the nominal
        output latency."""
        self.samples += samples
        if timestamp:
            now = ear_ns if ear_ns is not None else time.monotonic_ns() + self.output_latency_ns
            self.rt.latency.add(ev.HOP_ARRIVAL_TO_EAR, now - timestamp)
            self.tracer.add(seq, now, flags, media - (1 << 64) if media >> 63 else media)


def run(cfg: PlaybackConfig) -> None:
    with StageRuntime("playback", cfg.wiring, (ev.HOP_ARRIVAL_TO_EAR,)) as rt:
        player = _Player(rt, rt.tracer("playback.npy", 4), 0)
        if cfg.sink.is_device:
            _device_loop(rt, cfg.sink, player)
        else:
            _clocked_loop(rt, cfg.sink, player)


def _device_loop(rt: StageRuntime, spec: MediaSpec, player: _Player) -> None:
    device = OutputDevice(spec, rt.inp, player.played, rt.tracer("speaker.npy", 4))
    rt.on_close(device.close)
    player.output_latency_ns = int(device.latency * 1e9)
    device.start()
    rt.serve_device(
        device, lambda: ev.PlaybackStats(underflows=device.underflows, frames=player.frames)
    )


def _clocked_loop(rt: StageRuntime, spec: MediaSpec, player: _Player) -> None:
    ring = rt.inp
    silence = np.zeros(BLOCK_SAMPLES, dtype=np.float32)
    started = False
    dry = False  # the last tick found the ring empty
    underflows = 0
    clock = FrameClock(BLOCK_NS)
    sink = open_sink(spec, append=rt.wiring.restarted)  # a restart keeps what was recorded
    rt.on_close(sink.close)
    while rt.running:
        slot = ring.read(timeout=0)
        if slot is None:
            if started:  # every empty block (the device counts a run once)
                underflows += 1
                if not dry:  # once a run, as the sound device counts it
                    ring.note_starved()
            dry = True
            sink.write(silence)
        else:
            dry = False
            started = True
            samples = slot.samples()
            sink.write(samples)
            player.played(slot.seq, slot.timestamp, slot.flags, slot.media, None, len(samples))
            ring.release()
        ring.set_due(clock.following_ns)
        mono = time.monotonic()
        if rt.report_due(mono):
            rt.poll()
            rt.report(
                mono,
                ev.PlaybackStats(underflows=underflows, frames=player.frames),
            )
        clock.wait(rt.stop.wait)
