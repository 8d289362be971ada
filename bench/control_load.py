"""Control-plane load: ping during a join storm, and auth latency against the sessions held.

Against a real relay process on loopback (127.0.0.1 only), from this process
and one pinger process:

* ``storm``: ``--sessions`` sessions (1,500) are authenticated and kept read,
  then each sends ``--rounds`` joins (3, as in issue 18; one per round, rounds
  back to back), all within the per-connection rate limits: 2 x N presence
  events per round for N sessions, 2 x N² deliveries. That storm is repeated
  ``--storms`` times (5), each once the relay has been quiet for a second, so
  that the pings sent during storms are enough for a p99 (a storm the relay
  clears in half a second holds only ~100). Sixteen pinger sessions in a process
  of their own send a control ``ping`` every 5 ms in turn (one at a time: a
  stalled relay shows as one long round trip; each session within its 20
  messages/s) from before the first storm until the relay has been quiet after
  the last; reported are the round trips of the pings sent during a storm
  (p50/p99/max), each storm's length (its first join to its last presence
  byte), the bytes each session received and the relay's CPU time.
* ``auth``: a fresh relay filled to 10, 500 and 2,000 sessions (their sockets
  read); at each level ``--samples`` new connections time ``auth`` until the
  welcome and every ``user_list`` page it announces are in, then leave (``bye``);
  the relay's CPU time over them, per auth, is what an auth costs it in all
  (presence to every other session included), however loaded the machine.

``--relay-root DIR`` runs the relay of another checkout (e.g. the code before
issue 18) with the same load; flags that checkout lacks are left out. Every loop
is bounded in time; the relay is stopped at the end.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

from bench.common import parser, summarize, write_result
from relay.launch import ROOT, start_relay, stop_relay
from relay.probe import Crowd, RawFrames, welcome_done
from relay.protocol.messages import (
    Auth,
    Bye,
    Join,
    Ping,
    encode_message,
)

HOST = "127.0.0.1"
STORM_CHANNELS = 50  # sessions join c0..c49 round-robin
PING_INTERVAL = 0.005
PINGERS = 16  # pinging sessions taking turns: 12.5 pings/s each, under the 20/s per connection
STORMS = 5
MIN_WINDOW = 0.1  # seconds of pings counted as "during a storm", at the least
QUIET = 1.0  # seconds without a presence byte: the storm is over
STORM_LIMIT = 90.0  # seconds: a storm that lasts longer is cut off and reported as such
AUTH_LEVELS = [10, 500, 2000]
READ = 256 * 1024


def _relay_args(root: Path, max_clients: int) -> list[str]:
    args = ["--grace", "600", "--auth-timeout", "120", "--stats-interval", "3600"]
    args += ["--max-clients", str(max_clients), "--log-level", "warning"]
    args += ["--channel", "Lobby"] + [
        a for i in range(STORM_CHANNELS) for a in ("--channel", f"c{i}")
    ]
    help_text = subprocess.run(
        [sys.executable, "-m", "relay", "--help"], cwd=root, capture_output=True, text=True
    ).stdout
    if "--max-per-address" in help_text:  # every session comes from 127.0.0.1
        args += ["--max-per-address", "0", "--max-sessions-per-address", "0"]
        args += ["--connect-rate", "0"]
    if "--address-join-rate" in help_text:  # the storm's joins, all from one address
        args += ["--address-join-rate", "0", "--address-chat-rate", "0"]
    if "--insecure" in help_text:  # the sessions here speak plain protocol 1, built by hand
        args += ["--insecure"]
    return args


def _join(round_: int, i: int) -> bytes:
    """Session ``i``'s join of round ``round_``: a channel it is not in."""
    return encode_message(Join(channel=f"c{(i + round_) % STORM_CHANNELS}"))


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _raise_nofile(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(need, soft)), hard))


# --- the pinger (module level, for spawn) ---------------------------------------------------


