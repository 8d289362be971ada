"""Encode stage: frames from the capture ring -> Opus packets into the network ring.

Numbers the packets it sends (the voice stream's sequence numbers): +1 per packet,
so a mute leaves no gap that a listener would count as loss; the capture timestamp
jumps instead, and the listener's jitter buffer starts the new talk spurt afresh.

Owns the encoder settings the UI may change: bitrate, mute, and the packet
loss hint (the larger of the chaos setting and the loss measured on receive),
which tells Opus how much in-band FEC to spend.
"""

from __future__ import annotations

import os
import time

from pipeline.ipc import events as ev
from pipeline.ipc.bus import BusAddress, BusClient
from pipeline.ipc.child_process import child_setup
from pipeline.ipc.ring import Ring, RingHandle
from pipeline.media.opus import CodecError, OpusEncoder
from pipeline.stages.stats import StageStats, Tracer

MIN_BITRATE, MAX_BITRATE = 6000, 510000


def run(
    bus: BusAddress,
    inp: RingHandle,
    out: RingHandle,
    bitrate: int = 48000,
    trace_dir: str | None = None,
    fec: bool = True,
    loss_hint: float = 0.0,
) -> None:
    """``loss_hint``: the loss % to expect before any is measured (a floor for the FEC hint)."""
    stop = child_setup("encode")
    client = BusClient(bus, topics=("cmd.", "stats.decode"))
    src, dst = Ring.attach(inp), Ring.attach(out)
    stats = StageStats("encode", client)
    tracer = Tracer(os.path.join(trace_dir, "encode.npy") if trace_dir else None, 4)
    encoder = OpusEncoder(bitrate=bitrate, fec=fec, loss_percent=int(loss_hint))
    muted = False
    chaos = measured = 0.0
    stream_seq = 0
    try:
        while not stop.check_parent():
            slot = src.read(timeout=0.1)
            if slot is not None:
                t_in = time.monotonic_ns()
                stats.window("capture_to_encode").add(t_in - slot.timestamp)
                seq, ts = slot.seq, slot.timestamp
                if muted:
                    src.release()
                    stats.count("muted_frames")
                else:
                    packet = encoder.encode(slot.samples())
                    src.release()
                    t_out = time.monotonic_ns()
                    stats.window("encode").add(t_out - t_in)
                    stream_seq += 1
                    if dst.write(packet, seq=stream_seq, timestamp=ts):
                        stats.count("packets")
                        stats.count("bytes", len(packet))
                    else:
                        stats.count("dropped")
                    tracer.add(seq, t_in, t_out, stream_seq)  # capture seq -> stream seq
            for event in client.poll(0):
                if isinstance(event, ev.QuitCmd):
                    stop.set("quit")
                elif isinstance(event, ev.MuteCmd):
                    muted = event.muted
                elif isinstance(event, ev.BitrateCmd):
                    try:
                        encoder.set_bitrate(min(max(event.bps, MIN_BITRATE), MAX_BITRATE))
                        bitrate = event.bps
                    except CodecError as exc:
                        client.publish(ev.Notice(f"bitrate not changed: {exc}"))
                elif isinstance(event, ev.ChaosCmd):
                    chaos = event.loss_percent
                    encoder.set_loss_percent(int(min(100, max(loss_hint, chaos, measured))))
                elif isinstance(event, ev.Stats):
                    loss = event.values.get("loss_percent")
                    if isinstance(loss, int | float):
                        measured = float(loss)
                        encoder.set_loss_percent(int(min(100, max(loss_hint, chaos, measured))))
            now = time.monotonic()
            if stats.due(now):
                stats.publish(now, {"bitrate": bitrate, "muted": muted, "ring_fill": src.fill()})
    finally:
        tracer.save()
        src.close()
        dst.close()
        client.close()
