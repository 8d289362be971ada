"""Audio constants shared by every stage (SPEC.md, "Audio constants")."""

from __future__ import annotations

SAMPLE_RATE = 48_000  # Hz, mono
FRAME_SAMPLES = 960  # one 20 ms frame
FRAME_BYTES = FRAME_SAMPLES * 4  # float32
FRAME_NS = 20_000_000  # one frame, in ns of time.monotonic_ns()
MAX_PACKET = 1275  # the largest Opus packet
# What the playback ring carries, and the clocked sinks' and sound devices' block: a
# quarter frame. Each mixed block is made just before the sink wants it, so a packet
# must be here up to 5 ms before its audio starts, not up to a whole frame (the phase
# of the talker's 20 ms clock against the listener's made that 0-20 ms of delay).
BLOCK_SAMPLES = FRAME_SAMPLES // 4
BLOCK_BYTES = BLOCK_SAMPLES * 4
BLOCK_NS = FRAME_NS // 4
BLOCKS_PER_FRAME = FRAME_SAMPLES // BLOCK_SAMPLES
