"""A single-producer single-consumer frame ring in one shared-memory block.

Layout of the block (all integers little-endian, native on x86-64)::

    line 0 (64 B)  magic, version, capacity, slot_bytes, stride    constant after create
    line 1 (64 B)  write index, dropped                             producer-owned
    line 2 (64 B)  read index, taken, due_ns, starved               consumer-owned
    slots          capacity x stride; each slot is a 40-byte header
                   (length u32, flags u32, seq u64, timestamp u64, speaker u32, pad u32,
                   media u64) followed by slot_bytes of payload

``timestamp`` is always a time on this machine's monotonic clock (when the frame was
captured here, or when its packet arrived here); ``media`` is the sender's media
timestamp of a received packet (48 kHz samples, SPEC.md), a number from another
machine that is only ever compared with others of the same stream.

The indices are free-running u64 counters (slot = index % capacity); ``write - read`` is
the fill. Each side writes only its own cache line, so there is no lock and no
read-modify-write shared between processes: the written and read counters *are* the
indices, and ``dropped`` is stored only by the producer.

Publication ordering (why the consumer never sees a half-written slot):

* The producer copies the payload and the slot header, and only then stores
  ``write + 1`` (one aligned 8-byte store through ctypes, which is a single ``mov``:
  never torn). The consumer loads ``write`` first and only then the slot. On x86-64
  (TSO) stores are not reordered with earlier stores and loads are not reordered with
  earlier loads, and the interpreter issues the copy and the index store as separate
  opaque C calls the compiler cannot reorder, so a consumer that sees the new index
  sees the whole slot.
* Symmetrically the consumer stores ``read + 1`` only after it is done with the slot
  (:meth:`Ring.release`), and the producer loads ``read`` before it overwrites a slot.
* The wake-up (an eventfd write) comes after the index store and is a syscall, a full
  barrier. A consumer that slept is woken by it; one that polls relies on TSO. ARM64 is
  weaker than TSO: on such a machine the polling path would need acquire/release
  fences that Python cannot express; ``Ring.create`` warns there.

Drop policy: a full ring drops the *newest* frame and counts it. The producer never
touches the consumer's read index (that would race with a slot the consumer holds),
so "drop oldest" cannot be done by the producer in an SPSC ring with zero-copy reads.
A consumer that wants the freshest audio reads and releases the stale slots itself
(consumer-side, race free); the playback side keeps its ring shallow instead.

Wake-up: the consumer blocks on an eventfd (default), a pipe, or a semaphore; it never
spins. bench/ring_ipc.py measures all three in one run. On this 2-core machine, loaded
by other work, two runs gave at 20 ms spacing p99 297/406 µs (eventfd), 770/1166 (pipe),
1273/825 (semaphore); at 2 ms spacing p50 19-53 µs for all three; consumer CPU
0.4-1.8 % for all. Cost of a signal: eventfd ~0.4 µs, pipe ~0.9, semaphore ~0.1. They
are within noise of each other at the median; eventfd had the best 20 ms tail in both
runs, is one fd a caller can poll beside others (:meth:`Ring.fileno`), is an 8-byte
counter that cannot fill up (a pipe can), and one read drains it (a semaphore is
decremented once per wake-up and its surplus gives spurious wake-ups), so it is the
default.

Shared-memory pitfalls handled here (MEASURED.md): numpy views never pin a mapping,
so every view handed out is built on a memoryview slice, which does pin it: closing
while a view is alive leaves the mapping to die with the last view instead of
crashing. An attaching process maps the segment itself and never registers it with a
resource tracker, so its exit (even by SIGKILL) cannot unlink the creator's segment.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import mmap
import os
import platform
import secrets
import select
import time
import warnings
from dataclasses import dataclass
from multiprocessing import get_context, reduction
from multiprocessing.shared_memory import SharedMemory
from typing import Any, Literal

import numpy as np

from pipeline.media.audio_format import FRAME_BYTES

MAGIC = 0x5643_5249_4E47_0001  # "VCRING" + layout 1
HEADER_BYTES = 192  # three cache lines
SLOT_HEADER_BYTES = 40
ALIGN = 64
SHM_DIR = "/dev/shm"
Wake = Literal["eventfd", "pipe", "semaphore"]


class RingError(RuntimeError):
    """Misuse of a ring: bad geometry, wrong side, a segment that is not a ring."""


class _Header(ctypes.Structure):
    _fields_ = [
        ("magic", ctypes.c_uint64),
        ("version", ctypes.c_uint64),
        ("capacity", ctypes.c_uint64),
        ("slot_bytes", ctypes.c_uint64),
        ("stride", ctypes.c_uint64),
        ("_pad0", ctypes.c_uint64 * 3),
        ("write", ctypes.c_uint64),  # producer line
        ("dropped", ctypes.c_uint64),
        ("_pad1", ctypes.c_uint64 * 6),
        ("read", ctypes.c_uint64),  # consumer line
        ("taken", ctypes.c_uint64),  # slots read() has handed out (released or held)
        ("due_ns", ctypes.c_uint64),  # when the consumer next wants a slot (0: not said)
        ("starved", ctypes.c_uint64),  # times it wanted one and the ring was empty
        ("_pad2", ctypes.c_uint64 * 4),
    ]


class _SlotHeader(ctypes.Structure):
    _fields_ = [
        ("length", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("seq", ctypes.c_uint64),
        ("timestamp", ctypes.c_uint64),
        ("speaker", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
        ("media", ctypes.c_uint64),
    ]


assert ctypes.sizeof(_Header) == HEADER_BYTES
assert ctypes.sizeof(_SlotHeader) == SLOT_HEADER_BYTES


def _stride(slot_bytes: int) -> int:
    return math.ceil((SLOT_HEADER_BYTES + slot_bytes) / ALIGN) * ALIGN


# --- wake-up primitives -------------------------------------------------------------


def _rebuild_handle(
    name: str,
    capacity: int,
    slot_bytes: int,
    drop: str,
    wake: Wake,
    fds: tuple[Any, ...],
    sem: Any,
) -> RingHandle:
    # Under spawn each fd arrives as a DupFd whose detach() gives this process's copy.
    return RingHandle(name, capacity, slot_bytes, drop, wake, tuple(f.detach() for f in fds), sem)


@dataclass(frozen=True)
class RingHandle:
    """Everything another process needs to attach: picklable as a spawn argument.

    The wake-up fds travel as ``multiprocessing.reduction.DupFd`` (raw fds are not
    inherited under spawn); the received copies stay open for the life of the process
    so that the handle can be attached more than once.
    """

    name: str
    capacity: int
    slot_bytes: int
    drop: str
    wake: Wake
    fds: tuple[int, ...]  # eventfd: (fd,); pipe: (read end, write end); semaphore: ()
    sem: Any = None  # a multiprocessing Semaphore for wake="semaphore"

    def __reduce__(self) -> tuple[Any, ...]:
        dup = tuple(reduction.DupFd(fd) for fd in self.fds)
        args = (self.name, self.capacity, self.slot_bytes, self.drop, self.wake, dup, self.sem)
        return (_rebuild_handle, args)


class _Waker:
    """One side's end of the wake-up primitive: signal() never blocks, wait() sleeps."""

    def __init__(self, wake: Wake, fds: tuple[int, ...], sem: Any) -> None:
        self.kind = wake
        self.fds = fds
        self.sem = sem
        self._poll: select.poll | None = None
        if fds:
            self._poll = select.poll()
            self._poll.register(fds[0], select.POLLIN)

    def signal(self) -> None:
        if self.kind == "eventfd":
            os.eventfd_write(self.fds[0], 1)
        elif self.kind == "pipe":
            # A full pipe already holds a pending wake-up: nothing is lost by dropping.
            with contextlib.suppress(BlockingIOError):
                os.write(self.fds[1], b"\x01")
        else:
            self.sem.release()

    def wait(self, timeout: float | None) -> None:
        """Sleep until signalled or ``timeout`` seconds pass; consume pending signals.

        Spurious returns are allowed: the caller re-checks the ring.
        """
        if self._poll is not None:
            ms = -1 if timeout is None else max(0, math.ceil(timeout * 1000))
            if self._poll.poll(ms):
                self.drain()
        else:
            self.sem.acquire(True, timeout)

    def drain(self) -> None:
        if self.kind == "eventfd":
            with contextlib.suppress(BlockingIOError):
                os.eventfd_read(self.fds[0])
        elif self.kind == "pipe":
            with contextlib.suppress(BlockingIOError):
                os.read(self.fds[0], 65536)

    def close(self) -> None:
        if self._poll is not None:
            self._poll = None
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds = ()


