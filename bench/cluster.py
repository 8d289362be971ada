"""The relay cluster (docs/cluster.md) on loopback: the hop, the cost, and Redis's load.

Everything in one run, against a private ``redis-server`` and real relays
(``python -m relay --cluster``), with the probe clients of relay/probe.py speaking
protocol 2 (TLS, sealed voice):

1. **Hop latency**: one datagram every 20 ms from a speaker to a listener on the
   same relay (one hop: client -> relay -> client) and to a listener on another
   relay of the cluster (two hops: client -> relay A -> relay B -> client); each
   datagram reaches both, and the one timed takes turns, so both see the same
   machine. Send to receive, in microseconds; the
   difference of the two is what the relay-to-relay hop adds.
2. **Forwarding cost**: one channel of ``USERS`` users, ``TALKERS`` of them talking at
   50 datagrams/s each, all on one relay, then spread evenly over three relays.
   Delivered datagrams (the relays' ``forwarded`` counters) per CPU-second of
   all the relays together (/proc), in the same run.
3. **Redis's load**: commands Redis processed (``INFO stats``) and its CPU, per
   session that joins (auth, a channel move, a leave) and per idle second of the
   three relays (heartbeats and registry reads); events published and delivered
   (each event reaches every relay: pub/sub fan-out). What a 100-relay cluster
   would ask of Redis is extrapolated from these in the report.

    python -m bench.cluster [--quick] [--out DIR]
"""

from __future__ import annotations

import os
import re
import signal
import socket
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

from bench.common import parser, summarize, write_result
from relay import cluster_core as cc
from relay import launch
from relay.probe import ProbeClient
from relay.protocol.messages import Bye, Join, UserJoined

HOST = "127.0.0.1"
SECRET = "the benchmark's cluster secret, long enough"
USERS = 12
TALKERS = 6
RATE = 50.0  # datagrams/s per talker: one Opus frame per 20 ms
PAYLOAD = b"\x55" * 76  # as bench/relay_load.py: a 32 kb/s frame
TICK = os.sysconf("SC_CLK_TCK")
HEARTBEAT_S = cc.HEARTBEAT  # each relay reads the registry once a heartbeat


class Node:
    """One relay of the cluster under measurement."""

    def __init__(self, url: str, secret_file: str) -> None:
        self.log: IO[str] = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed in stop)
        self.proc, self.port = launch.start_relay(
            "--cluster", url, "--cluster-secret-file", secret_file, "--stats-interval", "3600",
            host=HOST, log=self.log,
        )  # fmt: skip

    def cpu(self) -> float:
        """CPU seconds (user and system) the relay has used."""
        return _cpu(self.proc.pid)

    def counters(self) -> dict[str, int]:
        """The relay's counters now (SIGUSR1 makes it log them)."""
        before = self._lines()
        self.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            lines = self._lines()
            if len(lines) > len(before):
                return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", lines[-1])}
            time.sleep(0.02)
        raise TimeoutError("the relay did not log its counters")

    def _lines(self) -> list[str]:
        # At an offset (pread): a seek would move the offset the relay writes at.
        fd = self.log.fileno()
        text = os.pread(fd, os.fstat(fd).st_size, 0).decode(errors="replace")
        return [ln for ln in text.splitlines() if "counters:" in ln]

    def stop(self) -> None:
        launch.stop_relay(self.proc)
        self.log.close()


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def redis_info(port: int) -> dict[str, int]:
    """The integer fields of Redis's ``INFO stats``, by hand over a socket."""
    with socket.create_connection((HOST, port), timeout=5) as s:
        s.sendall(b"INFO stats\r\n")
        data = b""
        while not data.endswith(b"\r\n") or data.count(b"\r\n") < 3:
            data += s.recv(65536)
    return {k: int(v) for k, v in re.findall(r"(\w+):(\d+)\r\n", data.decode())}


