"""The UI process as the client's owner: runs the Supervisor and watches it from the event loop.

Supervisor.check() is called every 200 ms from a QTimer (never blocking: a
zero timeout), so a dead stage is restarted; a client that keeps failing is
stopped and its reason reported. Changing the input or output device restarts
the whole client with a new ClientConfig: the stages take their source and
sink at start, and a fresh client (new rings, new bus) is the simplest state
that is certainly correct. The relay sees a clean leave and a new join.
"""

from __future__ import annotations

import dataclasses
import logging

from PyQt6.QtCore import QObject, QTimer, pyqtSignal

from pipeline.client.config import ClientConfig
from pipeline.client.supervisor import ClientFailed, Supervisor
from pipeline.media.sound_device import check_device
from pipeline.media.sources import MediaError, MediaSpec, parse_input, parse_output

CHECK_MS = 200
log = logging.getLogger("ui.host")


def spec_text(spec: MediaSpec) -> str:
    """The --input/--output string of a spec (the device pickers' item data)."""
    if spec.kind == "wav":
        return spec.arg
    return f"{spec.kind}:{spec.arg}" if spec.arg else spec.kind


def parse_media(text: str, kind: str) -> MediaSpec:
    """An input or output choice as a spec, checked; MediaError says what is wrong."""
    spec = parse_input(text) if kind == "input" else parse_output(text)
    if spec.is_device:
        check_device(spec, kind)
    return spec


class ClientHost(QObject):
    started = pyqtSignal(object)  # the new client's BusAddress
    failed = pyqtSignal(str)  # the client stopped for good; the reason

    def __init__(self, cfg: ClientConfig, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.cfg = cfg
        self.supervisor: Supervisor | None = None
        self._timer = QTimer(self)
        self._timer.setInterval(CHECK_MS)
        self._timer.timeout.connect(self.check)

    @property
    def running(self) -> bool:
        return self.supervisor is not None

    def start(self) -> None:
        """Start the client; on failure everything started is stopped and ``failed`` emitted."""
        sup = Supervisor(self.cfg)
        try:
            # The window listens before the stages start: it hears their first notices.
            sup.start(on_broker=self.started.emit)
        except Exception as exc:  # start() has already cleaned up after itself
            log.exception("client did not start")
            self.failed.emit(f"the client did not start: {exc}")
            return
        self.supervisor = sup
        self._timer.start()

    def check(self) -> None:
        if self.supervisor is None:
            return
        try:
            self.supervisor.check(0)
        except ClientFailed as exc:
            self.stop()
            self.failed.emit(str(exc))

    def restart(self, **changes: object) -> None:
        """Stop the client and start it again with these ClientConfig fields changed."""
        self.stop()
        self.cfg = dataclasses.replace(self.cfg, **changes)  # type: ignore[arg-type]
        self.start()

    def configure(self, **changes: object) -> None:
        """Change these ClientConfig fields for the next start, without starting."""
        self.cfg = dataclasses.replace(self.cfg, **changes)  # type: ignore[arg-type]

    def change_media(self, kind: str, text: str, **keep: object) -> str:
        """Restart with a new input or output (a stopped client only takes it for its next
        start); returns "" or why it was refused (the client goes on as it was)."""
        try:
            spec = parse_media(text, kind)
        except MediaError as exc:
            return str(exc)
        changes = {"source" if kind == "input" else "sink": spec, **keep}
        if self.running:
            self.restart(**changes)
        else:
            self.configure(**changes)
        return ""

    @property
    def source_text(self) -> str:
        return spec_text(self.cfg.source)

    @property
    def sink_text(self) -> str:
        return spec_text(self.cfg.sink)

    def stop(self) -> None:
        """Stop every process and unlink every ring; safe to call twice."""
        self._timer.stop()
        sup, self.supervisor = self.supervisor, None
        if sup is not None:
            sup.stop()
