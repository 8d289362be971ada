"""pipeline/ipc/ring.py: one process, two processes (spawn), leaks, and a state machine."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from collections import deque
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from pipeline.ipc.ring import Ring, RingError, RingHandle
from pipeline.media.audio_format import FRAME_BYTES, FRAME_SAMPLES, MAX_PACKET

CTX = multiprocessing.get_context("spawn")
WAKES = ["eventfd", "pipe", "semaphore"]
ROOT = Path(__file__).resolve().parent.parent


def frame(k: int) -> np.ndarray:
    return np.arange(FRAME_SAMPLES, dtype=np.float32) + np.float32(k)


def shm_exists(name: str) -> bool:
    return os.path.exists(f"/dev/shm/{name}")


@contextlib.contextmanager
def joined(p: multiprocessing.process.BaseProcess, timeout: float = 20) -> Iterator[None]:
    try:
        yield
    finally:
        p.join(timeout)
        if p.is_alive():
            p.kill()
            p.join(5)


# --- one process --------------------------------------------------------------------


def test_frame_round_trip_is_zero_copy_with_header() -> None:
    with Ring.create(4, label="t") as ring:
        assert ring.name.startswith("vc_t_")
        assert ring.write(frame(1), seq=7, timestamp=123, speaker=9, flags=3)
        slot = ring.read(0)
        assert slot is not None
        assert (slot.seq, slot.timestamp, slot.speaker, slot.flags) == (7, 123, 9, 3)
        assert slot.length == FRAME_BYTES
        s = slot.samples()
        assert np.array_equal(s, frame(1))
        # zero-copy: the view is the slot's memory, not a copy of it
        s2 = slot.samples()
        assert np.shares_memory(s, s2)
        del s, s2, slot
        ring.release()
        assert ring.fill() == 0


def test_bytes_payload_up_to_max_packet() -> None:
    with Ring.create(2) as ring:
        pkt = bytes(range(256)) * 4 + b"x" * (MAX_PACKET - 1024)
        assert ring.write(pkt, seq=1)
        assert ring.write(bytearray(b"ab"), seq=2)
        a = ring.read(0)
        assert a is not None and a.length == MAX_PACKET and bytes(a.data) == pkt
        b = ring.read(0)  # implicitly releases a
        assert b is not None and bytes(b.data) == b"ab" and ring.fill() == 1
        del a, b
        ring.release()


def test_oversize_write_is_an_error() -> None:
    with Ring.create(2, slot_bytes=16) as ring, pytest.raises(ValueError):
        ring.write(b"x" * 17)


def test_bad_geometry_and_drop_oldest_refused() -> None:
    with pytest.raises(RingError):
        Ring.create(0)
    with pytest.raises(RingError):
        Ring.create(2, slot_bytes=6)
    with pytest.raises(RingError, match="oldest"):
        Ring.create(2, drop="oldest")


@pytest.mark.parametrize("wake", WAKES)
def test_wraparound_over_many_laps(wake: str) -> None:
    rng = np.random.default_rng(1)
    with Ring.create(3, slot_bytes=64, wake=wake) as ring:  # type: ignore[arg-type]
        sent = got = 0
        while got < 3000:
            for _ in range(int(rng.integers(0, 4))):
                if ring.write(np.full(16, sent, dtype=np.float32), seq=sent):
                    sent += 1
            for _ in range(int(rng.integers(0, 4))):
                slot = ring.read(0)
                if slot is None:
                    break
                assert slot.seq == got
                assert np.all(slot.samples() == got)
                got += 1
            ring.release()
        assert ring.stats.read == got and ring.stats.written == sent


def test_full_ring_drops_newest_and_counts() -> None:
    with Ring.create(4) as ring:
        results = [ring.write(frame(k), seq=k) for k in range(10)]
        assert results == [True] * 4 + [False] * 6
        st_ = ring.stats
        assert (st_.written, st_.dropped, st_.fill, st_.read) == (4, 6, 4, 0)
        seqs = []
        while (slot := ring.read(0)) is not None:
            seqs.append(slot.seq)
        assert seqs == [0, 1, 2, 3]  # the newest were dropped, in order


@pytest.mark.parametrize("wake", WAKES)
def test_consumer_times_out(wake: str) -> None:
    with Ring.create(2, wake=wake) as ring:  # type: ignore[arg-type]
        assert ring.read(0) is None
        assert ring.read(0.02) is None
        ring.write(frame(0))
        assert ring.read(0.02) is not None


def test_claim_and_publish_fill_in_place() -> None:
    with Ring.create(2) as ring:
        view = ring.claim()
        assert view is not None and view.shape == (FRAME_SAMPLES,)
        view[:] = 0.5
        assert ring.fill() == 0  # not visible before publish
        assert ring.publish(FRAME_BYTES, seq=3)
        assert ring.claim() is not None
        assert ring.publish(FRAME_BYTES, seq=4)
        assert ring.claim() is None
        assert not ring.publish(FRAME_BYTES) and ring.stats.dropped == 1
        slot = ring.read(0)
        assert slot is not None and slot.seq == 3 and np.all(slot.samples() == 0.5)
        del view, slot


def test_pending_leaves_out_a_held_slot_and_the_consumer_line_reaches_the_producer() -> None:
    with Ring.create(4, label="due") as ring, Ring.attach(ring.handle) as sink:
        assert ring.due_ns == 0 and ring.starved == 0 and ring.pending() == 0
        assert ring.write(frame(1), seq=1) and ring.write(frame(2), seq=2)
        slot = sink.read(0)  # held, as a sound device holds the frame it plays
        assert slot is not None and slot.seq == 1
        assert ring.fill() == 2 and ring.pending() == 1
        sink.set_due(123_456_789)
        sink.note_starved()
        sink.note_starved()
        assert ring.due_ns == 123_456_789 and ring.starved == 2  # seen by the producer
        assert ring.due_and_pending() == (123_456_789, 1, 1)  # due, pending, taken
        sink.release()
        assert ring.fill() == 1 and ring.pending() == 1
        del slot
        assert sink.read(0) is not None and ring.pending() == 0
        sink.release()


def test_attach_by_handle_in_process_and_wrong_geometry() -> None:
    with Ring.create(4, label="att") as ring:
        with Ring.attach(ring.handle) as other:
            assert other.write(frame(2), seq=2)
            with pytest.raises(RingError):
                other.unlink()  # only the creator unlinks
        assert shm_exists(ring.name)  # the attacher's exit did not unlink
        slot = ring.read(0)
        assert slot is not None and slot.seq == 2 and ring.stats.written == 1
        del slot
        h = ring.handle
        bad = RingHandle(h.name, h.capacity + 1, h.slot_bytes, h.drop, h.wake, h.fds, h.sem)
        with pytest.raises(RingError):
            Ring.attach(bad)
    assert not shm_exists(ring.name)


def test_closed_ring_refuses_and_close_is_idempotent() -> None:
    ring = Ring.create(2)
    ring.close()
    ring.close()
    with pytest.raises(RingError):
        ring.write(b"x")
    with pytest.raises(RingError):
        ring.read(0)
    ring.unlink()
    assert not shm_exists(ring.name)


def test_view_outliving_close_does_not_crash() -> None:
    # MEASURED.md: a numpy view over a closed SharedMemory segfaults on access.
    ring = Ring.create(2)
    try:
        ring.write(frame(5))
        slot = ring.read(0)
        assert slot is not None
        samples = slot.samples()
        del slot
        with pytest.warns(ResourceWarning):
            ring.close()
        assert samples[1] == 6.0  # still mapped: the view keeps the mapping alive
        del samples
    finally:
        ring.close()
        ring.unlink()


def test_claim_view_outliving_close_does_not_crash() -> None:
    ring = Ring.create(2)
    try:
        view = ring.claim()
        assert view is not None
        with pytest.warns(ResourceWarning):
            ring.close()
        view[:] = 1.0  # still mapped
        del view
    finally:
        ring.close()
        ring.unlink()


def test_non_contiguous_frame_is_written_in_order() -> None:
    with Ring.create(2) as ring:
        wide = np.arange(2 * FRAME_SAMPLES, dtype=np.float32)[::2]
        assert ring.write(wide)
        slot = ring.read(0)
        assert slot is not None and np.array_equal(slot.samples(), wide)
        del slot


@pytest.mark.parametrize("wake", WAKES)
def test_blocked_consumer_does_not_spin(wake: str) -> None:
    with Ring.create(2, wake=wake) as ring:  # type: ignore[arg-type]
        cpu = time.process_time()
        assert ring.read(0.3) is None
        # a spinning wait would burn ~0.3 s of CPU; a sleeping one next to nothing
        assert time.process_time() - cpu < 0.1


def test_handle_pickles_only_for_spawning() -> None:
    with Ring.create(2, wake="semaphore") as ring, pytest.raises(RuntimeError):
        # a semaphore (like a raw fd) only travels to a child being spawned
        pickle.dumps(ring.handle)


# --- two processes ------------------------------------------------------------------


def _producer(handle: RingHandle, n: int, gap: float) -> None:
    with Ring.attach(handle) as ring:
        k = 0
        while k < n:
            if ring.write(frame(k), seq=k, timestamp=time.monotonic_ns(), speaker=1):
                k += 1
            if gap:
                time.sleep(gap)
            elif k % 7 == 0:
                time.sleep(0.001)  # let the consumer fall behind sometimes: fill the ring


def _consumer(handle: RingHandle, n: int, conn: Connection) -> None:
    with Ring.attach(handle) as ring:
        seqs, ok = [], True
        for _ in range(n):
            slot = ring.read(10)
            if slot is None:
                break
            seqs.append(slot.seq)
            ok = ok and bool(np.array_equal(slot.samples(), frame(slot.seq)))
            ring.release()
        conn.send((seqs, ok))


@pytest.mark.parametrize("wake", WAKES)
def test_two_process_producer_child_no_loss_in_order(wake: str) -> None:
    n = 400
    with Ring.create(8, wake=wake) as ring:  # type: ignore[arg-type]
        p = CTX.Process(target=_producer, args=(ring.handle, n, 0.0))
        with joined(p):
            p.start()
            for k in range(n):
                slot = ring.read(10)
                assert slot is not None, f"timed out at {k}"
                assert slot.seq == k and slot.speaker == 1
                assert np.array_equal(slot.samples(), frame(k))
                ring.release()
        assert p.exitcode == 0
        assert ring.stats.written == n + 0 and ring.stats.read == n


def test_two_process_consumer_child() -> None:
    n = 200
    with Ring.create(4, label="cc") as ring:
        recv, send = CTX.Pipe(duplex=False)
        p = CTX.Process(target=_consumer, args=(ring.handle, n, send))
        with joined(p):
            p.start()
            k = 0
            while k < n:
                if ring.write(frame(k), seq=k):
                    k += 1
                else:
                    time.sleep(0.001)
            assert recv.poll(20)
            seqs, ok = recv.recv()
        assert seqs == list(range(n)) and ok
        assert p.exitcode == 0


def _block_forever(handle: RingHandle) -> None:
    with Ring.attach(handle) as ring:
        ring.read(None)


def test_sigkill_of_attached_consumer_leaves_segment_to_creator() -> None:
    with Ring.create(2, label="kill") as ring:
        p = CTX.Process(target=_block_forever, args=(ring.handle,))
        with joined(p):
            p.start()
            time.sleep(0.3)  # usually attached and blocked by now; either way is fine
            os.kill(p.pid or 0, signal.SIGKILL)
        assert p.exitcode == -signal.SIGKILL
        assert shm_exists(ring.name)  # the killed attacher unlinked nothing
        assert ring.write(frame(0))
    assert not shm_exists(ring.name)


def _create_and_exit(conn: Connection, fail: bool) -> None:
    with Ring.create(2, label="cx") as ring:
        conn.send(ring.name)
        if fail:
            raise RuntimeError("boom (expected by the test)")


@pytest.mark.parametrize("fail", [False, True])
def test_no_segment_left_after_creator_exits(fail: bool) -> None:
    recv, send = CTX.Pipe(duplex=False)
    p = CTX.Process(target=_create_and_exit, args=(send, fail))
    with joined(p):
        p.start()
        assert recv.poll(20)
        name = recv.recv()
    assert p.exitcode == (1 if fail else 0)
    assert not shm_exists(name)


@pytest.mark.parametrize("wake", ["eventfd", "semaphore"])
def test_no_resource_tracker_warnings_end_to_end(wake: str) -> None:
    # A fresh interpreter, so the resource tracker's own stderr is captured: attacher
    # exits normally, another is SIGKILLed, the creator exits through an exception.
    script = textwrap.dedent(
        """
        import multiprocessing as mp, os, signal, sys, time
        from pipeline.ipc.ring import Ring
        from tests.test_ring import _block_forever, _producer
        if __name__ == "__main__":
            ctx = mp.get_context("spawn")
            try:
                with Ring.create(4, label="rt", wake=sys.argv[1]) as ring:
                    print(ring.name, flush=True)
                    p = ctx.Process(target=_producer, args=(ring.handle, 3, 0.0))
                    p.start(); p.join(20)
                    assert ring.fill() == 3, ring.fill()
                    q = ctx.Process(target=_block_forever, args=(ring.handle,))
                    q.start(); time.sleep(0.5); os.kill(q.pid, signal.SIGKILL); q.join(20)
                    raise KeyError("expected")
            except KeyError:
                pass
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script, wake], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    name = out.stdout.strip()
    assert name.startswith("vc_rt_") and not shm_exists(name)
    assert "resource_tracker" not in out.stderr and "leaked" not in out.stderr, out.stderr
    assert "Warning" not in out.stderr, out.stderr