def _make_wake(wake: Wake) -> tuple[tuple[int, ...], Any]:
    if wake == "eventfd":
        return (os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC),), None
    if wake == "pipe":
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        return (r, w), None
    if wake == "semaphore":
        return (), get_context("spawn").Semaphore(0)
    raise RingError(f"unknown wake-up primitive {wake!r}: use eventfd, pipe or semaphore")


# --- the ring -----------------------------------------------------------------------


@dataclass(slots=True)
class Slot:
    """One frame as read(): valid until release() or the next read().

    ``data`` is a zero-copy memoryview of the slot's payload; after release the
    producer may overwrite it, so copy what you keep.
    """

    seq: int
    timestamp: int  # this machine's monotonic ns
    speaker: int
    flags: int
    length: int  # bytes
    data: memoryview
    media: int = 0  # the sender's media timestamp (received packets only)

    def samples(self) -> np.ndarray:
        """The payload as a zero-copy float32 view (length // 4 samples)."""
        return np.frombuffer(self.data, dtype=np.float32, count=self.length // 4)


@dataclass(slots=True, frozen=True)
class RingStats:
    written: int
    read: int
    dropped: int
    fill: int


class Ring:
    """SPSC frame ring over shared memory; see the module docstring for the design.

    One process creates (and, at the end, unlinks); the other attaches with the
    handle. Either may be the producer. Use as a context manager.
    """

    def __init__(
        self,
        *,
        buf: memoryview,
        closer: Any,
        handle: RingHandle,
        waker: _Waker,
        shm: SharedMemory | None,
    ) -> None:
        self._buf: memoryview | None = buf
        self._closer = closer
        self._handle = handle
        self._waker = waker
        self._shm = shm  # only the creator holds one
        self.capacity = handle.capacity
        self.slot_bytes = handle.slot_bytes
        self._stride = _stride(handle.slot_bytes)
        self._hdr: _Header | None = _Header.from_buffer(buf)
        self._slot_hdrs: list[_SlotHeader] = []
        self._payloads: list[memoryview] = []
        self._f32: list[np.ndarray] = []
        for i in range(self.capacity):
            base = HEADER_BYTES + i * self._stride
            self._slot_hdrs.append(_SlotHeader.from_buffer(buf, base))
            mv = buf[base + SLOT_HEADER_BYTES : base + SLOT_HEADER_BYTES + self.slot_bytes]
            self._payloads.append(mv)
            self._f32.append(np.frombuffer(mv, dtype=np.float32, count=self.slot_bytes // 4))
        self._holding = False
        self._closed = False

    # --- life cycle ---

    @classmethod
    def create(
        cls,
        slots: int,
        slot_bytes: int = FRAME_BYTES,
        *,
        drop: Literal["newest", "oldest"] = "newest",
        label: str = "ring",
        wake: Wake = "eventfd",
    ) -> Ring:
        """Create a ring of ``slots`` slots of ``slot_bytes`` payload bytes each."""
        if drop != "newest":
            raise RingError(
                'drop="oldest" is not possible for an SPSC producer (it would race with '
                'the slot the consumer holds): use drop="newest" and discard stale data on the '
                "consumer side"
            )
        if slots < 1 or slot_bytes < 4 or slot_bytes % 4:
            raise RingError(f"bad geometry: {slots} slots of {slot_bytes} bytes")
        if platform.machine() not in ("x86_64", "AMD64", "i686"):
            warnings.warn(
                "Ring publication relies on x86 store ordering", RuntimeWarning, stacklevel=2
            )
        name = f"vc_{label}_{os.getpid()}_{secrets.token_hex(4)}"
        size = HEADER_BYTES + slots * _stride(slot_bytes)
        fds, sem = _make_wake(wake)
        try:
            shm = SharedMemory(name=name, create=True, size=size)
        except BaseException:
            _Waker(wake, fds, sem).close()
            raise
        assert shm.buf is not None
        hdr = _Header.from_buffer(shm.buf)
        hdr.capacity, hdr.slot_bytes, hdr.stride = slots, slot_bytes, _stride(slot_bytes)
        hdr.version, hdr.magic = 3, MAGIC
        del hdr
        handle = RingHandle(shm.name.lstrip("/"), slots, slot_bytes, drop, wake, fds, sem)
        return cls(buf=shm.buf, closer=shm, handle=handle, waker=_Waker(wake, fds, sem), shm=shm)

    @classmethod
    def attach(cls, handle: RingHandle) -> Ring:
        """Map an existing ring by its handle, without registering it with a tracker."""
        fd = os.open(os.path.join(SHM_DIR, handle.name), os.O_RDWR)
        try:
            size = os.fstat(fd).st_size
            mm = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        buf = memoryview(mm)
        hdr = _Header.from_buffer(buf)
        ok = (
            hdr.magic == MAGIC
            and hdr.capacity == handle.capacity
            and hdr.slot_bytes == handle.slot_bytes
            and size >= HEADER_BYTES + handle.capacity * _stride(handle.slot_bytes)
        )
        del hdr
        if not ok:
            buf.release()
            mm.close()
            raise RingError(f"/dev/shm/{handle.name} is not a ring with the handle's geometry")
        fds = tuple(os.dup(fd) for fd in handle.fds)
        waker = _Waker(handle.wake, fds, handle.sem)
        return cls(buf=buf, closer=mm, handle=handle, waker=waker, shm=None)

    @property
    def handle(self) -> RingHandle:
        return self._handle

    @property
    def name(self) -> str:
        return self._handle.name

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Unmap this side's view and close its wake-up fds; idempotent.

        If a Slot.data or samples() view is still alive the mapping stays until the
        last view dies (no crash); a ResourceWarning says so.
        """
        if self._closed:
            return
        self._closed = True
        self._holding = False
        # Drop (never release) our views: a claim() array the caller still holds keeps
        # its memoryview, and with it the mapping, alive.
        self._hdr = None
        self._slot_hdrs.clear()
        self._f32.clear()
        self._payloads.clear()
        self._waker.close()
        buf, self._buf = self._buf, None
        try:
            if self._shm is None:
                assert buf is not None
                buf.release()
            del buf
            self._closer.close()
        except BufferError:
            # A Slot.data / samples() / claim() view is alive. Unmapping now would leave it
            # dangling (SIGSEGV on access): leave the mmap to die with the last view.
            if self._shm is not None:
                with contextlib.suppress(OSError):
                    os.close(self._shm._fd)  # type: ignore[attr-defined]
                self._shm._fd = -1  # type: ignore[attr-defined]
                self._shm._mmap = None  # type: ignore[attr-defined]
            warnings.warn(
                f"ring {self.name} closed while views into it are alive; "
                "the mapping lives until they are dropped",
                ResourceWarning,
                stacklevel=2,
            )

    def unlink(self) -> None:
        """Remove the segment name (creator only); attached mappings stay valid."""
        if self._shm is None:
            raise RingError("only the creator unlinks a ring")
        with contextlib.suppress(FileNotFoundError):
            self._shm.unlink()

    def __enter__(self) -> Ring:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.close()
        finally:
            if self._shm is not None:
                self.unlink()

    # --- producer ---

    def write(
        self,
        data: np.ndarray | bytes | bytearray | memoryview,
        *,
        seq: int = 0,
        timestamp: int = 0,
        speaker: int = 0,
        flags: int = 0,
        media: int = 0,
    ) -> bool:
        """Copy ``data`` into the next slot, publish it and wake the consumer.

        Never blocks. Returns False (and counts a drop) when the ring is full.
        """
        hdr = self._hdr
        if hdr is None:
            raise RingError("ring is closed")
        w = hdr.write
        if w - hdr.read >= self.capacity:
            hdr.dropped += 1  # producer-owned: no race
            return False
        if isinstance(data, np.ndarray) and not data.flags.c_contiguous:
            data = np.ascontiguousarray(data)
        buffer: Any = data  # numpy arrays are buffers; the stubs do not say so
        src = buffer if isinstance(buffer, bytes) else memoryview(buffer).cast("B")
        n = len(src)
        if n > self.slot_bytes:
            raise ValueError(f"{n} bytes do not fit a {self.slot_bytes}-byte slot")
        i = w % self.capacity
        self._payloads[i][:n] = src
        self._fill_header(i, n, seq, timestamp, speaker, flags, media)
        hdr.write = w + 1  # publish: after the payload and header stores
        self._waker.signal()
        return True

    def claim(self) -> np.ndarray | None:
        """The next free slot as a float32 view to fill in place, or None when full.

        Follow with :meth:`publish`; nothing is visible to the consumer before that.
        """
        hdr = self._hdr
        if hdr is None:
            raise RingError("ring is closed")
        w = hdr.write
        if w - hdr.read >= self.capacity:
            return None
        return self._f32[w % self.capacity]

    def publish(
        self,
        length: int,
        *,
        seq: int = 0,
        timestamp: int = 0,
        speaker: int = 0,
        flags: int = 0,
        media: int = 0,
    ) -> bool:
        """Publish the slot filled through :meth:`claim` (``length`` in bytes).

        Returns False (counted as a drop) when the ring is full, i.e. claim() was not
        called or returned None.
        """
        hdr = self._hdr
        if hdr is None:
            raise RingError("ring is closed")
        w = hdr.write
        if w - hdr.read >= self.capacity:
            hdr.dropped += 1
            return False
        if not 0 <= length <= self.slot_bytes:
            raise ValueError(f"length {length} outside a {self.slot_bytes}-byte slot")
        self._fill_header(w % self.capacity, length, seq, timestamp, speaker, flags, media)
        hdr.write = w + 1
        self._waker.signal()
        return True

    def _fill_header(
        self, i: int, n: int, seq: int, ts: int, speaker: int, flags: int, media: int
    ) -> None:
        sh = self._slot_hdrs[i]
        sh.length = n
        sh.flags = flags
        sh.seq = seq
        sh.timestamp = ts
        sh.speaker = speaker
        sh.media = media

    # --- consumer ---

    def read(self, timeout: float | None = None) -> Slot | None:
        """The oldest unread slot, waiting up to ``timeout`` s (None: forever, 0: poll).

        Releases the slot a previous read() returned. Returns None on timeout.
        """
        hdr = self._hdr
        if hdr is None:
            raise RingError("ring is closed")
        if self._holding:
            self.release()
        r = hdr.read
        if hdr.write == r:
            if timeout == 0:
                return None
            deadline = None if timeout is None else time.monotonic() + timeout
            while hdr.write == r:
                remaining = None
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return None
                self._waker.wait(remaining)
                if self._hdr is None:
                    raise RingError("ring closed while waiting")
        i = r % self.capacity
        sh = self._slot_hdrs[i]
        n = min(sh.length, self.slot_bytes)
        self._holding = True
        hdr.taken = r + 1
        return Slot(sh.seq, sh.timestamp, sh.speaker, sh.flags, n, self._payloads[i][:n], sh.media)

    def release(self) -> None:
        """Hand the slot read() returned back to the producer."""
        hdr = self._hdr
        if hdr is None:
            raise RingError("ring is closed")
        if self._holding:
            self._holding = False
            hdr.read = hdr.read + 1  # consumer-owned: no race

    def set_due(self, due_ns: int) -> None:
        """Say when this consumer will next want a slot (monotonic ns), for a producer that
        makes each slot just in time (:meth:`due_ns`, pipeline/core/pacer.py)."""
        hdr = self._hdr
        if hdr is None:
            raise RingError("ring is closed")
        hdr.due_ns = max(0, due_ns)

    def note_starved(self) -> None:
        """Count a slot this consumer wanted and did not find (the producer sees it)."""
        hdr = self._hdr
        if hdr is None:
            raise RingError("ring is closed")
        hdr.starved = hdr.starved + 1  # consumer-owned: no race

    # --- both ---

    def pending(self) -> int:
        """Slots written and not yet handed out by read(): a slot the consumer holds (a
        sound device's frame still playing) is not pending, where :meth:`fill` counts it."""
        hdr = self._hdr
        if hdr is None:
            raise RingError("ring is closed")
        return int(hdr.write - hdr.taken)

    def due_and_pending(self) -> tuple[int, int, int]:
        """(``due_ns``, :meth:`pending`, ``taken``), for the producer, read in that order.

        The consumer counts a slot taken (in read()) before it says when it wants the
        next (set_due()), and x86 keeps both stores and loads in order: a producer that
        sees the new due also sees the new count. The other way round it may not: a new
        count with the due of the slot before is the consumer between its two stores
        (:class:`~pipeline.core.pacer.Pacer` waits that out)."""
        hdr = self._hdr
        if hdr is None:
            raise RingError("ring is closed")
        due = int(hdr.due_ns)
        taken = int(hdr.taken)
        return due, int(hdr.write - taken), taken

    @property
    def due_ns(self) -> int:
        """What the consumer last said with :meth:`set_due` (0 until it has)."""
        hdr = self._hdr
        if hdr is None:
            raise RingError("ring is closed")
        return int(hdr.due_ns)

    @property
    def starved(self) -> int:
        """The consumer's count of :meth:`note_starved`."""
        hdr = self._hdr
        if hdr is None:
            raise RingError("ring is closed")
        return int(hdr.starved)

    def fill(self) -> int:
        """Slots written and not yet released."""
        hdr = self._hdr
        if hdr is None:
            raise RingError("ring is closed")
        return int(hdr.write - hdr.read)

    @property
    def stats(self) -> RingStats:
        hdr = self._hdr
        if hdr is None:
            raise RingError("ring is closed")
        w, r, d = hdr.write, hdr.read, hdr.dropped
        return RingStats(written=w, read=r, dropped=d, fill=w - r)

    def fileno(self) -> int | None:
        """The fd the consumer waits on (eventfd or pipe), for a caller's own poll loop."""
        return self._waker.fds[0] if self._waker.fds else None
