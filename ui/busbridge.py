"""The UI's only link to the rest of the client: the ZeroMQ bus, turned into a Qt signal.

The SUB socket's notification fd drives a QSocketNotifier, so the UI thread
reads the bus only when something is there and never blocks on it. ZeroMQ's
fd is edge-triggered: one activation may stand for many messages, and it does
not fire again until the socket has been drained, so every wake-up reads until
``has_pending()`` is false. A 100 ms timer drains too, in case an edge is
missed (it costs one getsockopt when idle).
"""

from __future__ import annotations

from PyQt6 import sip
from PyQt6.QtCore import QObject, QSocketNotifier, QTimer, pyqtSignal

from pipeline.ipc import events as ev
from pipeline.ipc.bus import BusAddress, BusClient

FALLBACK_MS = 100
MAX_PER_DRAIN = 500  # events handled per wake-up before yielding to the event loop


class BusBridge(QObject):
    """Subscribes to every topic of one client's bus; emits ``received`` once per event."""

    received = pyqtSignal(object)  # one pipeline.ipc.events.Event

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._client: BusClient | None = None
        self._notifier: QSocketNotifier | None = None
        self._timer = QTimer(self)
        self._timer.setInterval(FALLBACK_MS)
        self._timer.timeout.connect(self.drain)
        self.address: BusAddress | None = None

    @property
    def attached(self) -> bool:
        return self._client is not None

    def attach(self, address: BusAddress) -> None:
        """Listen to the bus at ``address`` (detaching from any previous one)."""
        self.detach()
        self.address = address
        self._client = BusClient(address, topics=("",))
        self._notifier = QSocketNotifier(
            sip.voidptr(self._client.fd), QSocketNotifier.Type.Read, self
        )
        self._notifier.activated.connect(self.drain)
        self._timer.start()
        # Messages may already be queued, and their edge gone before the notifier existed.
        QTimer.singleShot(0, self.drain)

    def detach(self) -> None:
        self._timer.stop()
        if self._notifier is not None:
            self._notifier.setEnabled(False)
            self._notifier.deleteLater()
            self._notifier = None
        if self._client is not None:
            self._client.close()
            self._client = None
        self.address = None

    def publish(self, event: ev.Event) -> None:
        """Send a command; never blocks (dropped, like any bus message, if the queue is full)."""
        if self._client is not None:
            self._client.publish(event)

    @property
    def dropped(self) -> int:
        """Bus messages that did not decode (counted by the client)."""
        return self._client.dropped if self._client is not None else 0

    def drain(self) -> None:
        """Read and emit everything queued, up to MAX_PER_DRAIN; never waits."""
        client = self._client
        if client is None:
            return
        handled = 0
        while client.has_pending() and handled < MAX_PER_DRAIN:
            for event in client.poll(0):
                handled += 1
                self.received.emit(event)
                if self._client is not client:  # a slot detached or re-attached us
                    return
        if handled >= MAX_PER_DRAIN and client.has_pending():
            QTimer.singleShot(0, self.drain)

    def close(self) -> None:
        self.detach()
