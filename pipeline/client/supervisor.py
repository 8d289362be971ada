"""The supervisor: owns the bus broker and the rings, starts the six processes, watches them.

A stage that dies is restarted with the same rings (their indices live in
shared memory, so the stream goes on); one that keeps dying (more than
MAX_RESTARTS within RESTART_WINDOW seconds) shuts the client down with the
reason. stop() asks every process to quit over the bus, then terminates and
kills what is left, and unlinks every ring on every path out.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import multiprocessing.connection
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from types import TracebackType
from typing import Any

from pipeline.client.config import ClientConfig
from pipeline.client.pipeline_graph import (
    RINGS,
    STAGES,
    RingSpec,
    StageSpec,
    check_config,
    check_graph,
)
from pipeline.ipc import events as ev
from pipeline.ipc.bus import Broker, BusAddress, BusClient
from pipeline.ipc.heap import HeapTrimmer
from pipeline.ipc.ring import Ring
from pipeline.ipc.scheduling import NORMAL
from pipeline.stages.runtime import Wiring

MAX_RESTARTS = 3
RESTART_WINDOW = 30.0
STOP_GRACE = 2.0  # seconds a process gets to quit on its own before SIGTERM, then SIGKILL
log = logging.getLogger("supervisor")


@dataclass
class _Child:
    spec: StageSpec
    config: Any  # the stage's frozen config, pickled into the process at every (re)start
    process: BaseProcess | None = None
    restarts: list[float] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.spec.name


class ClientFailed(RuntimeError):
    """A stage kept dying; the message says which and how."""


class Supervisor:
    def __init__(self, cfg: ClientConfig) -> None:
        self.cfg = cfg
        self._ctx = multiprocessing.get_context("spawn")
        self._rings: list[Ring] = []
        self._children: list[_Child] = []
        self.broker: Broker | None = None
        self.state_dir: str | None = None  # private (0700) folder the stages keep state in
        self.failure = ""
        self._restart_counts: dict[str, int] = {}
        # The broker's I/O threads carry every bus message: their freed buffers are
        # handed back to the system now and then, or RSS creeps up (pipeline/ipc/heap.py).
        self._trimmer = HeapTrimmer(now=time.monotonic())

    def start(self, on_broker: Callable[[BusAddress], None] | None = None) -> None:
        """Start the broker, then every stage. ``on_broker(address)`` runs in between: a
        listener that subscribes there hears the stages' first events too (a notice made
        as the first connection comes up is published once, and would be missed)."""
        try:
            self._start(on_broker)
        except BaseException:
            self.stop()
            raise

    def _start(self, on_broker: Callable[[BusAddress], None] | None) -> None:
        cfg = self.cfg
        check_graph(RINGS, STAGES)
        check_config(cfg)
        self.broker = Broker()
        if on_broker is not None:
            on_broker(self.broker.address)
        self.state_dir = tempfile.mkdtemp(prefix="vc-client-")
        rings = {spec.name: self._ring(spec) for spec in RINGS}

        def handle(name: str | None) -> Any:
            return None if name is None else rings[name].handle

        for spec in STAGES:
            wiring = Wiring(
                self.broker.address,
                handle(spec.reads),
                handle(spec.writes),
                cfg.trace_dir,
                state_dir=self.state_dir,
                priority=cfg.priority if spec.on_audio_path else NORMAL,
            )
            self._children.append(_Child(spec, spec.configure(wiring, cfg)))
        for child in self._children:
            self._spawn(child)

    def _ring(self, spec: RingSpec) -> Ring:
        ring = Ring.create(spec.slots, spec.slot_bytes, label=spec.name)
        self._rings.append(ring)
        return ring

    def _spawn(self, child: _Child) -> None:
        child.process = self._ctx.Process(
            target=child.spec.run, args=(child.config,), name=f"vc-{child.name}", daemon=True
        )
        child.process.start()

    @property
    def pids(self) -> dict[str, int]:
        return {c.name: c.process.pid for c in self._children if c.process and c.process.pid}

    def check(self, timeout: float = 0.0) -> None:
        """Wait up to ``timeout`` for a child to die; restart it, or raise ClientFailed.

        Also hands this process's free C heap back to the system, now and then."""
        self._trimmer.tick(time.monotonic())
        live = {c.process.sentinel: c for c in self._children if c.process is not None}
        if not live:
            return
        for sentinel in multiprocessing.connection.wait(list(live), timeout):
            child = live[sentinel]  # type: ignore[index]
            assert child.process is not None
            child.process.join(0)
            code = child.process.exitcode
            now = time.monotonic()
            child.restarts = [t for t in child.restarts if now - t < RESTART_WINDOW]
            if len(child.restarts) >= MAX_RESTARTS:
                self.failure = (
                    f"the {child.name} stage died {len(child.restarts) + 1} times in "
                    f"{RESTART_WINDOW:.0f} s (last exit code {code})"
                )
                raise ClientFailed(self.failure)
            log.warning("%s stage exited with code %s; restarting it", child.name, code)
            child.restarts.append(now)
            if not child.config.wiring.restarted:  # from now on it continues, not begins
                wiring = dataclasses.replace(child.config.wiring, restarted=True)
                child.config = dataclasses.replace(child.config, wiring=wiring)
            self._restart_counts[child.name] = self._restart_counts.get(child.name, 0) + 1
            self._spawn(child)

    @property
    def restart_counts(self) -> dict[str, int]:
        """Restarts per stage since start (kept after stop())."""
        return dict(self._restart_counts)

    def stop(self) -> None:
        """Stop every process (asked, then terminated, then killed) and unlink every ring."""
        try:
            if self.broker is not None and self._children:
                with BusClient(self.broker.address) as bus:
                    # The quit command may be missed by a process that subscribed late;
                    # SIGTERM after the grace period covers it.
                    time.sleep(0.05)
                    bus.publish(ev.QuitCmd("client stopping"))
            procs = [c.process for c in self._children if c.process is not None]
            deadline = time.monotonic() + STOP_GRACE
            for proc in procs:
                proc.join(max(0.0, deadline - time.monotonic()))
            for proc in procs:
                if proc.is_alive():
                    proc.terminate()
            for proc in procs:
                proc.join(1.0)
                if proc.is_alive():
                    proc.kill()
                    proc.join(1.0)
            self._children = []
        finally:
            for ring in self._rings:
                ring.close()
                ring.unlink()
            self._rings = []
            if self.broker is not None:
                self.broker.close()
                self.broker = None
            if self.state_dir is not None:
                shutil.rmtree(self.state_dir, ignore_errors=True)
                self.state_dir = None

    def __enter__(self) -> Supervisor:
        self.start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
