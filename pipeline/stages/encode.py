"""Encode stage: frames from the capture ring -> voice bodies (an Opus packet and its
flags, relay/protocol/voice_body.py) into the network ring.

Numbers the packets it sends (the voice stream's sequence numbers): +1 per packet,
so a mute leaves no gap that a listener would count as loss; the media timestamp
jumps instead, and the listener's jitter buffer starts the new talk spurt afresh.

What it encodes goes through the talk mode first (pipeline/core/talk.py, after the
noise suppression and gain control of pipeline/media/input_processing.py): in
silence, with the push-to-talk key up or muted nothing is encoded or sent, and the
first packet of each talk spurt carries the voice body's marker.

It also tells the microphone's level (``InputLevel``, as it comes from the microphone,
and whether the talk mode sends it now) every few frames: the window's level meter,
on which the user sets voice activation's threshold.

Owns the encoder settings the UI may change: bitrate, mute, talk mode and threshold, and the packet
loss hint (pipeline/core/loss_hint.py: the largest of the configured hint, the
chaos setting, the loss measured on receive and the worst loss our listeners
report through the relay), which tells Opus how much in-band FEC to spend, and the
redundancy for bursts (pipeline/core/redundancy.py): while losses come in bursts, a
second encoder at a lower bitrate makes copies of each frame that the next packets
carry again.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from pipeline.core.audio_test import LOOPBACK, LOOPBACK_FLAG, STOP, TestClock
from pipeline.core.loss_hint import LossHint
from pipeline.core.redundancy import (
    REDUNDANT_BITRATE,
    REDUNDANT_COMPLEXITY,
    RedundancyPolicy,
    RedundantFrames,
    backs_for,
    fec_hint,
)
from pipeline.core.talk import TalkError, TalkGate, check_mode
from pipeline.ipc import events as ev
from pipeline.media.input_processing import InputProcessor
from pipeline.media.opus import CodecError, OpusEncoder
from pipeline.media.vad import WebRtcVad
from pipeline.stages.runtime import StageRuntime, Wiring
from relay.protocol.voice_body import MAX_PRIMARY, VoiceBody

MIN_BITRATE, MAX_BITRATE = 6000, 510000
LEVEL_FRAMES = 3  # InputLevel every 60 ms: a meter that moves with the voice
LEVEL_DECAY = 0.8  # per frame: the meter falls back about 2 dB every 20 ms


@dataclass(frozen=True, slots=True)
class EncodeConfig:
    wiring: Wiring
    bitrate: int = 48000
    fec: bool = True
    loss_hint: float = 0.0  # the loss % to expect before any is measured (a floor for FEC)
    loss_feedback: bool = True  # raise FEC for what our listeners report losing
    redundancy: bool = True  # copies of earlier frames while losses come in bursts
    talk: str = "continuous"  # the talk mode to start in (pipeline/core/talk.py)
    input_processing: bool = False  # noise suppression and gain control before encoding
    noise_suppression: bool = True  # of which the noise suppressor (cmd.noise switches it)
    vad_threshold: float = 0.0  # voice activation's level (pipeline/core/talk.py; 0: none)


class _Settings:
    """What the UI set, the decode stage measured and our listeners report; owns the
    encoder's loss hint."""

    def __init__(self, encoder: OpusEncoder, cfg: EncodeConfig, rt: StageRuntime) -> None:
        self.encoder, self.rt = encoder, rt
        self.gate: TalkGate[tuple[int, int]] = TalkGate(WebRtcVad(), check_mode(cfg.talk))
        self.gate.threshold = cfg.vad_threshold
        self.processor = (
            InputProcessor(noise_suppression=cfg.noise_suppression)
            if cfg.input_processing
            else None
        )
        self.loopback = TestClock()  # the settings' microphone test (core/audio_test.py)
        self.loopback_frames = 0
        self.bitrate = cfg.bitrate
        self.muted = False
        self.hint = LossHint(configured=cfg.loss_hint, use_listeners=cfg.loss_feedback)
        self.policy = RedundancyPolicy(fec=cfg.fec, enabled=cfg.redundancy)
        self.frames = RedundantFrames()
        self.loss_percent = int(cfg.loss_hint)  # what the encoder was last told
        self.source = ""
        self.update(time.monotonic())

    def mute(self, cmd: ev.MuteCmd) -> None:
        self.muted = cmd.muted

    def set_talk(self, cmd: ev.TalkModeCmd) -> None:
        try:
            if cmd.mode != self.gate.mode:
                self.gate.mode = cmd.mode
        except TalkError as exc:
            self.rt.publish(ev.Notice(f"talk mode not changed: {exc}"))

    def noise(self, cmd: ev.NoiseSuppressionCmd) -> None:
        if self.processor is not None:
            self.processor.noise_suppression = cmd.on

    def audio_test(self, cmd: ev.AudioTestCmd) -> None:
        """A loopback test starts (or any test stops); a tone is the decode stage's."""
        if cmd.kind == LOOPBACK:
            self.loopback.start(time.monotonic(), cmd.seconds)
        elif cmd.kind == STOP:
            self.loopback.stop()

    def push_to_talk(self, cmd: ev.PushToTalkCmd) -> None:
        self.gate.pressed = cmd.pressed

    def set_threshold(self, cmd: ev.VadThresholdCmd) -> None:
        self.gate.threshold = cmd.level

    def set_bitrate(self, cmd: ev.BitrateCmd) -> None:
        try:
            self.encoder.set_bitrate(min(max(cmd.bps, MIN_BITRATE), MAX_BITRATE))
            self.bitrate = cmd.bps
        except CodecError as exc:
            self.rt.publish(ev.Notice(f"bitrate not changed: {exc}"))

    def set_chaos(self, cmd: ev.ChaosCmd) -> None:
        self.hint.chaos = cmd.loss_percent
        self.update(time.monotonic())

    def measured_loss(self, stats: ev.DecodeStats) -> None:
        self.hint.incoming = stats.loss_percent
        self.hint.incoming_burst = stats.burst_mean
        self.update(time.monotonic())

    def listeners(self, report: ev.ListenerReport) -> None:
        now = time.monotonic()
        self.hint.listener_report(
            report.loss_percent, report.late_percent, report.listeners, now, report.burst_mean
        )
        self.update(now)

    def update(self, now: float) -> None:
        """Tell the encoder the hint at ``now``, if its whole percent changed."""
        hint, self.source = self.hint.value(now)
        hint = fec_hint(hint, self.policy.update(self.hint.figures(now), now))
        if int(hint) != self.loss_percent:
            self.encoder.set_loss_percent(int(hint))
            self.loss_percent = int(hint)

    def stats(
        self, now: float, packets: int, packet_bytes: int, muted_frames: int
    ) -> ev.EncodeStats:
        return ev.EncodeStats(
            packets=packets,
            packet_bytes=packet_bytes,
            muted_frames=muted_frames,
            bitrate=self.bitrate,
            muted=self.muted,
            loss_hint=self.loss_percent,
            hint_source=self.source,
            listener_loss=round(self.hint.listener_loss(now), 1),
            listener_late=self.hint.listener_late,
            listeners=self.hint.listeners,
            listener_burst=round(self.hint.listener_burst, 2),
            redundancy=self.policy.depth,
            redundant_bitrate=REDUNDANT_BITRATE,
            redundant_copies=self.frames.counters.copies,
            redundant_bytes=self.frames.counters.copy_bytes,
            talk_mode=self.gate.mode,
            talking=self.gate.talking,
            ptt_pressed=self.gate.pressed,
            vad_threshold=self.gate.threshold,
            unsent_frames=self.gate.counts.unsent - muted_frames - self.loopback_frames,
            spurts=self.gate.counts.spurts,
            input_processing=self.processor is not None,
            noise_suppression=self.processor is not None and self.processor.noise_suppression,
            loopback=self.loopback.active(now),
            loopback_frames=self.loopback_frames,
        )


