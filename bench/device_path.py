"""The real device path: one client on PortAudio through a PulseAudio server, measured outside.

A private PulseAudio (bench/pulse.py) gives the client a virtual microphone and
speaker; the relay runs in echo mode, so the client hears itself. A speech-like
signal is played into the microphone, and the room (mouth and ear on the
server's one clock) is recorded. Reported:

- ``mouth_to_ear_ms``: the ear's lag behind the mouth in every half second of
  speech, from the recording (the outside measurement);
- ``reported_ms``: the mouth-to-ear the client's status line shows at the end (a p50
  over its last 20 s, the network estimated from the ping), and ``claimed_ms``: the
  client's own per-frame times (ADC of a frame's first sample to the DAC of the
  echoed frame's first sample, plus the Opus lookahead) of the frames captured in
  each measured half second, held against that half second's lag
  (``claimed_minus_measured_ms``: the median difference);
- ``dropouts``: stretches of speech that did not come out (holes of 5 ms or more are
  always found; 2.5 ms blocks, looked for at
  the lags measured around them: the playout's delay moves during a call), their total
  ``dropout_ms`` and where they start in the call (``dropout_at_s``), and the client's
  underflow and overflow counts;
- ``starved_at_s``: when the speaker found nothing to play (the decode stage late);
- ``stalls``: the sound devices' callbacks that came more than ``STALL_BLOCKS`` blocks
  late (when in the call, how long the gap, microphone or speaker): both at once is
  the machine or the sound server stalling, not the client;
- ``budget_ms``: where the client's own figure goes, hop by hop (medians over the
  same stretch), joined per frame from the stages' traces and the sound devices'
  callback traces (``mic.npy``, ``speaker.npy``);
- with ``--restart``: the server is then killed and started again; how long the
  client took to tell (a lost-device status and notice) and to play again, and
  the same figures for a few seconds of speech after that.

    python -m bench.device_path [--quick] [--seconds S] [--restart] [--out DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import parser, summarize, write_result
from bench.pulse import (
    WINDOW,
    PulseError,
    PulseServer,
    available,
    dropouts,
    frame_levels,
    read_recording,
    window_lags,
)
from pipeline.client.config import ClientConfig
from pipeline.client.local_client import LocalClient, connected
from pipeline.core.capture_clock import CaptureClock, StartupBacklog
from pipeline.core.client_view import OPUS_LOOKAHEAD_MS
from pipeline.ipc import events as ev
from pipeline.ipc import scheduling
from pipeline.media import synthetic
from pipeline.media.audio_format import FRAME_NS, FRAME_SAMPLES, SAMPLE_RATE
from pipeline.media.sound_device import NS_PER_SAMPLE
from pipeline.media.sources import MediaSpec
from relay.launch import start_relay, stop_relay


def _playing(c: LocalClient) -> int:
    return c.view.playback.frames if c.view.playback else 0


def _phase(c: LocalClient, pulse: PulseServer, root: Path, name: str, seconds: float,
           seed: int) -> dict[str, Any]:  # fmt: skip
    """Play ``seconds`` of speech into the microphone, recording the room; then what the
    recording shows next to what the client says."""
    rec = root / f"{name}.f32"
    recorder = pulse.record(rec)
    time.sleep(0.3)
    signal = synthetic.speech_like(seconds, seed=seed)
    t_play = time.monotonic_ns()
    player = pulse.play(signal)
    c.pump(seconds + 1.0)
    t_end = time.monotonic_ns()
    recorder.terminate()
    player.wait(timeout=10)
    recorder.wait(timeout=10)
    m2e = c.view.mouth_to_ear
    mouth, ear = read_recording(rec)
    track = window_lags(mouth, ear)
    lags = [lag for _, lag in track]
    # The recording's first sample on the client's clock, from its last (recorded up to the
    # stop, within parec's 20 ms latency): a loaded machine may start the player and the
    # recorder a second late, so their start times say little.
    origin = t_end - len(mouth) * 1_000_000_000 // SAMPLE_RATE
    spans = [(origin + first * 1_000_000_000 // SAMPLE_RATE, lag) for first, lag in track]
    out: dict[str, Any] = {
        "seconds": seconds,
        "mouth_to_ear_ms": summarize(lags),
        "reported_ms": m2e.p50 if m2e else None,
        "underflows": c.view.playback.underflows if c.view.playback else None,
        "overflows": c.view.capture.overflows if c.view.capture else None,
        "resyncs": c.view.capture.resyncs if c.view.capture else None,
        "speech_blocks": int(np.sum(frame_levels(mouth) > 0.02)),
        "hops_p50_ms": {h.hop: h.p50 for r in c.view.reports.values() for h in r.latency},
        "depth": [sp.depth for sp in c.view.speakers],
        "status": c.view.status_line(),
        "priority": {name: r.priority for name, r in c.view.reports.items() if r.priority},
        "window_ns": (t_play, t_end),
        "windows": spans,  # each measured window's first mouth sample (ns) and its lag (ms)
    }
    if lags:
        holes = dropouts(mouth, ear, track)
        out["dropouts"] = len(holes)
        out["dropout_ms"] = sum(n for _, n in holes) * 1000 / SAMPLE_RATE
        out["dropout_at_s"] = [round(first / SAMPLE_RATE, 2) for first, _ in holes]
        out["measured_ms"] = float(np.median(lags))
        if out["reported_ms"] is not None:
            out["reported_minus_measured_ms"] = out["reported_ms"] - out["measured_ms"]
    return out


STALL_BLOCKS = 3  # a callback this many blocks after the one before it is a stall


def stalls(trace: Path, window_ns: tuple[int, int]) -> list[dict[str, Any]]:
    """The device callbacks within ``window_ns`` that came ``STALL_BLOCKS`` or more blocks
    after the one before: (seconds into the window, the gap in ms, which device)."""
    out: list[dict[str, Any]] = []
    lo, hi = window_ns
    for name in ("mic", "speaker"):
        path = trace / f"{name}.npy"
        if not path.exists():
            continue
        rows = np.load(path)  # callback ran, ADC/DAC time, frames, flag
        if len(rows) < 2:
            continue
        ran = rows[:, 0].astype(np.int64)
        period = np.median(rows[:, 2]) * NS_PER_SAMPLE
        gaps = np.diff(ran)
        for i in np.flatnonzero(gaps >= STALL_BLOCKS * period):
            if lo <= ran[i] <= hi:
                out.append({"at_s": round((ran[i] - lo) / 1e9, 2),
                            "gap_ms": round(float(gaps[i]) / 1e6, 1), "device": name})  # fmt: skip
    return sorted(out, key=lambda s: s["at_s"])


def starves(trace: Path, window_ns: tuple[int, int]) -> list[float]:
    """When (seconds into ``window_ns``) the speaker found the ring empty mid-block and
    played silence for the rest of it (traced flag 2): the decode stage was late. The
    first of a run of such blocks only."""
    path = trace / "speaker.npy"
    if not path.exists():
        return []
    rows = np.load(path)
    lo, hi = window_ns
    short = (rows[:, 3].astype(np.int64) & 2) != 0
    played = np.flatnonzero(~short)
    if not len(played):
        return []
    short[: played[0]] = False  # before the first frame: waiting for voice, no starve
    first = short & ~np.concatenate([[False], short[:-1]])
    return [round((int(t) - lo) / 1e9, 2) for t in rows[first, 0] if lo <= t <= hi]


def decode_late(trace: Path, window_ns: tuple[int, int]) -> dict[str, dict[str, float]] | None:
    """How long after the pacer planned it each frame was ready (``mix.npy``: planned,
    start, end), and how much of that was the decode stage waking late, within
    ``window_ns``: what its scheduling costs, and what the pacer's lead must cover."""
    path = trace / "mix.npy"
    if not path.exists():
        return None
    rows = np.load(path)
    lo, hi = window_ns
    rows = rows[(rows[:, 3] > 0) & (rows[:, 0] >= lo) & (rows[:, 0] <= hi)]
    if not len(rows):
        return None
    return {
        "ready": summarize((rows[:, 4] - rows[:, 3]) / 1e6),
        "woke": summarize((rows[:, 0] - rows[:, 3]) / 1e6),
    }


