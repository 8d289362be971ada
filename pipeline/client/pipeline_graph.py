"""The client's pipeline, declared in one place: its rings and the stages between them.

::

    source ─▶ capture ─captured─▶ encode ─encoded─▶ network ◀──UDP──▶ relay
                                                      │ received (packets tagged by speaker)
    sink ◀─ playback ◀─mixed── decode (jitter buffers, Opus decoders, mixer) ◀┘
    control (TCP session to the relay): on the bus only

The supervisor (pipeline/client/supervisor.py) creates every ring of RINGS and
starts every stage of STAGES in their order, handing each stage process the
config its ``configure`` builds from the ClientConfig and its Wiring (the bus
and the rings it reads and writes).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline.client.config import ClientConfig
from pipeline.core.talk import check_mode
from pipeline.ipc import scheduling
from pipeline.media.audio_format import BLOCK_BYTES, BLOCKS_PER_FRAME, FRAME_BYTES, MAX_PACKET
from pipeline.stages import capture, control, decode, encode, network, playback
from pipeline.stages.runtime import Wiring

PACKET_SLOT = MAX_PACKET + (-MAX_PACKET % 4)  # ring slots hold whole float32 words


@dataclass(frozen=True, slots=True)
class RingSpec:
    name: str
    slots: int
    slot_bytes: int


@dataclass(frozen=True, slots=True)
class StageSpec:
    name: str
    run: Callable[[Any], None]  # the process entry point: run(config)
    configure: Callable[[Wiring, ClientConfig], Any]  # -> that stage's frozen config
    reads: str | None = None  # the ring it consumes
    writes: str | None = None  # the ring it produces into

    @property
    def on_audio_path(self) -> bool:
        """It moves frames (reads or writes a ring): it runs at the audio priority."""
        return self.reads is not None or self.writes is not None


RINGS = (
    RingSpec("captured", 16, FRAME_BYTES),  # 320 ms of raw frames
    RingSpec("encoded", 16, PACKET_SLOT),
    RingSpec("received", 128, PACKET_SLOT),  # every speaker's packets, before the jitter buffers
    # The playout queue, in blocks of a quarter frame (decode keeps it at playback_frames).
    RingSpec("mixed", 8 * BLOCKS_PER_FRAME, BLOCK_BYTES),
)

# Consumers start before their producers, so the first frames find a reader.
STAGES = (
    StageSpec(
        "control",
        control.run,
        lambda w, c: control.ControlConfig(
            w,
            host=c.host,
            port=c.port,
            name=c.name,
            channel=c.channel,
            loss_feedback=c.loss_feedback,
            password=c.password,
            pins_file=c.pins_file,
            accept_new_certificate=c.accept_new_certificate,
            fallbacks=c.fallbacks,
        ),
    ),
    StageSpec(
        "playback",
        playback.run,
        lambda w, c: playback.PlaybackConfig(w, sink=c.sink),
        reads="mixed",
    ),
    StageSpec(
        "decode",
        decode.run,
        lambda w, c: decode.DecodeConfig(
            w, target=c.playback_frames, fec=c.fec, plc=c.plc, adaptive=c.jitter == "adaptive"
        ),
        reads="received",
        writes="mixed",
    ),
    StageSpec(
        "network",
        network.run,
        lambda w, c: network.NetworkConfig(
            w,
            chaos_percent=c.loss_percent,
            whisper=c.whisper,
            seed=c.seed,
            udp_via=c.udp_via,
            clock_offset=c.clock_offset,
            voice_path=c.voice_path,
        ),
        reads="encoded",
        writes="received",
    ),
    StageSpec(
        "encode",
        encode.run,
        lambda w, c: encode.EncodeConfig(
            w,
            bitrate=c.bitrate,
            fec=c.fec,
            loss_hint=c.loss_hint,
            loss_feedback=c.loss_feedback,
            redundancy=c.redundancy,
            talk=c.talk,
            input_processing=c.input_processing,
            noise_suppression=c.noise_suppression,
            vad_threshold=c.vad_threshold,
        ),
        reads="captured",
        writes="encoded",
    ),
    StageSpec(
        "capture",
        capture.run,
        lambda w, c: capture.CaptureConfig(w, source=c.source, realtime=c.realtime_input),
        writes="captured",
    ),
)


MAX_PLAYBACK_FRAMES = next(r.slots for r in RINGS if r.name == "mixed") // BLOCKS_PER_FRAME


def check_config(cfg: ClientConfig) -> None:
    """Raise ValueError for settings the graph cannot honour."""
    if not 0 <= cfg.playback_frames <= MAX_PLAYBACK_FRAMES:
        raise ValueError(
            f"playback frames must be 0..{MAX_PLAYBACK_FRAMES} (the mixed ring's slots; "
            "0: each frame just in time), "
            f"got {cfg.playback_frames}"
        )
    if cfg.jitter not in ("adaptive", "fixed"):
        raise ValueError(f"jitter must be 'adaptive' or 'fixed', got {cfg.jitter!r}")
    check_mode(cfg.talk)  # TalkError is a ValueError
    scheduling.check(cfg.priority)


def check_graph(rings: tuple[RingSpec, ...], stages: tuple[StageSpec, ...]) -> None:
    """Raise ValueError unless every ring has exactly one writer and one reader among ``stages``
    (the rings are single-producer single-consumer) and every stage name is unique."""
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise ValueError(f"stage names repeat: {names}")
    known = {r.name for r in rings}
    for stage in stages:
        for ring in (stage.reads, stage.writes):
            if ring is not None and ring not in known:
                raise ValueError(f"stage {stage.name} names an unknown ring {ring!r}")
    for ring in known:
        writers = [s.name for s in stages if s.writes == ring]
        readers = [s.name for s in stages if s.reads == ring]
        if len(writers) != 1 or len(readers) != 1:
            raise ValueError(f"ring {ring} has writers {writers} and readers {readers}")
