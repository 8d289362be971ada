"""pipeline/stages/stats.py: latency windows and the per-hop summary of a stage."""

from __future__ import annotations

import threading

import pytest

from pipeline.ipc import events as ev
from pipeline.stages.stats import Latencies, LatencyWindow


def test_latency_window_percentiles_in_ms() -> None:
    w = LatencyWindow(size=100)
    assert w.summary("x") is None
    for i in range(1, 201):  # wraps: only the last 100 count
        w.add(i * 1_000_000)
    s = w.summary("x")
    assert s is not None and s.hop == "x" and s.n == 200
    assert 149 <= s.p50 <= 151 and 198 <= s.p99 <= 200


def test_latencies_report_only_hops_with_samples_in_declared_order() -> None:
    lat = Latencies((ev.HOP_ENCODE, ev.HOP_CAPTURE_TO_ENCODE))
    assert lat.summary() == []
    lat.add(ev.HOP_CAPTURE_TO_ENCODE, 2_000_000)
    lat.add(ev.HOP_ENCODE, 1_000_000)
    assert [(p.hop, p.p50, p.n) for p in lat.summary()] == [
        (ev.HOP_ENCODE, 1.0, 1),
        (ev.HOP_CAPTURE_TO_ENCODE, 2.0, 1),
    ]
    with pytest.raises(KeyError):  # an undeclared hop is a bug in the stage
        lat.add("nowhere", 1)


def test_latencies_summarise_while_another_thread_adds() -> None:
    lat = Latencies((ev.HOP_ENCODE_TO_NETWORK,))
    done = threading.Event()

    def add() -> None:
        for i in range(20_000):
            lat.add(ev.HOP_ENCODE_TO_NETWORK, i)
        done.set()

    t = threading.Thread(target=add)
    t.start()
    while not done.is_set():
        lat.summary()
    t.join()
    assert lat.summary()[0].n == 20_000


def test_a_sample_outside_int64_is_clamped_not_fatal() -> None:
    w = LatencyWindow(size=4)
    w.add(2**64 + 5)
    w.add(-(2**70))
    s = w.summary("x")
    assert s is not None and s.n == 2
