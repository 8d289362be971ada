"""The graph's one-minute history and its axis scales; the QPainter drawing itself."""

from __future__ import annotations

from pytestqt.qtbot import QtBot

from ui.graph import History, LossJitterGraph


def test_history_keeps_the_last_minute_and_scales() -> None:
    h = History(window=60)
    for i in range(200):
        h.add(i * 0.5, loss=float(i % 7), depth=float(i % 6))
    assert h.latest() == 99.5
    assert all(99.5 - t <= 60 for t, _, _ in h.samples)
    assert h.loss_scale() == 10.0
    assert h.depth_scale() == 8.0
    h.add(100, 70.0, 1)
    assert h.loss_scale() == 100.0
    assert History().loss_scale() == 5.0 and History().depth_scale() == 4.0


def test_graph_paints(qtbot: QtBot) -> None:
    h = History()
    for i in range(120):
        h.add(i * 0.5, i % 10, i % 4)
    graph = LossJitterGraph(h)
    qtbot.addWidget(graph)
    graph.resize(360, 130)
    image = graph.grab().toImage()
    assert image.width() == 360
    colors = {image.pixel(x, y) for x in range(0, 360, 3) for y in range(0, 130, 3)}
    assert len(colors) > 3  # grid, two lines and labels were drawn
