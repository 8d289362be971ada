"""relay/metrics.py: the collector on a made-up snapshot, and /metrics of a real relay in a call."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request

from prometheus_client import CollectorRegistry, generate_latest

from relay.metrics import RelayCollector, Snapshot
from relay.probe import ProbeClient
from relay.router import Counters
from relay.udp import SERVICE_BOUNDS_NS
from tests.test_relay_server import HOST, start_relay, stop_relay


def snapshot(**over: object) -> Snapshot:
    values: dict[str, object] = {
        "datagrams": Counters(voice_in=5, forwarded=9, drop_short=2, register=1).as_dict(),
        "sessions": 3,
        "connections": 2,
        "members": {"Lobby": 2, "AFK": 1},
        "messages": {"auth": 3, "join": 1},
        "auth_failures": {"banned": 1},
        "refused": {"server_full": 0},
        "evicted": 0,
        "bans": 1,
        "service": ([1, 2] + [0] * (len(SERVICE_BOUNDS_NS) - 1), 5_000, 3),
        "service_bounds_ns": SERVICE_BOUNDS_NS,
    }
    values |= over
    return Snapshot(**values)  # type: ignore[arg-type]


def exposition(snap: Snapshot) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RelayCollector(lambda: snap))
    return generate_latest(registry).decode()


def value(text: str, sample: str) -> float:
    m = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.M)
    assert m is not None, f"no {sample} in:\n{text}"
    return float(m.group(1))


def test_the_counters_become_families_by_kind_and_reason() -> None:
    text = exposition(snapshot())
    assert value(text, 'voicechat_relay_datagrams_total{kind="voice"}') == 5
    assert value(text, 'voicechat_relay_datagrams_total{kind="register"}') == 1
    assert value(text, 'voicechat_relay_dropped_total{reason="short"}') == 2
    assert value(text, "voicechat_relay_forwarded_total") == 9
    assert value(text, "voicechat_relay_sessions") == 3
    assert value(text, 'voicechat_relay_channel_members{channel="AFK"}') == 1
    assert value(text, 'voicechat_relay_control_messages_total{type="auth"}') == 3
    assert value(text, 'voicechat_relay_auth_failures_total{code="banned"}') == 1
    assert value(text, 'voicechat_relay_udp_service_seconds_bucket{le="1e-06"}') == 1
    assert value(text, 'voicechat_relay_udp_service_seconds_bucket{le="2e-06"}') == 3
    assert value(text, 'voicechat_relay_udp_service_seconds_bucket{le="+Inf"}') == 3
    assert value(text, "voicechat_relay_udp_service_seconds_count") == 3
    assert value(text, "voicechat_relay_udp_service_seconds_sum") == 5e-06


def test_without_the_loop_histogram_there_is_no_histogram() -> None:
    assert "udp_service_seconds" not in exposition(snapshot(service=None, service_bounds_ns=()))


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read().decode()


def test_metrics_over_http_rise_during_a_call_with_two_clients() -> None:
    relay = start_relay("--metrics", f"{HOST}:0", "--log-level", "info")
    try:
        url = None
        deadline = time.monotonic() + 10
        while url is None and time.monotonic() < deadline:
            relay.log.seek(0)
            m = re.search(r"metrics on (http://\S+/metrics)", relay.log.read())
            url = m.group(1) if m else None
            time.sleep(0.05)
        assert url is not None
        alice, bob = ProbeClient(HOST, relay.port), ProbeClient(HOST, relay.port)
        for c, name in ((alice, "alice"), (bob, "bob")):
            c.auth(name)
            c.register()
        before = scrape(url)
        assert value(before, "voicechat_relay_sessions") == 2
        stop = threading.Event()

        def talk() -> None:
            seq = 0
            while not stop.wait(0.005):
                seq += 1
                alice.send_voice(seq, b"x" * 40)

        talker = threading.Thread(target=talk, daemon=True)
        talker.start()
        try:
            assert bob.recv_voice(3.0) is not None
            time.sleep(1.0)
            mid = scrape(url)
            time.sleep(0.5)
            after = scrape(url)
        finally:
            stop.set()
            talker.join(2)
        voice = 'voicechat_relay_datagrams_total{kind="voice"}'
        assert value(before, voice) < value(mid, voice) < value(after, voice)
        fwd = "voicechat_relay_forwarded_total"
        assert value(before, fwd) < value(mid, fwd) < value(after, fwd)
        assert value(after, "voicechat_relay_udp_service_seconds_count") > 0  # sampled
        assert value(after, 'voicechat_relay_control_messages_total{type="auth"}') == 2
        assert value(after, 'voicechat_relay_channel_members{channel="Lobby"}') == 2
        assert "process_cpu_seconds_total" in after
        alice.close()
        bob.close()
    finally:
        stop_relay(relay)


def test_no_metrics_endpoint_unless_asked() -> None:
    relay = start_relay()
    try:
        relay.log.seek(0)
        assert "metrics on" not in relay.log.read()
    finally:
        stop_relay(relay)


def test_a_metrics_port_in_use_stops_start_up_with_one_line() -> None:
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "relay",
                "--host",
                HOST,
                "--port",
                "0",
                "--metrics",
                f"{HOST}:{port}",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("voicechat-relay: cannot start:")
