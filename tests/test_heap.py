"""pipeline/ipc/heap.py: free C heap handed back to the system, for real, in this process."""

from __future__ import annotations

import threading

import pytest

from pipeline.ipc import heap
from pipeline.ipc.heap import HeapTrimmer, trim_heap

pytestmark = pytest.mark.skipif(heap._TRIM is None, reason="not glibc: nothing to trim")


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_the_holes_a_thread_leaves_in_its_arena_are_given_back() -> None:
    # As ZeroMQ's I/O thread does: buffers of a few KiB (malloc, not pymalloc, not mmap)
    # allocated on a thread and mostly freed, a few kept, so its arena cannot shrink.
    kept: list[bytearray] = []

    def churn() -> None:
        blocks = [bytearray(16 * 1024) for _ in range(2048)]  # 32 MiB, every page touched
        kept.extend(blocks[::64])
        blocks.clear()

    thread = threading.Thread(target=churn)
    thread.start()
    thread.join()
    before = rss_kib()
    assert trim_heap()
    after = rss_kib()
    assert before - after > 16 * 1024, f"RSS {before} -> {after} KiB"
    assert len(kept) == 32  # still there: only free memory went


def test_the_trimmer_trims_once_per_interval() -> None:
    t = HeapTrimmer(interval=30.0, now=100.0)
    assert not t.tick(100.0) and not t.tick(129.9)
    assert t.tick(130.0) and not t.tick(130.1) and not t.tick(159.9)
    assert t.tick(175.0) and t.trims == 2