def rms(frame: np.ndarray) -> float:
    """The RMS level of one frame (0..1), without a copy."""
    return math.sqrt(float(np.dot(frame, frame)) / len(frame))


def run(cfg: EncodeConfig) -> None:
    hops = (ev.HOP_CAPTURE_TO_ENCODE, ev.HOP_ENCODE)
    with StageRuntime("encode", cfg.wiring, hops) as rt:
        src, dst = rt.inp, rt.out
        tracer = rt.tracer("encode.npy", 4)
        encoder = OpusEncoder(
            bitrate=cfg.bitrate,
            fec=cfg.fec,
            loss_percent=int(cfg.loss_hint),
            max_bytes=MAX_PRIMARY,  # room for the voice body's flag byte
        )
        copies = OpusEncoder(  # the redundant copies' encoder: run only while they are sent
            bitrate=REDUNDANT_BITRATE, fec=False, complexity=REDUNDANT_COMPLEXITY
        )
        settings = _Settings(encoder, cfg, rt)
        frames = settings.frames
        rt.on(ev.MuteCmd, settings.mute)
        rt.on(ev.TalkModeCmd, settings.set_talk)
        rt.on(ev.PushToTalkCmd, settings.push_to_talk)
        rt.on(ev.VadThresholdCmd, settings.set_threshold)
        rt.on(ev.NoiseSuppressionCmd, settings.noise)
        rt.on(ev.AudioTestCmd, settings.audio_test)
        gate, processor = settings.gate, settings.processor
        rt.on(ev.BitrateCmd, settings.set_bitrate)
        rt.on(ev.ChaosCmd, settings.set_chaos)
        rt.on(ev.DecodeStats, settings.measured_loss)
        rt.on(ev.ListenerReport, settings.listeners)
        stream_seq = packets = sent_bytes = muted_frames = loop_seq = 0
        looping = False  # the last frame was looped back: the next one is no new spurt
        level, level_frames = 0.0, 0
        while rt.running:
            slot = src.read(timeout=0.1)
            if slot is not None:
                t_in = time.monotonic_ns()
                rt.latency.add(ev.HOP_CAPTURE_TO_ENCODE, t_in - slot.timestamp)
                level = max(level * LEVEL_DECAY, rms(slot.samples()))
                if settings.loopback.active(t_in / 1e9):
                    # The microphone test: every frame, mute and talk mode aside, cleaned and
                    # encoded as it would be sent, then flagged so the network stage plays it
                    # here. Not a packet of the stream: its numbers go on where they were.
                    raw = slot.samples()
                    pcm = raw if processor is None else processor.process(raw)
                    body = VoiceBody(encoder.encode(pcm), marker=not looping)
                    looping = True
                    loop_seq += 1
                    dst.write(bytes(body), seq=loop_seq, timestamp=slot.timestamp,
                              flags=LOOPBACK_FLAG)  # fmt: skip
                    src.release()
                    settings.loopback_frames += 1
                    gate.mute()  # what comes after the test starts a spurt afresh
                    frames.reset()
                elif settings.muted:
                    looping = False
                    gate.mute()  # nothing said while muted is kept for a pre-roll
                    src.release()
                    muted_frames += 1
                    frames.reset()  # the next frame does not follow the last one sent
                else:
                    looping = False
                    raw = slot.samples()
                    # The detector hears the microphone as it is (see TalkGate.push).
                    pcm = raw if processor is None else processor.process(raw)
                    send = gate.push(pcm, (slot.seq, slot.timestamp), probe=raw)
                    backs = backs_for(settings.policy.depth, cfg.fec)
                    for i, (frame, (seq, ts)) in enumerate(send):
                        marker = gate.started and i == 0  # SPEC.md, "Talk spurts"
                        end = gate.ending and i == len(send) - 1
                        primary = encoder.encode(frame)
                        copy = copies.encode(frame) if backs else None
                        # SPEC.md, "Voice body": a spurt's first packet carries no copies
                        packet = frames.body(stream_seq + 1, primary, copy, backs, marker, end)
                        t_out = time.monotonic_ns()
                        rt.latency.add(ev.HOP_ENCODE, t_out - t_in)
                        stream_seq += 1
                        if dst.write(packet, seq=stream_seq, timestamp=ts):  # full: counted
                            packets += 1
                            sent_bytes += len(packet)
                        tracer.add(seq, t_in, t_out, stream_seq)  # capture seq -> stream seq
                    src.release()
                level_frames += 1
                if level_frames >= LEVEL_FRAMES:
                    level_frames = 0
                    rt.publish(ev.InputLevel(level, transmitting=gate.talking))
            rt.poll()
            now = time.monotonic()
            if rt.report_due(now):
                settings.update(now)  # the listeners' figure decays without news
                rt.report(
                    now,
                    settings.stats(
                        now, packets=packets, packet_bytes=sent_bytes, muted_frames=muted_frames
                    ),
                )