class Rig:
    """Redis and a cluster of relays, started and stopped together."""

    def __init__(self, relays: int) -> None:
        self.redis, self.redis_port = launch.start_redis()
        f = tempfile.NamedTemporaryFile("w", suffix=".secret", delete=False)  # noqa: SIM115
        f.write(SECRET + "\n")
        f.close()
        self.secret_file = f.name
        url = f"redis://{HOST}:{self.redis_port}/0"
        with ThreadPoolExecutor(relays) as pool:
            futures = [pool.submit(Node, url, self.secret_file) for _ in range(relays)]
        self.nodes = [f.result() for f in futures if f.exception() is None]
        if len(self.nodes) < relays:  # one did not start: nothing is left running
            self.close()
            raise RuntimeError(
                f"a relay did not start: {next(f.exception() for f in futures if f.exception())}"
            )

    def close(self) -> None:
        with ThreadPoolExecutor(max(1, len(self.nodes))) as pool:
            list(pool.map(Node.stop, self.nodes))
        launch.stop_redis(self.redis)
        os.unlink(self.secret_file)


def client(node: Node, name: str) -> ProbeClient:
    c = ProbeClient(HOST, node.port, sealed=True, timeout=10.0)
    c.auth(name)
    c.register()
    return c


def wait_for(c: ProbeClient, user_ids: set[int]) -> None:
    """Until ``c`` has been told of every one of ``user_ids``."""
    assert c.welcome is not None
    known = {u.user_id for u in c.welcome.users}
    while not user_ids <= known:
        m = c.recv(lambda m: isinstance(m, UserJoined))
        assert isinstance(m, UserJoined)
        known.add(m.user_id)


def leave(c: ProbeClient) -> None:
    """End the session now (``bye``): nothing stays routed in grace."""
    c.send(Bye())
    c.closed_by_relay(5.0)
    c.close()


def drain(c: ProbeClient) -> None:
    c.udp.setblocking(False)
    try:
        while True:
            c.udp.recv(4096)
    except BlockingIOError:
        pass
    finally:
        c.udp.settimeout(c.timeout)


# --- 1. the hop --------------------------------------------------------------------------


def hop_latency(rig: Rig, count: int) -> dict[str, Any]:
    """Send-to-receive of one datagram, same relay against across two relays."""
    speaker = client(rig.nodes[0], "speaker")
    near = client(rig.nodes[0], "near")
    far = client(rig.nodes[1], "far")
    for c in (speaker, near, far):
        wait_for(c, {speaker.user_id, near.user_id, far.user_id})
    time.sleep(0.5)
    samples: dict[str, list[float]] = {"one_relay": [], "two_relays": []}
    lost = {"one_relay": 0, "two_relays": 0}
    pairs = (("one_relay", near, far), ("two_relays", far, near))
    for i in range(count):
        # Turn about: the listener timed is read first, the other one after.
        name, timed, other = pairs[i % 2]
        t0 = time.perf_counter_ns()
        speaker.send_voice(i, PAYLOAD)
        if timed.recv_voice(0.5) is None:
            lost[name] += 1
        else:
            samples[name].append((time.perf_counter_ns() - t0) / 1000)
        other.recv_voice(0.5)
        time.sleep(1 / RATE)
    for c in (speaker, near, far):
        leave(c)
    one, two = summarize(samples["one_relay"]), summarize(samples["two_relays"])
    return {
        "unit": "us",
        "one_relay": one,
        "two_relays": two,
        "lost": lost,
        "added_p50_us": two["p50"] - one["p50"] if one["n"] and two["n"] else None,
        "added_p99_us": two["p99"] - one["p99"] if one["n"] and two["n"] else None,
    }


# --- 2. the cost -------------------------------------------------------------------------


