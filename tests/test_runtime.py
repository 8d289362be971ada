"""pipeline/stages/runtime.py: the shell every stage process runs inside.

In-process tests replace child_setup (which would install signal handlers in
pytest itself) with a plain stop flag; one test runs a real spawned stage.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.queues
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.ipc import events as ev
from pipeline.ipc.bus import Broker, BusClient
from pipeline.ipc.child_process import StopFlag
from pipeline.ipc.ring import Ring, RingHandle
from pipeline.stages import runtime
from pipeline.stages.runtime import StageRuntime, Wiring


@pytest.fixture
def no_child_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "child_setup", lambda name: StopFlag(os.getppid()))


@pytest.fixture
def broker() -> Any:
    with Broker() as b:
        yield b


def missing_ring() -> RingHandle:
    return RingHandle("vc_missing_ring_for_test", 4, 3840, "newest", "eventfd", ())


def until(pred: Any, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.02)
    raise AssertionError("timed out")


def test_a_ring_that_cannot_be_attached_closes_the_bus_again(
    no_child_setup: None, broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed: list[BusClient] = []
    real_close = BusClient.close

    def close(self: BusClient) -> None:
        closed.append(self)
        real_close(self)

    monkeypatch.setattr(BusClient, "close", close)
    with Ring.create(4) as out, pytest.raises(FileNotFoundError):  # noqa: SIM117
        with StageRuntime("t", Wiring(broker.address, out=out.handle, inp=missing_ring())):
            pass
    assert len(closed) == 1


def test_quit_keeps_its_reason_and_handlers_get_their_events(
    no_child_setup: None, broker: Broker
) -> None:
    with StageRuntime("t", Wiring(broker.address)) as rt, BusClient(broker.address) as pub:
        chats: list[str] = []
        rt.on(ev.ChatCmd, lambda cmd: chats.append(cmd.text))
        rt.dispatch(ev.JoinCmd("x"))  # no handler: ignored
        end = time.monotonic() + 5
        while not chats and time.monotonic() < end:
            pub.publish(ev.ChatCmd("hi"))  # repeated: the subscription takes a moment
            rt.poll(0.1)
        assert chats and set(chats) == {"hi"} and rt.running
        rt.dispatch(ev.QuitCmd("user closed the window"))
        assert not rt.running and rt.stop.reason == "user closed the window"


def test_an_empty_quit_reason_reads_quit(no_child_setup: None, broker: Broker) -> None:
    with StageRuntime("t", Wiring(broker.address)) as rt:
        rt.dispatch(ev.QuitCmd(""))
        assert rt.stop.reason == "quit"


def test_report_fills_in_the_latency_windows_and_paces_itself(
    no_child_setup: None, broker: Broker
) -> None:
    with (
        BusClient(broker.address, (ev.PlaybackStats.TOPIC,)) as sub,
        StageRuntime("t", Wiring(broker.address), (ev.HOP_ARRIVAL_TO_EAR,)) as rt,
    ):
        rt.latency.add(ev.HOP_ARRIVAL_TO_EAR, 5_000_000)
        assert rt.report_due(100.0)
        got: list[ev.Event] = []
        end = time.monotonic() + 5
        while not got and time.monotonic() < end:
            rt.report(100.0, ev.PlaybackStats(frames=3))
            got = sub.poll(0.1)
        assert not rt.report_due(100.1) and rt.report_due(100.5)
    (stats,) = got[:1]
    assert isinstance(stats, ev.PlaybackStats) and stats.frames == 3
    m2e = stats.hop(ev.HOP_ARRIVAL_TO_EAR)
    assert m2e is not None and m2e.p50 == 5.0 and m2e.n == 1


def test_tracers_are_saved_and_rings_closed_on_an_exception(
    no_child_setup: None, broker: Broker, tmp_path: Path
) -> None:
    with Ring.create(4) as ring:
        wiring = Wiring(broker.address, inp=ring.handle, trace_dir=str(tmp_path))
        with pytest.raises(RuntimeError, match="boom"):  # noqa: SIM117
            with StageRuntime("t", wiring) as rt:
                attached = rt.inp
                rt.tracer("t.npy", 2).add(1, 2)
                raise RuntimeError("boom")
        assert attached.closed
        assert np.load(tmp_path / "t.npy").tolist() == [[1, 2]]
        assert not rt.running  # the stop flag is set for any helper thread


@dataclass(frozen=True)
class _EchoConfig:
    wiring: Wiring
    result: multiprocessing.queues.Queue[str]


def _echo_stage(cfg: _EchoConfig) -> None:
    """A stage that copies its input ring to its output ring and answers chat with a notice."""
    with StageRuntime("echo", cfg.wiring) as rt:
        rt.on(ev.ChatCmd, lambda cmd: rt.publish(ev.Notice(f"echo {cmd.text}")))
        while rt.running:
            slot = rt.inp.read(timeout=0.05)
            if slot is not None:
                rt.out.write(slot.data, seq=slot.seq, timestamp=slot.timestamp)
                rt.inp.release()
            rt.poll()
    cfg.result.put(rt.stop.reason)


def test_a_spawned_stage_moves_frames_answers_commands_and_quits_with_the_reason(
    broker: Broker,
) -> None:
    ctx = multiprocessing.get_context("spawn")
    result: multiprocessing.queues.Queue[str] = ctx.Queue()
    with (
        Ring.create(4) as inp,
        Ring.create(4) as out,
        BusClient(broker.address, (ev.Notice.TOPIC,)) as bus,
    ):
        cfg = _EchoConfig(Wiring(broker.address, inp.handle, out.handle), result)
        proc = ctx.Process(target=_echo_stage, args=(cfg,), daemon=True)
        proc.start()
        try:
            frame = np.arange(960, dtype=np.float32)
            assert inp.write(frame, seq=7, timestamp=11)
            slot = out.read(timeout=20)
            assert slot is not None and slot.seq == 7 and slot.timestamp == 11
            assert np.array_equal(slot.samples(), frame)
            out.release()
            notices: list[ev.Event] = []
            end = time.monotonic() + 10
            while not notices and time.monotonic() < end:
                bus.publish(ev.ChatCmd("ping"))
                notices = bus.poll(0.2)
            assert notices[0] == ev.Notice("echo ping")
            bus.publish(ev.QuitCmd("test over"))
            assert result.get(timeout=10) == "test over"
            proc.join(10)
            assert proc.exitcode == 0
        finally:
            if proc.is_alive():
                proc.kill()
                proc.join(5)


def _stage_nice(address: Any, name: str, user: int | None, q: Any) -> None:
    if user is not None:
        os.setuid(user)  # an ordinary user: no privilege to lower its nice value
    with StageRuntime(name, Wiring(address)) as rt:
        q.put((rt.nice, os.getpriority(os.PRIO_PROCESS, 0)))


def stage_nice(broker: Broker, name: str, user: int | None = None) -> tuple[int | None, int]:
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_stage_nice, args=(broker.address, name, user, q))
    p.start()
    try:
        got: tuple[int | None, int] = q.get(timeout=30)
    finally:
        p.join(10)
    return got


@pytest.mark.skipif(os.geteuid() != 0, reason="lowering a nice value needs the privilege")
def test_the_voice_path_stages_ask_for_a_higher_priority(broker: Broker) -> None:
    """A stage on the voice path runs at nice AUDIO_NICE where it may (as here, as root),
    others as they were started; one that may not runs as it was, and says so."""
    start = os.getpriority(os.PRIO_PROCESS, 0)
    assert stage_nice(broker, "decode") == (runtime.AUDIO_NICE, runtime.AUDIO_NICE)
    assert stage_nice(broker, "control") == (None, start)
    assert stage_nice(broker, "capture", user=65534) == (start, start)