WINDOW_NS = WINDOW * 1_000_000_000 // SAMPLE_RATE  # bench.pulse.window_lags' windows
EDGE_NS = 100_000_000  # a window's frames are those captured well inside it


def claimed_ms(trace: Path, offset: int,
               windows: list[tuple[int, float]]) -> tuple[float, float] | None:  # fmt: skip
    """The client's own mouth-to-ear, window by window against the recording's: each
    frame's ear time (the DAC time of its first sample) less its capture time (the ADC
    time of its first sample, carried in the echoed frame's media timestamp), plus the
    Opus lookahead, over the frames captured inside a measured window (``windows``: its
    first mouth sample on the client's clock and the lag measured there). Returns the
    median claim and the median of (claim - measured) per window: frames of the silence
    around the speech, where the playout may hold another depth, do not count. None
    without frames in any window."""
    if not trace.exists():
        return None
    rows = np.load(trace)  # seq, ear_ns, flags, media (signed)
    rows = rows[rows[:, 3] != 0]
    media = rows[:, 3].astype(object) % (1 << 64)
    capture_ns = np.array([((m - offset) % (1 << 64)) * 1_000_000_000 // SAMPLE_RATE
                           for m in media], dtype=np.float64)  # fmt: skip
    m2e = (rows[:, 1].astype(np.float64) - capture_ns) / 1e6 + OPUS_LOOKAHEAD_MS
    claims, diffs = [], []
    for first, lag in windows:
        inside = (capture_ns >= first + EDGE_NS) & (capture_ns <= first + WINDOW_NS - EDGE_NS)
        if inside.any():
            claim = float(np.median(m2e[inside]))
            claims.append(claim)
            diffs.append(claim - lag)
    if not claims:
        return None
    return float(np.median(claims)), float(np.median(diffs))


