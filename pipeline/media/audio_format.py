"""Audio constants shared by every stage (SPEC.md, "Audio constants")."""

from __future__ import annotations

SAMPLE_RATE = 48_000  # Hz, mono
FRAME_SAMPLES = 960  # one 20 ms frame
FRAME_BYTES = FRAME_SAMPLES * 4  # float32
FRAME_NS = 20_000_000  # one frame, in ns of time.monotonic_ns()
MAX_PACKET = 1275  # the largest Opus packet