# --- state machine against a deque model --------------------------------------------


class RingModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.cap = 3
        self.ring = Ring.create(self.cap, slot_bytes=32, label="sm")
        self.model: deque[tuple[int, bytes]] = deque()
        self.dropped = 0
        self.seq = 0
        self.holding = False

    @rule(data=st.binary(min_size=0, max_size=32))
    def write(self, data: bytes) -> None:
        ok = self.ring.write(data, seq=self.seq)
        full = len(self.model) >= self.cap
        assert ok == (not full)
        if ok:
            self.model.append((self.seq, data))
        else:
            self.dropped += 1
        self.seq += 1

    @rule()
    def read(self) -> None:
        if self.holding:
            self.model.popleft()
            self.holding = False
        slot = self.ring.read(0)
        if not self.model:
            assert slot is None
            return
        assert slot is not None
        seq, data = self.model[0]
        assert (slot.seq, bytes(slot.data)) == (seq, data)
        self.holding = True

    @precondition(lambda self: self.holding)
    @rule()
    def release(self) -> None:
        self.ring.release()
        self.model.popleft()
        self.holding = False

    @rule(value=st.floats(-1, 1, width=32), n=st.integers(0, 8))
    def claim_publish(self, value: float, n: int) -> None:
        view = self.ring.claim()
        full = len(self.model) >= self.cap
        assert (view is None) == full
        if view is not None:
            view[:n] = value
            assert self.ring.publish(4 * n, seq=self.seq)
            self.model.append((self.seq, np.full(n, value, dtype=np.float32).tobytes()))
        del view
        self.seq += 1

    @invariant()
    def counters(self) -> None:
        s = self.ring.stats
        assert s.fill == len(self.model) == self.ring.fill()
        assert s.dropped == self.dropped

    def teardown(self) -> None:
        self.ring.close()
        self.ring.unlink()


TestRingModel = RingModel.TestCase
TestRingModel.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


def test_slots_carry_a_media_timestamp_beside_the_local_one() -> None:
    with Ring.create(4, 1276) as ring:
        assert ring.write(b"x", seq=1, timestamp=5, media=(1 << 64) - 1)
        slot = ring.read(0)
        assert slot is not None and (slot.timestamp, slot.media) == (5, (1 << 64) - 1)
        ring.release()
        frame_view = ring.claim()
        assert frame_view is not None
        assert ring.publish(4, seq=2, media=7)
        slot = ring.read(0)
        assert slot is not None and slot.media == 7 and slot.timestamp == 0