HOPS = (
    "frame",  # the frame's own 20 ms: its first sample waits for its last
    "microphone",  # ADC of the frame's last block -> the encode stage has the frame
    "encode",
    "to_socket",  # encoded -> the network stage sent it
    "network",  # sent -> received (loopback and the echoing relay)
    "to_decode",  # received -> the decode stage pushed it into the jitter buffer
    "jitter_wait",  # pushed -> decoded for playing (the adaptive playout's delay)
    "decode",
    "playback_queue",  # decoded -> the speaker's callback starts playing it
    "speaker",  # that callback -> PortAudio's DAC time of its first sample
)


def _replayed_stamps(mic: np.ndarray) -> np.ndarray:
    """The capture stamp of every frame sent, worked out again from the microphone's
    callback trace (when each ran, its ADC time, its length, its overflow flag) by the
    same CaptureClock the device ran, leaving out the start-up backlog it dropped: the
    trace holds the clock's input, not its output."""
    clock = CaptureClock()
    backlog = StartupBacklog()
    stamps: list[int] = []
    fill, stamp = 0, 0
    for now, first, frames, flag in mic.tolist():
        if flag:
            clock.restart()
        done = 0
        while done < frames:
            if fill == 0:
                stamp = clock.stamp(first + done * NS_PER_SAMPLE)
            n = min(frames - done, FRAME_SAMPLES - fill)
            fill, done = (fill + n) % FRAME_SAMPLES, done + n
            if fill == 0 and not backlog.stale(now, stamp):
                stamps.append(stamp)
    return np.array(stamps, dtype=np.int64)


def budget(trace: Path, window_ns: tuple[int, int]) -> dict[str, float] | None:
    """Where a frame's mouth-to-ear goes, hop by hop (medians in ms, over the frames
    played within ``window_ns``), joined per frame from the stages' traces; their sum
    plus the Opus lookahead is the client's own per-frame figure (``claimed_ms``).
    None without the device traces (a client older than them)."""
    names = ("mic", "speaker", "encode", "send", "recv", "push", "decode", "playback")
    if not all((trace / f"{n}.npy").exists() for n in names):
        return None
    t = {n: np.load(trace / f"{n}.npy").astype(np.int64) for n in names}
    stamps = _replayed_stamps(t["mic"])
    enc = {int(r[3]): (int(r[0]), int(r[1]), int(r[2])) for r in t["encode"]}  # stream seq
    sent = {int(r[0]): int(r[2]) for r in t["send"]}
    recv = {int(r[0]): int(r[1]) for r in t["recv"]}
    push = {int(r[0]): int(r[1]) for r in t["push"]}
    dec = {int(r[0]): (int(r[1]), int(r[2])) for r in t["decode"]}
    spk = t["speaker"]  # callback ran, DAC time of its first sample, frames, flag
    lo, hi = window_ns
    rows = []
    for seq, ear, _flags, _media in t["playback"].tolist():
        if not lo + 500_000_000 <= ear <= hi or seq not in enc or seq not in dec:
            continue
        capture_seq, e_in, e_out = enc[seq]
        if capture_seq > len(stamps) or seq not in sent or seq not in recv or seq not in push:
            continue
        stamp = int(stamps[capture_seq - 1])
        j = int(np.searchsorted(spk[:, 1], ear, side="right")) - 1  # the starting callback
        callback = int(spk[j, 0]) if j >= 0 else ear
        d0, d1 = dec[seq]
        rows.append((FRAME_NS, e_in - stamp - FRAME_NS, e_out - e_in, sent[seq] - e_out,
                     recv[seq] - sent[seq], push[seq] - recv[seq], d0 - push[seq], d1 - d0,
                     callback - d1, ear - callback))  # fmt: skip
    if not rows:
        return None
    med = np.median(np.array(rows, dtype=np.float64), axis=0) / 1e6
    out = {name: round(float(v), 2) for name, v in zip(HOPS, med, strict=True)}
    out["opus_lookahead"] = OPUS_LOOKAHEAD_MS
    return out


