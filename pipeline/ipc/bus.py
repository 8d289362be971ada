"""The client's ZeroMQ bus: one XSUB/XPUB broker, and a thin client for every process.

Publishers connect to the broker's XSUB side, subscribers to its XPUB side;
the broker forwards every message to every subscriber of its topic prefix.
Queues are bounded (SNDHWM/RCVHWM): a stats flood or a stuck subscriber
loses messages instead of memory.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import zmq

from pipeline.ipc.events import BusError, Event, decode, encode

HWM = 200  # messages queued per socket before ZeroMQ drops: seconds of stats, not minutes
# The topic of join()'s probes: no event's (theirs are type names), skipped by every poll.
JOIN_TOPIC = b"\x00join"
JOIN_RESEND = 0.01  # seconds between probes while joining


@dataclass(frozen=True, slots=True)
class BusAddress:
    """The broker's two endpoints; picklable, handed to every process."""

    publish: str  # where publishers connect (the broker's XSUB)
    subscribe: str  # where subscribers connect (the broker's XPUB)


class Broker:
    """The XSUB/XPUB proxy, run on a thread of the process that owns it (the supervisor)."""

    def __init__(self, directory: str | None = None) -> None:
        self._dir = Path(directory or tempfile.mkdtemp(prefix="vc-bus-"))
        self._own_dir = directory is None
        self.address = BusAddress(
            publish=f"ipc://{self._dir}/pub", subscribe=f"ipc://{self._dir}/sub"
        )
        self._ctx = zmq.Context()
        self._control = f"inproc://broker-control-{id(self)}"
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="bus-broker", daemon=True)
        self._thread.start()
        self._ready.wait(5)
        if self._error is not None:
            raise RuntimeError(f"bus broker failed to start: {self._error}") from self._error

    def _run(self) -> None:
        xsub = self._ctx.socket(zmq.XSUB)
        xpub = self._ctx.socket(zmq.XPUB)
        control = self._ctx.socket(zmq.PAIR)
        try:
            for sock in (xsub, xpub):
                sock.setsockopt(zmq.SNDHWM, HWM * 10)
                sock.setsockopt(zmq.RCVHWM, HWM * 10)
                sock.setsockopt(zmq.LINGER, 0)
            control.setsockopt(zmq.LINGER, 0)
            xsub.bind(self.address.publish)
            xpub.bind(self.address.subscribe)
            control.bind(self._control)
        except zmq.ZMQError as exc:
            self._error = exc
            self._ready.set()
            for sock in (xsub, xpub, control):
                sock.close()
            return
        self._ready.set()
        try:
            zmq.proxy_steerable(xsub, xpub, None, control)
        except zmq.ContextTerminated:
            pass
        finally:
            for sock in (xsub, xpub, control):
                sock.close(0)

    def close(self) -> None:
        """Stop the proxy thread and remove the ipc socket files."""
        if self._thread.is_alive():
            ctl = self._ctx.socket(zmq.PAIR)
            ctl.setsockopt(zmq.LINGER, 0)
            ctl.connect(self._control)
            ctl.send(b"TERMINATE")
            self._thread.join(5)
            ctl.close(0)
        self._ctx.term()
        if self._own_dir:
            shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Broker:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class BusClient:
    """One process's view of the bus: publish events, receive those it subscribed to.

    Not thread-safe (ZeroMQ sockets never are): one client per thread.
    """

    def __init__(self, address: BusAddress, topics: tuple[str, ...] = ()) -> None:
        self._ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self._pub = self._ctx.socket(zmq.PUB)
        self._pub.setsockopt(zmq.SNDHWM, HWM)
        self._pub.setsockopt(zmq.LINGER, 200)  # give a last event (quit, final stats) a chance
        self._pub.connect(address.publish)
        self._sub = self._ctx.socket(zmq.SUB)
        self._sub.setsockopt(zmq.RCVHWM, HWM)
        self._sub.setsockopt(zmq.LINGER, 0)
        self._sub.connect(address.subscribe)
        for topic in topics:
            self.subscribe(topic)
        self._poller = zmq.Poller()
        self._poller.register(self._sub, zmq.POLLIN)
        # wait() is called on every wake-up of a stage loop (each datagram of the network
        # stage): its poller is kept while the fds stay the same, not rebuilt per call.
        self._wait_fds: tuple[int, ...] | None = None
        self._wait_poller = zmq.Poller()
        self.dropped = 0  # messages that did not decode
        self._early: list[list[bytes]] = []  # events that came while joining

    def join(self, timeout: float = 2.0) -> bool:
        """Wait until what this client publishes reaches subscribers: a PUB socket drops
        what it sends before the broker has told it who subscribes, so a one-off event
        sent just after start (a notice: "pinned the certificate") was lost under load.
        Sends probes on a topic of its own until one comes back (the broker tells a new
        publisher every subscription it holds when it connects, so with ours come those
        made before). False after ``timeout`` s without one; events meanwhile are kept."""
        probe = JOIN_TOPIC + f"-{id(self)}-{threading.get_ident()}".encode()
        self._sub.setsockopt(zmq.SUBSCRIBE, probe)
        end = time.monotonic() + timeout
        try:
            while time.monotonic() < end:
                with contextlib.suppress(zmq.Again):
                    self._pub.send_multipart([probe, b""], flags=zmq.NOBLOCK)
                if not self._poller.poll(int(JOIN_RESEND * 1000)):
                    continue
                while self.has_pending():
                    frames = self._sub.recv_multipart(flags=zmq.NOBLOCK)
                    if frames[0] == probe:
                        return True
                    if not frames[0].startswith(JOIN_TOPIC):
                        self._early.append(frames)
            return False
        finally:
            self._sub.setsockopt(zmq.UNSUBSCRIBE, probe)

    def subscribe(self, topic_prefix: str) -> None:
        self._sub.setsockopt(zmq.SUBSCRIBE, topic_prefix.encode("ascii"))

    def publish(self, event: Event) -> None:
        """Never blocks: with the queue full the event is dropped (ZeroMQ PUB semantics)."""
        with contextlib.suppress(zmq.Again):
            self._pub.send_multipart(encode(event), flags=zmq.NOBLOCK)

    def poll(self, timeout: float = 0.0) -> list[Event]:
        """Wait up to ``timeout`` seconds for events; return all that are queued."""
        out: list[Event] = []
        early, self._early = self._early, []
        for frames in early:
            self._decode_into(frames, out)
        if (out or not self._poller.poll(int(timeout * 1000))) and not self.has_pending():
            return out
        # Drain while ZMQ_EVENTS says a message is queued, rather than until recv raises
        # zmq.Again: that exception (with its traceback and message) was garbage made on
        # every call, several times a second in every process.
        while self.has_pending():
            self._decode_into(self._sub.recv_multipart(flags=zmq.NOBLOCK), out)
        return out

    def _decode_into(self, frames: list[bytes], out: list[Event]) -> None:
        if frames and frames[0].startswith(JOIN_TOPIC):
            return  # another client's probe (a subscriber to everything gets them)
        try:
            out.append(decode(frames))
        except BusError:
            self.dropped += 1

    def wait(self, fds: tuple[int, ...], timeout: float) -> set[int]:
        """Block until the bus or one of ``fds`` is readable, or ``timeout`` seconds pass.

        Returns the readable fds among ``fds``; call poll(0) afterwards for bus events.
        """
        if self._early:  # kept while joining: poll(0) has them now
            return set()
        if fds != self._wait_fds:
            self._wait_poller = zmq.Poller()
            self._wait_poller.register(self._sub, zmq.POLLIN)
            for fd in fds:
                self._wait_poller.register(fd, zmq.POLLIN)
            self._wait_fds = fds
        ready = self._wait_poller.poll(max(0, int(timeout * 1000)))
        return {s for s, _ in ready if isinstance(s, int)}

    @property
    def fd(self) -> int:
        """The SUB socket's edge-triggered notification fd (for QSocketNotifier/select)."""
        return int(self._sub.getsockopt(zmq.FD))

    def has_pending(self) -> bool:
        return bool(int(self._sub.getsockopt(zmq.EVENTS)) & zmq.POLLIN)

    def close(self) -> None:
        self._sub.close(0)
        self._pub.close()

    def __enter__(self) -> BusClient:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