def _pinger(port: int, stop: Any, ready: Any, out: Any) -> None:
    """PINGERS sessions that take turns to ping, one ping at a time every PING_INTERVAL
    (each session within the relay's 20 messages/s per connection), until ``stop``."""
    socks = [socket.create_connection((HOST, port), timeout=STORM_LIMIT) for _ in range(PINGERS)]
    decs = [RawFrames(keep=False) for _ in socks]  # msgpack only: time the relay, not us

    def wait_for(i: int, match: Any) -> None:
        while True:
            data = socks[i].recv(READ)
            if not data:
                raise ConnectionError("the relay closed a pinger's connection")
            if any(match(m) for m in decs[i].feed(data)):
                return

    for i, s in enumerate(socks):
        s.sendall(encode_message(Auth(name=f"pinger{i}")))
        wait_for(i, welcome_done)
    ready.set()
    samples: list[tuple[float, float]] = []  # (sent at, round trip in s)
    nonce = 0
    try:
        while not stop.is_set():
            nonce += 1
            i = nonce % len(socks)
            t0 = time.monotonic()
            socks[i].sendall(encode_message(Ping(nonce=nonce, t=t0)))
            n = nonce
            wait_for(i, lambda m, n=n: m.get("type") == "pong" and m.get("nonce") == n)
            samples.append((t0, time.monotonic() - t0))
            time.sleep(max(0.0, t0 + PING_INTERVAL - time.monotonic()))
    except (TimeoutError, ConnectionError) as exc:
        samples.append((time.monotonic(), float("inf")))
        print(f"pinger: {exc}", file=sys.stderr)
    finally:
        for s in socks:
            s.close()
    out.put(samples)


# --- the two measurements --------------------------------------------------------------------


def run_storm(root: Path, sessions: int, rounds: int, storms: int = STORMS) -> dict[str, Any]:
    _raise_nofile(sessions + 256)
    with tempfile.TemporaryFile("w+") as log:
        proc, port = start_relay(*_relay_args(root, sessions + 100), host=HOST, log=log, root=root)
        crowd = Crowd(HOST, port)
        ctx = mp.get_context("spawn")
        stop, ready, q = ctx.Event(), ctx.Event(), ctx.Queue()
        pinger = ctx.Process(target=_pinger, args=(port, stop, ready, q))
        windows: list[tuple[float, float]] = []  # (first join, last presence byte) per storm
        cut_off = False
        try:
            t_fill = time.monotonic()
            crowd.add(sessions, "s")
            fill_s = time.monotonic() - t_fill
            pinger.start()
            if not ready.wait(60):
                raise TimeoutError("the pinger got no welcome")
            crowd.drain()
            time.sleep(0.5)  # pings before the storm: the baseline
            cpu0 = _cpu_seconds(proc.pid)
            received0 = crowd.received
            sent_s = 0.0
            for storm in range(storms):
                t0 = time.monotonic()
                for r in range(rounds):  # each session joins another channel each round
                    crowd.send_all(partial(_join, storm * rounds + r))
                sent_s = max(sent_s, time.monotonic() - t0)
                while time.monotonic() - crowd.last_rx < QUIET or crowd.last_rx < t0:
                    if time.monotonic() - t0 > STORM_LIMIT:
                        cut_off = True
                        break
                    crowd.pump(0.05)
                windows.append((t0, crowd.last_rx))
                if cut_off:
                    break
            cpu1 = _cpu_seconds(proc.pid)
            stop.set()
            samples: list[tuple[float, float]] = q.get(timeout=STORM_LIMIT + 30)
        finally:
            stop.set()
            pinger.join(timeout=STORM_LIMIT + 30)
            if pinger.is_alive():
                pinger.kill()
                pinger.join()
            q.close()
            q.join_thread()
            crowd.close()
            stop_relay(proc)
            log.seek(0)
            log_bytes = len(log.read())
    # The pings sent from a storm's first join until it is over (at least MIN_WINDOW, so
    # that a storm the relay clears at once still has samples).
    during = [
        rtt * 1000
        for sent, rtt in samples
        if any(t0 <= sent <= max(t1, t0 + MIN_WINDOW) for t0, t1 in windows)
    ]
    before = [rtt * 1000 for sent, rtt in samples if sent < windows[0][0]]
    lengths = [t1 - t0 for t0, t1 in windows]
    return {
        "sessions": sessions,
        "rounds": rounds,
        "storms": len(windows),
        "joins": sessions * rounds,  # per storm
        "fill_s": fill_s,
        "joins_sent_s": sent_s,
        "storm_s": max(lengths),
        "storms_s": lengths,
        "cut_off": cut_off,
        "ping_ms": summarize(during),
        "ping_before_ms": summarize(before),
        "pings_unanswered": sum(1 for _, rtt in samples if rtt == float("inf")),
        "received_bytes_per_session": (crowd.received - received0)
        / max(1, sessions)
        / len(windows),
        "sessions_dropped_by_relay": crowd.closed,
        "relay_cpu_s": (cpu1 - cpu0) / len(windows),  # per storm
        "relay_warning_log_bytes": log_bytes,
    }