def run(seconds: float, restart: bool, root: Path, playback_frames: int = 0,
        priority: str = scheduling.HIGH) -> dict[str, Any]:  # fmt: skip
    """One call of ``seconds`` of speech; with ``restart``, then the server killed and
    started again, and a few more seconds of speech once the client plays again."""
    result: dict[str, Any] = {"load": os.getloadavg()[0], "playback_frames": playback_frames,
                              "priority": priority}  # fmt: skip
    with PulseServer(root) as pulse:
        saved = {k: os.environ.get(k) for k in pulse.client_env}
        os.environ.update(pulse.client_env)  # the client's stage processes inherit it
        relay, port = start_relay("--echo")
        try:
            trace = root / "trace"
            trace.mkdir(exist_ok=True)
            cfg = ClientConfig(host="127.0.0.1", port=port, name="dev",
                               source=MediaSpec("device"), sink=MediaSpec("device"),
                               playback_frames=playback_frames, trace_dir=str(trace),
                               priority=priority)  # fmt: skip
            with LocalClient(cfg) as c:
                c.until(connected, 20, "connection")
                c.until(lambda v: v.network is not None and v.network.sent > 25, 20, "sending")
                result["call"] = _phase(c, pulse, root, "call", seconds, 3)
                if restart:
                    pulse.kill()
                    t_kill = time.monotonic()
                    c.until(lambda v: v.device_trouble is not None, 10, "the lost device told")
                    result["told_after_s"] = time.monotonic() - t_kill
                    result["told"] = c.view.device_trouble
                    result["notices"] = [n.text for n in c.view.chat if isinstance(n, ev.Notice)]
                    try:
                        pulse.start()
                    except PulseError as exc:  # it started once: this is a failure, no skip
                        raise RuntimeError(f"the sound server did not come back: {exc}") from None
                    t_back = time.monotonic()
                    c.until(lambda v: v.device_trouble is None, 20, "the devices reopened")
                    before = _playing(c)
                    c.until(lambda v: _playing(c) > before + 25, 20, "playing again")
                    result["reopened_after_s"] = time.monotonic() - t_back
                    result["after"] = _phase(c, pulse, root, "after", max(2.0, seconds / 2), 4)
                    result["notices"] = [n.text for n in c.view.chat if isinstance(n, ev.Notice)]
            pulse.stop_children()
            for name in ("call", "after"):
                phase = result.get(name)
                if phase is None:
                    continue
                claim = claimed_ms(trace / "playback.npy", cfg.clock_offset, phase["windows"])
                phase["claimed_ms"] = claim[0] if claim else None
                phase["budget_ms"] = budget(trace, phase["window_ns"])
                phase["stalls"] = stalls(trace, phase["window_ns"])
                phase["starved_at_s"] = starves(trace, phase["window_ns"])
                phase["decode_late_ms"] = decode_late(trace, phase["window_ns"])
                if claim is not None:
                    phase["claimed_minus_measured_ms"] = claim[1]
        finally:
            stop_relay(relay)
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    return result


def _line(name: str, r: dict[str, Any]) -> str:
    b = r.get("budget_ms")
    hops = f"\n  where it goes (ms, medians): {_hops(b)}" if b else ""
    m = r["mouth_to_ear_ms"]
    nan = float("nan")
    return (
        f"{name}: mouth-to-ear (outside) p50 {m.get('p50', nan):.1f} ms p90 "
        f"{m.get('p90', nan):.1f} max {m.get('max', nan):.1f} (n {m['n']}); client reports "
        f"{r['reported_ms']} ms (status line), {r.get('claimed_ms')} ms (its own per-frame "
        f"times over the same stretch); dropouts {r.get('dropouts')} "
        f"({r.get('dropout_ms', 0):.0f} ms, at {r.get('dropout_at_s')} s) in "
        f"{r['speech_blocks']} 20 ms blocks of speech; underflows {r['underflows']} (ring empty at "
        f"{r.get('starved_at_s')} s); device stalls "
        f"{_stalls(r.get('stalls'))}\n  {r['status']}" + hops
    )


def _stalls(found: list[dict[str, Any]] | None) -> str:
    if not found:
        return "none"
    return ", ".join(f"{s['device']} {s['gap_ms']:.0f} ms at {s['at_s']:.1f} s" for s in found)


