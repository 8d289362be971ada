"""What every stage process runs inside: set-up, the bus, its rings, stats, tracers, teardown.

A stage's entry point is ``run(config)``; its body is one ``with StageRuntime(...)``
block that holds only what the stage does::

    def run(cfg: EncodeConfig) -> None:
        with StageRuntime("encode", cfg.wiring, hops=(...)) as rt:
            rt.on(ev.MuteCmd, lambda cmd: ...)
            while rt.running:
                slot = rt.inp.read(timeout=0.1)
                ...
                rt.poll()
                if rt.report_due(now):
                    rt.report(now, ev.EncodeStats(...))

Entering makes the process a well-behaved child (pipeline/ipc/child_process.py),
connects to the bus and attaches the rings, in that order; whatever was opened
is closed again if a later step fails, and on every way out of the block
(tracers saved, rings closed, bus closed). A ``quit`` command stops the stage
with its reason; any other event goes to the handler registered for its type,
and registering a handler subscribes to that event's topic.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, TypeVar

from pipeline.core.device_watch import DeviceWatch
from pipeline.ipc import events as ev
from pipeline.ipc.bus import BusAddress, BusClient
from pipeline.ipc.child_process import StopFlag, child_setup
from pipeline.ipc.heap import HeapTrimmer
from pipeline.ipc.ring import Ring, RingHandle
from pipeline.ipc.scheduling import NORMAL, Scheduling, raise_priority
from pipeline.media.sources import MediaError
from pipeline.stages.stats import STATS_INTERVAL, Latencies
from pipeline.stages.trace import Tracer

E = TypeVar("E", bound=ev.Event)


class SoundDevice(Protocol):
    """What serve_device needs of a device (pipeline/media/sound_device.py)."""

    KIND: str
    name: str
    callbacks: int

    @property
    def active(self) -> bool: ...

    def reopen(self) -> None: ...

    def idle(self) -> None: ...

    def close(self) -> None: ...


DEVICE_POLL = 0.25  # seconds between looks at the stop flag and the bus while a device runs
LOST_TICK = 0.02  # while it is lost: one frame's time, for the device's idle() pace


@dataclass(frozen=True, slots=True)
class Wiring:
    """Where a stage process plugs in: the bus, the rings it reads and writes, a trace folder.

    Built by the supervisor from the pipeline graph (pipeline/client/pipeline_graph.py);
    picklable, so it travels to the spawned process inside the stage's config.
    """

    bus: BusAddress
    inp: RingHandle | None = None
    out: RingHandle | None = None
    trace_dir: str | None = None
    restarted: bool = False  # this process replaces one that died: continue, do not begin
    state_dir: str | None = None  # the client's private folder (0700) for state to keep
    priority: str = NORMAL  # how the process asks to be scheduled (pipeline/ipc/scheduling.py)


class StageRuntime:
    """One stage process's resources and event loop helpers; a context manager."""

    def __init__(self, name: str, wiring: Wiring, hops: tuple[str, ...] = ()) -> None:
        self.name = name
        self.wiring = wiring
        self.latency = Latencies(hops)
        self._handlers: dict[type[ev.Event], Callable[[Any], None]] = {}
        self._stack = ExitStack()
        self._stop: StopFlag | None = None
        self._bus: BusClient | None = None
        self._inp: Ring | None = None
        self._out: Ring | None = None
        self._next_report = 0.0
        self._trimmer = HeapTrimmer(now=time.monotonic())  # at the stats pace (heap.py)
        self.scheduling = Scheduling(NORMAL, NORMAL, "")

    # --- life cycle ------------------------------------------------------------------

    def __enter__(self) -> StageRuntime:
        self._stop = child_setup(self.name)
        # Before the bus and the devices: the threads they start inherit it.
        self.scheduling = raise_priority(self.wiring.priority)
        try:
            self._bus = self._stack.enter_context(
                BusClient(self.wiring.bus, topics=(ev.QuitCmd.TOPIC,))
            )
            self._bus.join()  # what the stage tells from its first moment is heard
            if self.wiring.inp is not None:
                self._inp = self._attach(self.wiring.inp)
            if self.wiring.out is not None:
                self._out = self._attach(self.wiring.out)
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop.set("closing")  # a helper thread of the stage sees it too
        self._stack.close()

    def _attach(self, handle: RingHandle) -> Ring:
        ring = Ring.attach(handle)
        self._stack.callback(ring.close)
        return ring

    def on_close(self, callback: Callable[[], object]) -> None:
        """Call ``callback`` on the way out, before the rings and the bus close (LIFO)."""
        self._stack.callback(callback)

    # --- what a stage uses -------------------------------------------------------------

    @property
    def stop(self) -> StopFlag:
        assert self._stop is not None, "use the runtime inside its with block"
        return self._stop

    @property
    def bus(self) -> BusClient:
        assert self._bus is not None, "use the runtime inside its with block"
        return self._bus

    @property
    def inp(self) -> Ring:
        """The ring this stage reads (its graph entry must name one)."""
        assert self._inp is not None, f"the {self.name} stage reads no ring"
        return self._inp

    @property
    def out(self) -> Ring:
        """The ring this stage writes (its graph entry must name one)."""
        assert self._out is not None, f"the {self.name} stage writes no ring"
        return self._out

    @property
    def running(self) -> bool:
        """False once a quit command, SIGTERM or the supervisor's death stopped the stage."""
        return not self.stop.check_parent()

    def tracer(self, filename: str, columns: int) -> Tracer:
        """A per-frame tracer writing ``filename`` in the trace folder (off without one)."""
        trace_dir = self.wiring.trace_dir
        tracer = Tracer(os.path.join(trace_dir, filename) if trace_dir else None, columns)
        self._stack.callback(tracer.save)
        return tracer

    # --- commands and events -------------------------------------------------------------

    def on(self, kind: type[E], handler: Callable[[E], None]) -> None:
        """Call ``handler`` for every event of type ``kind``, and subscribe to its topic."""
        self._handlers[kind] = handler
        self.bus.subscribe(kind.TOPIC)

    def dispatch(self, event: ev.Event) -> None:
        if isinstance(event, ev.QuitCmd):
            self.stop.set(event.reason or "quit")
            return
        handler = self._handlers.get(type(event))
        if handler is not None:
            handler(event)

    def poll(self, timeout: float = 0.0) -> None:
        """Handle the events waiting on the bus (waiting up to ``timeout`` s for the first)."""
        for event in self.bus.poll(timeout):
            self.dispatch(event)

    def sleep(self, seconds: float) -> None:
        """Sleep up to ``seconds`` (less once the stage is stopped), then handle bus events."""
        self.stop.wait(seconds)
        self.poll(0)

    def serve_device(self, device: SoundDevice, stats: Callable[[], ev.StageReport]) -> None:
        """While a sound device's callback does the stage's work: handle the bus, report
        ``stats()`` at the stats pace and watch the stream, until the stage is stopped.

        A stream that stops or stops calling back is reported lost (a DeviceStatus and
        a Notice, in words) and reopened with backoff until it opens again, which is
        reported too (pipeline/core/device_watch.py); meanwhile ``device.idle()`` runs
        every 20 ms (a speaker drops the frame it would have played, so the stages
        before it keep their pace and no backlog plays late). The device's status goes out
        with every stats report, so a view that joins late still learns it.
        """
        watch = DeviceWatch()
        status = ev.DeviceStatus(device.KIND, ev.DEVICE_OPEN, device.name)
        self.publish(status)
        watch.opened(time.monotonic(), device.callbacks)
        while self.running:
            self.sleep(LOST_TICK if watch.lost else DEVICE_POLL)
            now = time.monotonic()
            if watch.lost:
                device.idle()  # keeps the pipeline's pace while the device is away
            reason = watch.check(now, device.callbacks, device.active)
            if reason is not None:
                device.close()
                status = ev.DeviceStatus(device.KIND, ev.DEVICE_LOST, device.name, reason)
                self.publish(status)
                self.publish(ev.Notice(status.words))
            if watch.due(now):
                since = watch.lost_since or now
                try:
                    device.reopen()
                except MediaError:
                    watch.failed(now)
                    status = dataclasses.replace(status, attempt=watch.attempt)
                else:
                    watch.opened(time.monotonic(), device.callbacks)
                    status = ev.DeviceStatus(device.KIND, ev.DEVICE_OPEN, device.name)
                    self.publish(ev.Notice(f"{status.words} (back after {now - since:.1f} s)"))
            if self.report_due(now):
                self.report(now, stats())
                self.publish(status)

    def wait(self, fds: tuple[int, ...], timeout: float) -> set[int]:
        """Sleep until the bus or one of ``fds`` is readable; handle bus events; return the fds."""
        ready = self.bus.wait(fds, timeout)
        self.poll(0)
        return ready

    def publish(self, event: ev.Event) -> None:
        self.bus.publish(event)

    # --- stats -----------------------------------------------------------------------------

    def report_due(self, now: float) -> bool:
        """Whether the stage's stats are due (monotonic seconds)."""
        return now >= self._next_report

    def report(self, now: float, stats: ev.StageReport) -> None:
        """Publish the stage's stats, with its latency windows and rings filled in.

        The ring figures come from the rings' shared headers, so they are the same
        words for every stage and survive a restart of the stage.
        """
        self._next_report = now + STATS_INTERVAL
        self._trimmer.tick(now)
        ring = self._inp or self._out
        self.bus.publish(
            dataclasses.replace(
                stats,
                latency=self.latency.summary(),
                ring_fill=ring.fill() if ring is not None else 0,
                ring_dropped=self._out.stats.dropped if self._out is not None else 0,
                priority=self.scheduling.words,
                priority_short=self.scheduling.short,
            )
        )
