"""pipeline/ipc/bus.py: the broker forwards by topic prefix, drops bad messages, cleans up."""

from __future__ import annotations

import os
import time
from pathlib import Path

import zmq

from pipeline.ipc import events as ev
from pipeline.ipc.bus import Broker, BusClient


def settle(sub: BusClient, pub: BusClient) -> None:
    """Wait until the subscription has reached the broker (ZeroMQ's slow-joiner window)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        pub.publish(ev.Notice("probe"))
        if sub.poll(0.05):
            return
    raise AssertionError("subscription never propagated")


def first(client: BusClient, kind: type[ev.Event], timeout: float = 5) -> ev.Event | None:
    """The first event of ``kind`` that ``client`` polls within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        for event in client.poll(left):
            if isinstance(event, kind):
                return event
    return None


def test_topics_reach_only_their_subscribers() -> None:
    with (
        Broker() as broker,
        BusClient(broker.address, ("cmd.", "notice")) as a,
        BusClient(broker.address, ("stats", "notice")) as b,
    ):
        settle(a, b)
        settle(b, a)
        b.publish(ev.ChaosCmd(5))
        a.publish(ev.DecodeStats(loss_percent=1.0))
        assert first(a, ev.ChaosCmd) == ev.ChaosCmd(5)
        assert first(b, ev.DecodeStats) == ev.DecodeStats(loss_percent=1.0)
        b.publish(ev.EncodeStats())
        assert not [e for e in a.poll(0.2) if isinstance(e, ev.StageReport)]


def test_bad_message_is_counted_and_dropped() -> None:
    with Broker() as broker, BusClient(broker.address, ("cmd.", "notice")) as sub:
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        raw = ctx.socket(zmq.PUB)
        raw.connect(broker.address.publish)
        with BusClient(broker.address) as pub:
            settle(sub, pub)
        try:
            raw.send_multipart([b"cmd.join", b"\xc1"])
            raw.send_multipart([b"cmd.join", b"\x81\xa7channel\xa1L"])
            got = first(sub, ev.JoinCmd)
        finally:
            raw.close(0)
        assert got == ev.JoinCmd("L")
        assert sub.dropped == 1


def test_wait_reports_ready_fds() -> None:
    r, w = os.pipe()
    try:
        with Broker() as broker, BusClient(broker.address) as c:
            assert c.wait((r,), 0.05) == set()
            os.write(w, b"x")
            assert c.wait((r,), 5) == {r}
            assert c.wait((r,), 0) == {r}  # the kept poller, same fds
            assert c.wait((), 0.01) == set()  # other fds: a new poller
    finally:
        os.close(r)
        os.close(w)


def test_close_removes_ipc_files() -> None:
    broker = Broker()
    path = Path(broker.address.publish.removeprefix("ipc://")).parent
    assert path.exists()
    broker.close()
    assert not path.exists()


def test_what_a_joined_client_sends_first_is_heard_and_probes_are_no_events() -> None:
    """A PUB socket drops what it sends before the broker told it who subscribes: after
    join(), a one-off event sent at once reaches a subscriber that was there first, and
    the probes are neither events nor "dropped" for a subscriber to everything."""
    with Broker() as broker, BusClient(broker.address, ("",)) as everything:
        settle(everything, everything)
        everything.poll(0.1)
        for i in range(10):
            with BusClient(broker.address, (ev.QuitCmd.TOPIC,)) as stage:
                assert stage.join()
                stage.publish(ev.Notice(f"first words {i}"))
            notice = first(everything, ev.Notice)
            assert isinstance(notice, ev.Notice) and notice.text == f"first words {i}"
        assert everything.dropped == 0


def test_events_that_come_while_joining_are_kept() -> None:
    with (
        Broker() as broker,
        BusClient(broker.address, ("",)) as other,
        BusClient(broker.address, (ev.QuitCmd.TOPIC,)) as stage,
    ):
        deadline = time.monotonic() + 5
        got: list[ev.QuitCmd] = []
        while time.monotonic() < deadline and not got:
            other.publish(ev.QuitCmd("early"))
            stage.join(0.05)  # a quit that comes while it waits for its probe is kept
            got = [e for e in stage.poll(0) if isinstance(e, ev.QuitCmd)]
        assert got and got[0].reason == "early"
