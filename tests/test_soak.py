"""Soak: the memory of a whole call and of a loaded relay over half an hour (``make soak``).

This file tests no single module: it runs real processes end to end. Two headless
clients (``python -m pipeline``, seven processes each) talk through a real relay,
and separately 60 talkers load a relay through bench/relay_load.py's generator.
Every process's RSS is sampled; after the first minute (imports, buffers and the
allocator's arenas settling) none may grow by more than 1 MiB, and the relay's
open file descriptors may not grow at all. ``SOAK_MINUTES`` (default 30) sets the
length of each run; everything stops by itself and stays on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from bench.relay_load import (
    FRAME_RATE,
    TALKERS_PER_CHANNEL,
    RelayUnderTest,
    _connect_talkers,
    run_phase,
)
from pipeline.client.pipeline_graph import STAGES
from relay.probe import ProbeClient
from tests.conftest import RelayProcess

MINUTES = float(os.environ.get("SOAK_MINUTES", "30"))
WARMUP = 60.0  # seconds before the baseline sample
SAMPLE_EVERY = 5.0
MAX_GROWTH_KIB = 1024
TALKERS = 60
ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.soak, pytest.mark.timeout(int(MINUTES * 60) + 300)]


def rss_kib(pid: int) -> int | None:
    """VmRSS of ``pid`` in KiB, None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def children_of(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        if ppid == pid:
            out.append(int(entry))
    return sorted(out)


def stage_pids(cli: int) -> dict[str, int]:
    """The client's children by name: multiprocessing's resource tracker, and the stages,
    which the supervisor spawns one after the other in STAGES order (so in pid order)."""
    named, stages = {}, []
    for pid in children_of(cli):
        with open(f"/proc/{pid}/cmdline") as f:
            tracker = "resource_tracker" in f.read()
        if tracker:
            named["resource_tracker"] = pid
        else:
            stages.append(pid)
    assert len(stages) == len(STAGES), f"expected {len(STAGES)} stages, found {stages}"
    named.update(zip((spec.name for spec in STAGES), stages, strict=True))
    return named


class Samples:
    """RSS (and any other figure) per named process over time; growth after WARMUP."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.series: dict[str, list[tuple[float, int]]] = {}

    def add(self, name: str, value: int | None) -> None:
        if value is not None:
            self.series.setdefault(name, []).append((time.monotonic() - self.t0, value))

    def growth(self) -> dict[str, int]:
        """Per process: the highest value after WARMUP minus the value at WARMUP."""
        out = {}
        for name, points in self.series.items():
            later = [v for t, v in points if t >= WARMUP]
            if later:
                out[name] = max(later) - later[0]
        return out

    def table(self) -> str:
        rows = []
        for name, points in self.series.items():
            marks = [_nearest(points, t) for t in (60.0, 300.0, 600.0)]
            rows.append(f"{name:20s} " + " ".join(f"{v:8d}" for v in [*marks, points[-1][1]]))
        return f"{'process':20s} at 1 min, 5 min, 10 min, end (KiB)\n" + "\n".join(rows)


def _nearest(points: list[tuple[float, int]], t: float) -> int:
    return min(points, key=lambda p: abs(p[0] - t))[1]


def _client(port: int, name: str, stats: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", "--server", f"127.0.0.1:{port}", "--name", name,
         "--input", "speech", "--output", "null", "--duration", str(MINUTES * 60),
         "--quiet", "--stats-json", str(stats)],
        cwd=ROOT,
    )  # fmt: skip


def test_client_call_memory_flat(relay: RelayProcess, tmp_path: Path) -> None:
    _, port = relay
    clients = {who: _client(port, who, tmp_path / f"{who}.json") for who in ("a", "b")}
    samples = Samples()
    try:
        time.sleep(10)  # every stage started
        procs = {f"{who}.cli": p.pid for who, p in clients.items()}
        for who, p in clients.items():
            procs.update({f"{who}.{name}": pid for name, pid in stage_pids(p.pid).items()})
        while all(p.poll() is None for p in clients.values()):
            for name, pid in procs.items():
                samples.add(name, rss_kib(pid))
            time.sleep(SAMPLE_EVERY)
        codes = {who: p.wait(30) for who, p in clients.items()}
    finally:
        for p in clients.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    print(samples.table())
    assert codes == {"a": 0, "b": 0}
    for who in clients:
        summary = json.loads((tmp_path / f"{who}.json").read_text())
        assert summary["restarts"] == {}, f"{who}: a stage restarted; the samples are not its"
        assert summary["stats"]["network"]["received"] > MINUTES * 60 * 40, f"{who} heard little"
    grew = {k: v for k, v in samples.growth().items() if v > MAX_GROWTH_KIB}
    assert not grew, f"grew by more than {MAX_GROWTH_KIB} KiB after minute 1 (KiB): {grew}"


def test_relay_memory_and_fds_flat() -> None:
    duration = MINUTES * 60
    with tempfile.TemporaryDirectory() as tmp:
        # The relay as deployed: protocol 2, every datagram authenticated.
        relay = RelayUnderTest(TALKERS // TALKERS_PER_CHANNEL, "sealed", Path(tmp) / "log", None)
        clients: list[ProbeClient] = []
        result: dict[str, Any] = {}
        errors: list[BaseException] = []

        def load() -> None:
            try:
                result.update(
                    run_phase(relay, clients, duration, TALKERS * FRAME_RATE, None, sample=10)
                )
            except BaseException as exc:
                errors.append(exc)

        try:
            clients = _connect_talkers(relay)
            pid = relay.proc.pid
            samples = Samples()
            thread = threading.Thread(target=load, name="relay-load")
            thread.start()
            while thread.is_alive():
                samples.add("relay.rss", rss_kib(pid))
                samples.add("relay.fds", len(os.listdir(f"/proc/{pid}/fd")))
                thread.join(SAMPLE_EVERY)
        finally:
            for c in clients:
                c.close()
            relay.close()
    print(samples.table())
    assert not errors, errors
    assert result["forwarded_per_s"] > 0.9 * TALKERS * FRAME_RATE * (TALKERS_PER_CHANNEL - 1)
    growth = samples.growth()
    assert growth["relay.rss"] <= MAX_GROWTH_KIB, f"relay RSS grew {growth['relay.rss']} KiB"
    assert growth["relay.fds"] == 0, f"relay opened {growth['relay.fds']} more descriptors"
