"""Give the C heap's free memory back to the system now and then (glibc's ``malloc_trim``).

Every client process carries ZeroMQ traffic, and its I/O threads allocate the
message buffers from glibc arenas of their own. Freed there, that memory is
kept: a thread arena gives pages back only from its top, so the holes that
messages of mixed sizes leave behind stay resident, and a process's RSS creeps
up by the high-water mark of each new pattern of holes (issue 18, finding 7: the
supervisor process, which hosts the bus broker and reads every event, grew
25-50 KiB/min; the memory ``gc`` and ``tracemalloc`` see did not grow at all, and a
``malloc_trim`` from a debugger handed back 320 KiB of it at once).

``malloc_trim(0)`` releases the free pages of every arena (glibc 2.8 or later
also inside the heap, not only at its top). :class:`HeapTrimmer` calls it once
per ``interval``; elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

TRIM_INTERVAL = 30.0  # seconds between two trims of one process


def _find_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(None)  # the C library this process already runs on
    except OSError:
        return None
    trim = getattr(libc, "malloc_trim", None)  # glibc only (not musl, not macOS)
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_TRIM = _find_trim()


def trim_heap() -> bool:
    """Hand the free memory of every malloc arena back to the system; False if this C
    library cannot (then nothing happens)."""
    if _TRIM is None:
        return False
    _TRIM(0)
    return True


class HeapTrimmer:
    """Calls :func:`trim_heap` at most once per ``interval`` seconds; :meth:`tick` is cheap
    enough for every pass of a loop."""

    __slots__ = ("_next", "interval", "trims")

    def __init__(self, interval: float = TRIM_INTERVAL, now: float = 0.0) -> None:
        self.interval = interval
        self._next = now + interval
        self.trims = 0

    def tick(self, now: float) -> bool:
        """At ``now`` (monotonic seconds): trim if one is due. True if it trimmed."""
        if now < self._next:
            return False
        self._next = now + self.interval
        if not trim_heap():
            return False
        self.trims += 1
        return True