def _auth_once(port: int, name: str) -> float:
    """Seconds from sending auth to having the whole welcome; then leave."""
    s = socket.create_connection((HOST, port), timeout=30)
    try:
        frames = RawFrames(keep=False)  # msgpack only: time the relay, not our decoding
        t0 = time.monotonic()
        s.sendall(encode_message(Auth(name=name)))
        while True:
            data = s.recv(READ)
            if not data:
                raise ConnectionError("the relay closed the connection before the welcome")
            if any(welcome_done(m) for m in frames.feed(data)):
                elapsed = time.monotonic() - t0
                break
        s.sendall(encode_message(Bye()))
        return elapsed
    finally:
        s.close()


def run_auth(root: Path, levels: list[int], samples: int) -> dict[str, Any]:
    _raise_nofile(max(levels) + 256)
    out: dict[str, Any] = {}
    with tempfile.TemporaryFile("w+") as log:
        proc, port = start_relay(
            *_relay_args(root, max(levels) + 100), host=HOST, log=log, root=root
        )
        crowd = Crowd(HOST, port)
        try:
            for level in levels:
                crowd.add(level - len(crowd.socks), f"l{level}-")
                crowd.drain()
                times = []
                cpu0 = _cpu_seconds(proc.pid)
                for i in range(samples):
                    times.append(_auth_once(port, f"probe{level}-{i}") * 1000)
                    crowd.pump(0)
                    time.sleep(0.02)  # each auth alone, not a burst
                time.sleep(0.2)  # the last one's presence written
                crowd.drain()
                cpu = _cpu_seconds(proc.pid) - cpu0
                out[str(level)] = summarize(times)
                # What each auth costs the relay in all (its welcome, routes, presence to
                # every other session, the bye): CPU time does not wait for a core.
                out[str(level)]["relay_cpu_ms_per_auth"] = cpu * 1000 / samples
                print(
                    f"auth at {level:5d} sessions: p50 {out[str(level)]['p50']:.2f} ms, "
                    f"p99 {out[str(level)]['p99']:.2f} ms, relay CPU "
                    f"{out[str(level)]['relay_cpu_ms_per_auth']:.2f} ms per auth",
                    flush=True,
                )
        finally:
            crowd.close()
            stop_relay(proc)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=1500, help="sessions in the storm")
    ap.add_argument(
        "--rounds", type=int, default=3, help="joins per session in the storm, back to back"
    )
    ap.add_argument("--storms", type=int, default=STORMS, help="storms in a row (pings for a p99)")
    ap.add_argument("--samples", type=int, default=30, help="auths timed per level")
    ap.add_argument(
        "--relay-root", type=Path, default=ROOT, help="checkout whose relay runs (default: this)"
    )
    args = ap.parse_args(argv)
    sessions = 60 if args.quick else args.sessions
    levels = [5, 20, 40] if args.quick else AUTH_LEVELS
    samples = 5 if args.quick else args.samples
    storms = 2 if args.quick else args.storms
    storm = run_storm(args.relay_root, sessions, 1 if args.quick else args.rounds, storms)
    p = storm["ping_ms"]
    print(
        f"{storm['storms']} storms of {storm['joins']} joins: longest {storm['storm_s']:.2f} s"
        f"{' (cut off)' if storm['cut_off'] else ''}; ping p50 {p.get('p50', float('nan')):.1f}"
        f" ms p99 {p.get('p99', float('nan')):.1f} ms max {p.get('max', float('nan')):.1f} ms"
        f" ({p.get('n', 0)} pings); relay cpu {storm['relay_cpu_s']:.2f} s per storm",
        flush=True,
    )
    auth = run_auth(args.relay_root, levels, samples)
    path = write_result(
        "control_load",
        {
            "quick": args.quick,
            "relay_root": str(args.relay_root),
            "loadavg_1min_at_end": os.getloadavg()[0],
            "storm": storm,
            "auth_ms": auth,
        },
        args.out,
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
