"""One 960-float frame between two processes: the ring against its alternatives.

Transports, each in the same run, consumer in a spawned process, producer here:

* ``ring-eventfd``, ``ring-pipe``, ``ring-semaphore``: pipeline.ipc.ring with each wake-up;
* ``mp-queue``: ``multiprocessing.Queue(maxsize=8)`` carrying ``(t, ndarray)``;
* ``zmq-ipc``: a ZeroMQ PUSH/PULL pair over ``ipc://``, HWM 8, 8-byte time + frame.

Latency: the producer stamps ``time.monotonic_ns()`` (one clock for both processes)
just before handing the frame over; the consumer subtracts it on receipt. Frames go
at 20 ms spacing (the real rate) and at 2 ms (a loaded pipeline); the first frames are
warm-up and not counted. Consumer CPU % is its process time over wall time in the
measured phase. Throughput: frames as fast as the transport takes them, frames/s seen
by the consumer.

    python -m bench.ring_ipc [--quick] [--out DIR]
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue
import struct
import tempfile
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import parser, summarize, write_result
from pipeline.ipc.ring import Ring
from pipeline.media.audio_format import FRAME_SAMPLES

CTX = multiprocessing.get_context("spawn")
WARMUP = 10
DEPTH = 8  # ring slots, queue maxsize, ZeroMQ high-water marks
T = struct.Struct("<q")
TRANSPORTS = ["ring-eventfd", "ring-pipe", "ring-semaphore", "mp-queue", "zmq-ipc"]


# --- consumer side (runs in the spawned process) ------------------------------------


def _receiver(kind: str, target: Any) -> tuple[Callable[[], int | None], Callable[[], None]]:
    """A function returning the send time of the next frame (None on a 5 s timeout)."""
    if kind.startswith("ring"):
        ring = Ring.attach(target)

        def recv_ring() -> int | None:
            slot = ring.read(5.0)
            if slot is None:
                return None
            s = slot.samples()
            _ = s[0]  # touch the frame, as a stage would
            t = slot.timestamp
            ring.release()
            return t

        return recv_ring, ring.close
    if kind == "mp-queue":
        q = target

        def recv_queue() -> int | None:
            try:
                t, frame = q.get(timeout=5.0)
            except queue.Empty:
                return None
            _ = frame[0]
            return int(t)

        return recv_queue, lambda: None
    import zmq

    zctx = zmq.Context()
    sock = zctx.socket(zmq.PULL)
    sock.setsockopt(zmq.RCVHWM, DEPTH)
    sock.setsockopt(zmq.RCVTIMEO, 5000)
    sock.bind(target)

    def recv_zmq() -> int | None:
        try:
            msg = sock.recv(copy=True)
        except zmq.Again:
            return None
        frame = np.frombuffer(msg, dtype=np.float32, offset=T.size)
        _ = frame[0]
        return int(T.unpack_from(msg)[0])

    def close_zmq() -> None:
        sock.close(linger=0)
        zctx.term()

    return recv_zmq, close_zmq


def _consume(kind: str, target: Any, phases: list[int], warmup: int, conn: Connection) -> None:
    """Receive ``warmup + n`` frames for each n in ``phases``, reporting after each."""
    recv, close = _receiver(kind, target)
    try:
        conn.send("ready")
        for n in phases:
            conn.send(_measure(recv, warmup + n, warmup))
    finally:
        close()


def _measure(recv: Callable[[], int | None], total: int, warmup: int) -> dict[str, Any]:
    lat: list[float] = []
    got = 0
    wall0 = cpu0 = 0.0
    first = last = 0
    while got < total:
        t = recv()
        if t is None:
            break
        now = time.monotonic_ns()
        got += 1
        if got == warmup:
            wall0, cpu0 = time.monotonic(), time.process_time()
            first = now
        elif got > warmup:
            lat.append((now - t) / 1000.0)
            last = now
    wall = time.monotonic() - wall0
    cpu = time.process_time() - cpu0
    return {
        "lat_us": lat,
        "cpu_percent": 100.0 * cpu / wall if wall > 0 else 0.0,
        "frames_per_s": (got - warmup) / ((last - first) / 1e9) if last > first else 0.0,
        "received": got - warmup,
    }


# --- producer side ------------------------------------------------------------------


@contextlib.contextmanager
def _sender(kind: str) -> Iterator[tuple[Any, Callable[[np.ndarray, bool], None]]]:
    """(what the consumer needs, send(frame, wait_if_full))."""
    if kind.startswith("ring"):
        wake = kind.split("-", 1)[1]
        with Ring.create(DEPTH, label="bench", wake=wake) as ring:  # type: ignore[arg-type]

            def send_ring(frame: np.ndarray, wait: bool) -> None:
                while not ring.write(frame, timestamp=time.monotonic_ns()) and wait:
                    time.sleep(0)

            yield ring.handle, send_ring
        return
    if kind == "mp-queue":
        q: Any = CTX.Queue(maxsize=DEPTH)

        def send_queue(frame: np.ndarray, wait: bool) -> None:
            q.put((time.monotonic_ns(), frame))

        try:
            yield q, send_queue
        finally:
            q.close()
            q.join_thread()
        return
    import zmq

    path = os.path.join(tempfile.gettempdir(), f"vc_bench_{os.getpid()}.ipc")
    endpoint = f"ipc://{path}"
    zctx = zmq.Context()
    sock = zctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.SNDHWM, DEPTH)

    def send_zmq(frame: np.ndarray, wait: bool) -> None:
        sock.send(T.pack(time.monotonic_ns()) + frame.tobytes())

    try:
        yield (endpoint, sock), send_zmq
    finally:
        sock.close(linger=0)
        zctx.term()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def run_transport(
    kind: str, phases: list[tuple[str, int, float | None]], warmup: int
) -> dict[str, Any]:
    """One consumer process for all phases: (name, frames, spacing s or None = flat out)."""
    frame = np.random.default_rng(0).standard_normal(FRAME_SAMPLES).astype(np.float32)
    out: dict[str, Any] = {}
    with _sender(kind) as (target, send):
        sock = None
        if kind == "zmq-ipc":
            target, sock = target
        recv_end, send_end = CTX.Pipe(duplex=False)
        counts = [n for _, n, _ in phases]
        p = CTX.Process(target=_consume, args=(kind, target, counts, warmup, send_end))
        p.start()
        try:
            if not recv_end.poll(30):
                raise RuntimeError(f"{kind} consumer did not start")
            recv_end.recv()
            if sock is not None:
                sock.connect(target)
            for name, n, spacing in phases:
                nxt = time.monotonic()
                for _ in range(warmup + n):
                    if spacing is not None:
                        nxt += spacing
                        delay = nxt - time.monotonic()
                        if delay > 0:
                            time.sleep(delay)
                    send(frame, True)
                if not recv_end.poll(60):
                    raise RuntimeError(f"{kind} consumer did not report")
                res: dict[str, Any] = recv_end.recv()
                out[name] = {"latency_us": summarize(res.pop("lat_us")), **res}
        finally:
            p.join(30)
            if p.is_alive():
                p.kill()
                p.join(5)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = parser(__doc__.splitlines()[0] if __doc__ else "ring_ipc")
    args = ap.parse_args(argv)
    n_slow, n_fast, n_burst = (5, 20, 200) if args.quick else (500, 2500, 20000)
    warmup = 2 if args.quick else WARMUP
    phases = [
        ("spacing_20ms", n_slow, 0.020),
        ("spacing_2ms", n_fast, 0.002),
        ("burst", n_burst, None),
    ]
    results: dict[str, Any] = {}
    for kind in TRANSPORTS:
        results[kind] = run_transport(kind, phases, warmup)
        print_row(kind, results[kind])
    doc = {"quick": args.quick, "warmup": warmup, "depth": DEPTH, "results": results}
    path = write_result("ring_ipc", doc, Path(args.out))
    print(f"wrote {path}")
    return results


def print_row(kind: str, r: dict[str, Any]) -> None:
    def cell(key: str) -> str:
        lat = r[key]["latency_us"]
        return f"{lat['p50']:7.0f} {lat['p99']:7.0f} {lat['max']:7.0f}"

    slow, fast = r["spacing_20ms"], r["spacing_2ms"]
    print(
        f"{kind:15s} 20ms p50/p99/max {cell('spacing_20ms')} cpu {slow['cpu_percent']:4.1f}%"
        f" | 2ms {cell('spacing_2ms')} cpu {fast['cpu_percent']:4.1f}%"
        f" | burst {r['burst']['frames_per_s']:8.0f} frames/s",
        flush=True,
    )


if __name__ == "__main__":
    main()