def forwarding_cost(rig: Rig, seconds: float) -> dict[str, Any]:
    """One channel of USERS users (TALKERS talking) spread over the rig's relays."""
    relays = len(rig.nodes)
    users = [client(rig.nodes[i % relays], f"u{i}") for i in range(USERS)]
    ids = {u.user_id for u in users}
    for u in users:
        wait_for(u, ids)
    time.sleep(0.5)
    talkers = users[:TALKERS]  # i % relays: spread evenly when relays > 1
    frames = int(seconds * RATE)
    sealed = [[t.sealer.voice(i, i, PAYLOAD) for i in range(frames)] for t in talkers]  # type: ignore[union-attr]
    idle0 = sum(n.cpu() for n in rig.nodes)  # the relays with these users, nobody talking
    time.sleep(seconds)
    idle_cpu = sum(n.cpu() for n in rig.nodes) - idle0
    before = [n.counters() for n in rig.nodes]
    cpu0 = [n.cpu() for n in rig.nodes]
    t0 = time.monotonic()
    for i in range(frames):
        for t, data in zip(talkers, sealed, strict=True):
            t.udp.sendto(data[i], t.relay)
        if i % 10 == 0:
            for u in users:
                drain(u)
        delay = t0 + (i + 1) / RATE - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    elapsed = time.monotonic() - t0
    time.sleep(0.2)
    cpu = sum(n.cpu() for n in rig.nodes) - sum(cpu0)
    after = [n.counters() for n in rig.nodes]
    for u in users:
        leave(u)

    def delta(key: str) -> int:
        return sum(a.get(key, 0) - b.get(key, 0) for a, b in zip(after, before, strict=True))

    delivered = delta("forwarded")
    return {
        "relays": relays,
        "seconds": elapsed,
        "offered_per_s": TALKERS * RATE,
        "delivered": delivered,
        "expected": frames * TALKERS * (USERS - 1),
        "mesh_sent": delta("mesh_out"),
        "cpu_s": cpu,
        "delivered_per_cpu_s": delivered / cpu if cpu > 0 else None,
        # The same window with nobody talking: what the relays cost idle (event loops,
        # heartbeats, the UDP loops' wake-ups), and the forwarding's own cost without it.
        "idle_cpu_s": idle_cpu,
        "delivered_per_cpu_s_over_idle": delivered / (cpu - idle_cpu) if cpu > idle_cpu else None,
    }


# --- 3. Redis ----------------------------------------------------------------------------


