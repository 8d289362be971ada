"""The cyclic collector runs on the Qt thread only (ui/main_thread_gc.py)."""

from __future__ import annotations

import gc
import threading
import weakref

from PyQt6.QtWidgets import QWidget
from pytestqt.qtbot import QtBot

from ui.main_thread_gc import MainThreadCollector


class _Cyclic(QWidget):
    def __init__(self) -> None:
        super().__init__()
        self.me = self  # a reference cycle: only the cyclic collector frees it


def test_start_turns_the_automatic_collector_off_and_stop_gives_it_back(qtbot: QtBot) -> None:
    gc.enable()
    try:
        collector = MainThreadCollector()
        collector.start()
        assert not gc.isenabled()
        collector.stop()
        assert gc.isenabled()
    finally:
        gc.disable()  # as the test runner keeps it during a Qt test (tests/conftest.py)


def test_a_widget_in_a_cycle_is_freed_by_the_timer_not_by_another_thread(qtbot: QtBot) -> None:
    gc.enable()
    collector = MainThreadCollector(every_ms=20)
    collector.start()
    try:
        widget = _Cyclic()
        freed = weakref.ref(widget)
        del widget
        busy = threading.Thread(target=lambda: [[[]] for _ in range(50_000)])
        busy.start()  # allocates far past every threshold, off the Qt thread
        busy.join()
        assert freed() is not None  # nothing collected there
        # the counts ask for a run
        held: list[list[int]] = [[] for _ in range(gc.get_threshold()[0] + 1)]
        qtbot.waitUntil(lambda: freed() is None, timeout=2000)
        assert sum(collector.collections) >= 1
        del held
    finally:
        collector.stop()
        gc.disable()


def test_check_collects_nothing_below_the_threshold_and_the_generation_the_counts_ask(
    qtbot: QtBot,
) -> None:
    collector = MainThreadCollector()
    gc.collect()
    assert collector.check() is None  # just collected: the counts are low
    held: list[list[int]] = [[] for _ in range(gc.get_threshold()[0] + 1)]
    assert collector.check() == 0
    assert collector.collections[0] == 1
    del held
