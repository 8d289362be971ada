"""The bus bridge against a real in-process broker: events become signals, commands go out."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pytestqt.qtbot import QtBot

from pipeline.ipc import events as ev
from pipeline.ipc.bus import Broker, BusClient
from ui.busbridge import BusBridge


@pytest.fixture
def broker() -> Iterator[Broker]:
    with Broker() as b:
        yield b


@pytest.fixture
def bridge(broker: Broker) -> Iterator[BusBridge]:
    b = BusBridge()
    b.attach(broker.address)
    yield b
    b.close()


def _publish_until(qtbot: QtBot, pub: BusClient, event: ev.Event, got: list[ev.Event]) -> None:
    # A new subscription takes a moment to reach the broker (ZeroMQ's slow joiner):
    # publish until the first copy arrives.
    def arrived() -> bool:
        if not got:
            pub.publish(event)
        return bool(got)

    qtbot.waitUntil(arrived, timeout=5000)


def test_events_arrive_as_signals(qtbot: QtBot, broker: Broker, bridge: BusBridge) -> None:
    got: list[ev.Event] = []
    bridge.received.connect(got.append)
    with BusClient(broker.address) as pub:
        _publish_until(qtbot, pub, ev.Notice("hello"), got)
        got.clear()
        sent = [ev.ChatLine(i, "bob", "Lobby", f"line {i}", 1.0) for i in range(150)]
        for event in sent:
            pub.publish(event)
        qtbot.waitUntil(lambda: len(got) >= len(sent), timeout=5000)
    assert [e for e in got if isinstance(e, ev.ChatLine)] == sent


def test_publish_reaches_other_processes(qtbot: QtBot, broker: Broker, bridge: BusBridge) -> None:
    with BusClient(broker.address, topics=("cmd.",)) as sub:
        received: list[ev.Event] = []

        def arrived() -> bool:
            bridge.publish(ev.ChaosCmd(12.5))
            received.extend(sub.poll(0.05))
            return bool(received)

        qtbot.waitUntil(arrived, timeout=5000)
    assert received[0] == ev.ChaosCmd(12.5)


def test_detach_stops_events_and_publish_is_a_no_op(qtbot: QtBot, broker: Broker) -> None:
    bridge = BusBridge()
    got: list[ev.Event] = []
    bridge.received.connect(got.append)
    bridge.publish(ev.MuteCmd(True))  # not attached: nothing happens, nothing raises
    bridge.attach(broker.address)
    with BusClient(broker.address) as pub:
        _publish_until(qtbot, pub, ev.Notice("x"), got)
        bridge.detach()
        assert not bridge.attached
        count = len(got)
        pub.publish(ev.Notice("after detach"))
        qtbot.wait(200)
    assert len(got) == count
    bridge.close()


def test_reattach_follows_a_new_broker(qtbot: QtBot, bridge: BusBridge) -> None:
    got: list[ev.Event] = []
    bridge.received.connect(got.append)
    with Broker() as other, BusClient(other.address) as pub:
        bridge.attach(other.address)
        assert bridge.address == other.address
        _publish_until(qtbot, pub, ev.Notice("from the new client"), got)
    assert got[0] == ev.Notice("from the new client")
    bridge.detach()


def test_the_socket_notifier_alone_delivers(
    qtbot: QtBot, broker: Broker, bridge: BusBridge
) -> None:
    bridge._timer.stop()  # no fallback polling: only the fd's activations drain the socket
    got: list[ev.Event] = []
    bridge.received.connect(got.append)
    with BusClient(broker.address) as pub:
        _publish_until(qtbot, pub, ev.Notice("first"), got)
        for round_ in range(3):  # edge-triggered: each burst must re-arm the notifier
            got.clear()
            for i in range(20):
                pub.publish(ev.InputLevel(float(i + round_)))
            qtbot.waitUntil(
                lambda: sum(isinstance(e, ev.InputLevel) for e in got) == 20, timeout=5000
            )
