"""A whole client run inside this process, with a view of its bus: for tests and benchmarks.

The CLI and the desktop UI drive a Supervisor their own way; this is the small
common shape the test suite and the benchmarks need: start, wait for a state,
let time pass while the supervisor restarts what dies, stop.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType

from pipeline.client.config import ClientConfig
from pipeline.client.supervisor import Supervisor
from pipeline.core.client_view import ClientView
from pipeline.ipc import events as ev
from pipeline.ipc.bus import BusAddress, BusClient


class LocalClient:
    def __init__(self, cfg: ClientConfig) -> None:
        self.sup = Supervisor(cfg)
        self.view = ClientView()
        self._bus: BusClient | None = None

    def start(self) -> LocalClient:
        def listen(address: BusAddress) -> None:
            self._bus = BusClient(address, topics=("",))  # before any stage can publish

        try:
            self.sup.start(on_broker=listen)
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def bus(self) -> BusClient:
        assert self._bus is not None, "start() first"
        return self._bus

    def pump(self, seconds: float) -> None:
        """Let ``seconds`` pass, folding every bus event into the view."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self.sup.check(0)
            for event in self.bus.poll(min(left, 0.1)):
                self.view.apply(event)

    def until(self, predicate: Callable[[ClientView], bool], timeout: float, what: str) -> None:
        """Pump until ``predicate(view)`` holds; AssertionError naming ``what`` on timeout."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.pump(0.1)
            if predicate(self.view):
                return
        raise AssertionError(f"timed out waiting for {what}; status: {self.view.status_line()}")

    def command(
        self, cmd: ev.Event, done: Callable[[ClientView], bool], timeout: float = 10.0
    ) -> None:
        """Publish ``cmd`` until ``done(view)`` shows its effect.

        Bus commands are fire-and-forget, and a freshly connected publisher can lose its
        first messages (ZeroMQ's slow joiner), so the command is repeated twice a second.
        """
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.bus.publish(cmd)
            self.pump(0.5)
            if done(self.view):
                return
        raise AssertionError(f"{cmd} had no effect within {timeout:.0f} s")

    def stop(self) -> None:
        if self._bus is not None:
            self._bus.close()
            self._bus = None
        self.sup.stop()

    def __enter__(self) -> LocalClient:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def connected(view: ClientView) -> bool:
    """Connected to the relay with a session the network stage can use."""
    return view.state.state == ev.CONNECTED and view.endpoint is not None