def _hops(b: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.1f}" for k, v in b.items()) + f"; sum {sum(b.values()):.1f}"


# --cpu-load: one core busy 30 ms of every 80 (an application redrawing, a build step):
# what the client's processes compete with on a desktop. A load generator, not client code.
BUSY = (
    "import time\n"
    "while True:\n"
    "    t = time.perf_counter() + 0.030\n"
    "    while time.perf_counter() < t:\n"
    "        pass\n"
    "    time.sleep(0.050)\n"
)


@contextlib.contextmanager
def cpu_load(on: bool) -> Iterator[None]:
    if not on:
        yield
        return
    busy = subprocess.Popen([sys.executable, "-c", BUSY])
    try:
        yield
    finally:
        busy.kill()
        busy.wait()


def _priorities(text: str) -> list[str]:
    try:
        return [scheduling.check(p.strip()) for p in text.split(",")]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def compare(calls: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per priority: each call's outside p50 and its median, dropouts, ring starves and the
    decode stage's p99 lateness."""
    out: dict[str, dict[str, Any]] = {}
    for r in calls:
        call = r["call"]
        late = call.get("decode_late_ms") or {}
        row = out.setdefault(r["priority"], {"p50_ms": [], "dropouts": [], "starves": [],
                                             "late_p99_ms": [], "woke_p99_ms": []})  # fmt: skip
        row["p50_ms"].append(round(call["mouth_to_ear_ms"].get("p50", float("nan")), 1))
        row["dropouts"].append(call.get("dropouts"))
        row["starves"].append(len(call.get("starved_at_s") or []))
        row["late_p99_ms"].append(round(late["ready"]["p99"], 2) if late else None)
        row["woke_p99_ms"].append(round(late["woke"]["p99"], 2) if late else None)
    for row in out.values():
        row["median_p50_ms"] = float(np.median(row["p50_ms"]))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--restart", action="store_true", help="then kill and restart the server")
    ap.add_argument("--keep", type=Path, default=None, help="keep the recordings in DIR")
    ap.add_argument(
        "--playback-frames",
        type=int,
        default=0,
        help="frames queued for the speaker (0: just in time, the default)",
    )
    ap.add_argument(
        "--priority",
        type=_priorities,
        default=[scheduling.HIGH],
        help="the client's audio priority; a list (realtime,normal) compares them, call by call",
    )
    ap.add_argument("--calls", type=int, default=1, help="calls for each priority, alternating")
    ap.add_argument("--cpu-load", action="store_true", help="one core busy 30 ms of every 80")
    args = ap.parse_args(argv)
    seconds = 5.0 if args.quick else args.seconds
    why = available()
    if why:
        print(f"device_path: skipped, PulseAudio cannot start here: {why}")
        return
    calls: list[dict[str, Any]] = []
    with cpu_load(args.cpu_load):
        for n in range(args.calls):
            for priority in args.priority:
                label = f"{priority}-{n + 1}"
                with contextlib.ExitStack() as stack:
                    if args.keep:
                        many = len(args.priority) * args.calls > 1
                        root = args.keep / label if many else args.keep
                        root.mkdir(parents=True, exist_ok=True)
                    else:
                        tmp = tempfile.TemporaryDirectory(prefix="vc_pulse_")
                        root = Path(stack.enter_context(tmp))
                    r = run(seconds, args.restart, root, args.playback_frames, priority)
                calls.append(r)
                print(f"{label}: load {r['load']:.1f}, playback_frames {r['playback_frames']}, "
                      f"audio priority {r['call']['priority'].get('decode', '?')}")  # fmt: skip
                print(_line("call", r["call"]), flush=True)
    result = dict(calls[-1])
    result["cpu_load"] = args.cpu_load
    if len(calls) > 1:
        result["calls"] = calls
        result["by_priority"] = compare(calls)
        for priority, row in result["by_priority"].items():
            print(f"{priority}: mouth-to-ear p50 {row['p50_ms']} (median "
                  f"{row['median_p50_ms']:.1f} ms); dropouts {row['dropouts']}; ring starves "
                  f"{row['starves']}; decode stage ready after plan p99 {row['late_p99_ms']} ms, "
                  f"woke p99 {row['woke_p99_ms']} ms")  # fmt: skip
    path = write_result("device_path", result, args.out)
    if "after" in result:
        print(f"server killed: told after {result['told_after_s']:.2f} s ({result['told']}); "
              f"playing again {result['reopened_after_s']:.2f} s after it came back")  # fmt: skip
        print(_line("after", result["after"]))
    print(f"-> {path}")


if __name__ == "__main__":
    main()
