"""Python's cyclic garbage collector, run on the Qt thread only.

A widget held in a reference cycle (signal connections to its own methods and lambdas
make one) is freed by the cyclic collector, and CPython runs that on whichever thread
happens to allocate past the threshold. The UI process has a second thread: the
client's bus broker (pipeline/ipc/bus.py) runs on one when this process owns the
Supervisor. A collection there would delete a Qt object off the thread that owns it,
which Qt does not survive (under pytest-xdist, whose worker has such a thread too, it
deleted a level meter while the main thread painted it). So the automatic collector is
turned off and this runs it from a timer on the Qt thread, generation by generation, as
the automatic one would have (the thresholds are Python's own): the approach of
pyqtgraph's ``GarbageCollector`` and calibre's.
"""

from __future__ import annotations

import gc

from PyQt6.QtCore import QObject, QTimer

CHECK_MS = 500  # how often the allocation counts are looked at


class MainThreadCollector(QObject):
    """While started, the cyclic collector runs only from this object's timer."""

    def __init__(self, parent: QObject | None = None, every_ms: int = CHECK_MS) -> None:
        super().__init__(parent)
        self._timer = QTimer(self)
        self._timer.setInterval(every_ms)
        self._timer.timeout.connect(self.check)
        self._was_enabled = False
        self.collections = [0, 0, 0]  # run so far, per generation

    def start(self) -> None:
        self._was_enabled = gc.isenabled()
        gc.disable()
        self._timer.start()

    def stop(self) -> None:
        """Hand collection back to Python (as it was before ``start``)."""
        self._timer.stop()
        if self._was_enabled:
            gc.enable()

    def check(self) -> int | None:
        """Collect the generation the counts call for, if any; which one, or None."""
        counts, thresholds = gc.get_count(), gc.get_threshold()
        if counts[0] <= thresholds[0]:
            return None
        generation = 0
        if counts[1] > thresholds[1]:
            generation = 2 if counts[2] > thresholds[2] else 1
        gc.collect(generation)
        self.collections[generation] += 1
        return generation