def reply_bytes(port: int, *words: str) -> int:
    """The size of Redis's reply to one command (RESP, by hand): what a relay reads."""
    with socket.create_connection((HOST, port), timeout=5) as s:
        s.sendall(f"*{len(words)}\r\n".encode() + b"".join(
            f"${len(w)}\r\n{w}\r\n".encode() for w in words))  # fmt: skip
        s.sendall(b"PING\r\n")  # its +PONG marks the end of the reply before it
        data = b""
        while not data.endswith(b"+PONG\r\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return len(data) - len(b"+PONG\r\n")


class RedisMeter:
    """Commands, bytes out and CPU of the rig's Redis from one reading to the next, less
    what the relays' heartbeats cost meanwhile (the idle rate) and the readings' own INFO."""

    def __init__(self, rig: Rig) -> None:
        self.rig = rig
        self.idle_cmds_per_s = 0.0
        self.idle_out_per_s = 0.0
        self.idle_cpu_per_s = 0.0
        self._last = self._read()

    def _read(self) -> tuple[float, int, int, float]:
        info = redis_info(self.rig.redis_port)
        return (time.monotonic(), info["total_commands_processed"],
                info["total_net_output_bytes"], _cpu(self.rig.redis.pid))  # fmt: skip

    def idle(self, seconds: float) -> dict[str, float]:
        self._last = self._read()
        time.sleep(seconds)
        t, cmds, out, cpu = self._delta()
        self.idle_cmds_per_s, self.idle_out_per_s, self.idle_cpu_per_s = cmds / t, out / t, cpu / t
        return {"commands": self.idle_cmds_per_s, "out_bytes": self.idle_out_per_s,
                "cpu": self.idle_cpu_per_s}  # fmt: skip

    def step(self) -> tuple[float, float, float]:
        """(commands, CPU seconds, seconds) since the last reading, over the idle rate."""
        t, cmds, _out, cpu = self._delta()
        return cmds - self.idle_cmds_per_s * t - 1, cpu - self.idle_cpu_per_s * t, t

    def _delta(self) -> tuple[float, int, int, float]:
        now = self._read()
        t0, c0, o0, u0 = self._last
        self._last = now
        return now[0] - t0, now[1] - c0, now[2] - o0, now[3] - u0


def redis_load(rig: Rig, joins: int, idle: float) -> dict[str, Any]:
    """Redis commands and CPU per session for each step of its life (auth, a channel move,
    a leave: ``joins`` sessions at a time over the relays, then settled for a second) and
    per idle second; the bytes of the registry a relay reads at each heartbeat; events
    published and delivered (each reaches every relay: the pub/sub fan-out)."""
    meter = RedisMeter(rig)
    idle_rates = meter.idle(idle)
    before = [n.counters() for n in rig.nodes]
    meter.step()
    t0 = time.monotonic()
    steps: dict[str, dict[str, float]] = {}
    clients = [client(rig.nodes[i % len(rig.nodes)], f"j{i}") for i in range(joins)]
    time.sleep(1.0)  # the directory's writes follow the welcome
    steps["auth"] = _per(meter.step(), joins)
    for c in clients:
        c.send(Join("General"))
    for c in clients:
        uid = c.user_id
        c.recv(lambda m, uid=uid: isinstance(m, UserJoined) and m.user_id == uid  # type: ignore[misc]
               and m.channel == "General")  # fmt: skip
    time.sleep(1.0)
    steps["move"] = _per(meter.step(), joins)
    for c in clients:
        leave(c)
    time.sleep(1.0)
    steps["leave"] = _per(meter.step(), joins)
    spent = time.monotonic() - t0
    after = [n.counters() for n in rig.nodes]
    published = sum(a["cluster_published"] - b["cluster_published"]
                    for a, b in zip(after, before, strict=True))  # fmt: skip
    received = sum(a["cluster_received"] - b["cluster_received"]
                   for a, b in zip(after, before, strict=True))  # fmt: skip
    relays = len(rig.nodes)
    registry = reply_bytes(rig.redis_port, "HGETALL", "vc:relays")
    return {
        "relays": relays,
        "idle_commands_per_s": idle_rates["commands"],
        "idle_commands_per_s_per_relay": idle_rates["commands"] / relays,
        "idle_redis_cpu_per_s": idle_rates["cpu"],
        "idle_out_bytes_per_s": idle_rates["out_bytes"],
        "registry_reply_bytes": registry,
        "registry_bytes_per_record": registry / relays,
        "joins": joins,
        "steps": steps,
        "commands_per_join": sum(st["commands"] for st in steps.values()),
        "redis_cpu_us_per_join": sum(st["cpu_us"] for st in steps.values()),
        "events_published_per_join": published / joins,
        "events_delivered_per_join": received / joins,
        "pubsub_fanout": received / published if published else None,
        "join_seconds": spent,
    }


def _per(step: tuple[float, float, float], n: int) -> dict[str, float]:
    cmds, cpu, _t = step
    return {"commands": cmds / n, "cpu_us": cpu / n * 1e6}


def _resp(*words: str | bytes) -> bytes:
    parts = [w.encode() if isinstance(w, str) else w for w in words]
    return f"*{len(parts)}\r\n".encode() + b"".join(
        b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)  # fmt: skip


def _read_until(s: socket.socket, marker: bytes, count: int) -> None:
    """Read from ``s`` until ``marker`` has come ``count`` times."""
    seen, tail = 0, b""
    while seen < count:
        chunk = s.recv(1 << 20)
        if not chunk:
            raise ConnectionError("redis-server closed the connection")
        data = tail + chunk
        seen += data.count(marker)
        tail = data[-len(marker) + 1 :]  # a marker cut in two is counted once


def redis_capacity(port: int, pid: int, subscribers: int, messages: int) -> dict[str, Any]:
    """What one Redis core does, measured on this one: CPU per plain command (pipelined
    ``SET``s of a relay-record-sized value) and per pub/sub delivery (``messages`` events
    of a ``joined``'s size published to ``subscribers`` subscribed connections, as many
    as the relays of a cluster that size)."""
    event = cc.encode_event(cc.Joined(cc.RemoteUser(123456, "a user's name", "Lobby", "relay-a")))
    value = b"x" * 220
    with socket.create_connection((HOST, port), timeout=30) as pub:
        n = 20_000
        cpu0 = _cpu(pid)
        for i in range(0, n, 500):
            pub.sendall(b"".join(_resp("SET", f"bench:{i + k}", value) for k in range(500)))
            _read_until(pub, b"+OK\r\n", 500)
        set_cpu = _cpu(pid) - cpu0
        subs = [socket.create_connection((HOST, port), timeout=30) for _ in range(subscribers)]
        try:
            for sub in subs:
                sub.sendall(_resp("SUBSCRIBE", "bench:events"))
                _read_until(sub, b"subscribe", 1)
            cpu0 = _cpu(pid)
            with ThreadPoolExecutor(8) as pool:
                drained = [pool.submit(_read_until, sub, b"$7\r\nmessage\r\n", messages)
                           for sub in subs]  # fmt: skip
                for _ in range(0, messages, 100):
                    pub.sendall(_resp("PUBLISH", "bench:events", event) * 100)
                    _read_until(pub, f":{subscribers}\r\n".encode(), 100)
                for f in drained:
                    f.result()
            pub_cpu = _cpu(pid) - cpu0
        finally:
            for sub in subs:
                sub.close()
        pub.sendall(_resp("FLUSHALL"))
        _read_until(pub, b"+OK\r\n", 1)
    return {
        "set_commands": n,
        "set_cpu_s": set_cpu,
        "cpu_us_per_command": set_cpu / n * 1e6,
        "subscribers": subscribers,
        "messages": messages,
        "event_bytes": len(event),
        "publish_cpu_s": pub_cpu,
        "cpu_us_per_delivery": pub_cpu / (messages * subscribers) * 1e6,
    }


def hundred(doc: dict[str, Any]) -> dict[str, Any]:
    """What 100 relays would ask of Redis, from the 3-relay numbers: the heartbeats' commands
    grow with the relays, the registry each relay reads with the relays too (so its bytes
    with their square), an event's deliveries with the relays."""
    r, cap = doc["redis"], doc["redis_capacity"]
    deliveries = r["events_published_per_join"] * 100
    # One session's life as measured on this cluster (its transactions, one round trip
    # each, cost far more than pipelined commands), plus the deliveries of its events to
    # the 97 more relays, at the measured cost of one delivery.
    more = deliveries - r["events_delivered_per_join"]
    cpu_per_join = r["redis_cpu_us_per_join"] + more * cap["cpu_us_per_delivery"]
    return {
        "idle_commands_per_s": r["idle_commands_per_s_per_relay"] * 100,
        "registry_records_read_per_s": 100 * 100 / HEARTBEAT_S,
        "registry_bytes_out_per_s": r["registry_bytes_per_record"] * 100 * 100 / HEARTBEAT_S,
        "deliveries_per_join": deliveries,
        "commands_per_join": r["commands_per_join"],
        "redis_cpu_us_per_join": cpu_per_join,
        "joins_per_redis_core_s": 1e6 / cpu_per_join if cpu_per_join > 0 else None,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = parser(__doc__ or "")
    ap.add_argument("--seconds", type=float, default=10.0, help="of load per configuration")
    args = ap.parse_args(argv)
    if not launch.redis_available():
        raise SystemExit("bench.cluster needs redis-server (scripts/setup.sh installs it)")
    seconds = 1.0 if args.quick else args.seconds
    load = os.getloadavg()[0]
    result: dict[str, Any] = {"quick": args.quick, "load_before": load}
    rig = Rig(1)
    try:
        one = forwarding_cost(rig, seconds)
    finally:
        rig.close()
    rig = Rig(3)
    try:
        result["hop"] = hop_latency(rig, 20 if args.quick else 500)
        result["cost"] = {"one_relay": one, "three_relays": forwarding_cost(rig, seconds)}
        result["redis"] = redis_load(rig, 3 if args.quick else 60, 1.0 if args.quick else 10.0)
        result["redis_capacity"] = redis_capacity(
            rig.redis_port, rig.redis.pid, 100, 200 if args.quick else 2000
        )
    finally:
        rig.close()
    result["hundred_relays"] = hundred(result)
    result["load_after"] = os.getloadavg()[0]
    path = write_result("cluster", result, args.out)
    print_table(result)
    print(f"wrote {path}")
    return result


def print_table(r: dict[str, Any]) -> None:
    print(f"load {r['load_before']:.1f} -> {r['load_after']:.1f}")
    h = r["hop"]
    for name in ("one_relay", "two_relays"):
        s = h[name]
        if s.get("n"):
            print(f"{name:11s} p50 {s['p50']:7.0f} us  p99 {s['p99']:7.0f} us  n {s['n']}")
    print(f"the relay-to-relay hop adds p50 {h['added_p50_us']} us, p99 {h['added_p99_us']} us")
    for name, c in r["cost"].items():
        print(f"{name}: {c['delivered']}/{c['expected']} delivered, {c['cpu_s']:.2f} CPU-s, "
              f"{c['delivered_per_cpu_s']} per CPU-s, mesh {c['mesh_sent']}")  # fmt: skip
    print({k: v for k, v in r["redis"].items() if k != "steps"})
    for name, st in r["redis"]["steps"].items():
        print(f"  {name}: {st['commands']:.1f} commands, {st['cpu_us']:.0f} us of Redis CPU each")
    print(r["redis_capacity"])
    print(r["hundred_relays"])


if __name__ == "__main__":
    main()
