"""Headless client: ``python -m pipeline --server HOST:PORT --name NAME ...``."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from pipeline.client.config import (
    PRIORITY_DEFAULT,
    TALK_DEFAULT,
    ClientConfig,
    split_server,
    split_servers,
)
from pipeline.client.pipeline_graph import MAX_PLAYBACK_FRAMES
from pipeline.client.supervisor import ClientFailed, Supervisor
from pipeline.client.terminal_keys import KEYS_HELP, RawKeys, TalkKeys
from pipeline.core.client_view import ClientView
from pipeline.core.talk import MODES
from pipeline.ipc import events as ev
from pipeline.ipc import scheduling
from pipeline.ipc.bus import BusClient
from pipeline.media.sound_device import check_device, list_devices
from pipeline.media.sources import INPUT_HELP, OUTPUT_HELP, MediaError, parse_input, parse_output


def parse_address(text: str) -> tuple[str, int]:
    try:
        return split_server(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_server(text: str) -> list[tuple[str, int]]:
    """``--server``: one relay or several, comma-separated (tried in turn, SPEC.md)."""
    try:
        return split_servers(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def playback_frames(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= MAX_PLAYBACK_FRAMES:
        raise argparse.ArgumentTypeError(f"expected 0..{MAX_PLAYBACK_FRAMES}, got {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="voicechat", description="Headless voice chat client")
    ap.add_argument(
        "--server",
        type=parse_server,
        default=[("127.0.0.1", 8080)],
        metavar="HOST:PORT[,HOST:PORT...]",
        help="the relay: a host name (IPv4 or IPv6), an address, or [IPV6]:PORT; several, "
        "comma-separated, are tried in turn when one cannot be reached or is lost",
    )
    ap.add_argument(
        "--voice-path",
        choices=("auto", "udp", "tcp"),
        default="auto",
        help="auto: UDP, through the control connection while UDP is blocked (default); "
        "udp or tcp: always that way",
    )
    ap.add_argument("--name", help="your name on the relay (required to connect)")
    ap.add_argument("--list-devices", action="store_true", help="list the sound devices and exit")
    ap.add_argument("--channel", default="", help="join this channel after connecting")
    ap.add_argument("--input", default="device", help=INPUT_HELP)
    ap.add_argument("--output", default="device", help=OUTPUT_HELP)
    ap.add_argument("--duration", type=float, default=0.0, help="seconds to run; 0 = until Ctrl-C")
    ap.add_argument("--loss", type=float, default=0.0, help="chaos: drop this %% of sent packets")
    ap.add_argument("--whisper", type=int, default=0, metavar="USER_ID")
    ap.add_argument("--bitrate", type=int, default=48000)
    ap.add_argument(
        "--playback-frames",
        type=playback_frames,
        default=0,
        help=f"frames kept queued for the sink, 1..{MAX_PLAYBACK_FRAMES} (latency vs. underflows);"
        " 0 (default): each frame made just before the sink wants it, as early as this"
        " machine's scheduling needs",
    )
    ap.add_argument("--stats-json", type=Path, help="write the final stats here")
    ap.add_argument("--trace", type=Path, help="folder for per-frame timestamps (benchmarks)")
    ap.add_argument("--seed", type=int, help="seed of the chaos dropper")
    ap.add_argument(
        "--udp-via",
        type=parse_address,
        metavar="HOST:PORT",
        help="send voice through this address (an impairment proxy) instead",
    )
    ap.add_argument(
        "--loss-hint",
        type=float,
        default=0.0,
        help="loss %% the encoder expects before it measures any (FEC strength)",
    )
    ap.add_argument("--no-fec", action="store_true", help="no Opus in-band FEC (benchmarks)")
    ap.add_argument(
        "--no-plc", action="store_true", help="lost frames play as silence (benchmarks)"
    )
    ap.add_argument(
        "--priority",
        choices=scheduling.CHOICES,
        default=PRIORITY_DEFAULT,
        help="how the audio processes ask to be scheduled: high (default; nice -10, above"
        " ordinary programs and below the sound server), realtime (SCHED_RR 3, else high) or"
        " normal; the status line says when they got less",
    )
    ap.add_argument(
        "--jitter",
        choices=("adaptive", "fixed"),
        default="adaptive",
        help="playout: follow the measured jitter and time-stretch, or a fixed 2-packet start",
    )
    ap.add_argument(
        "--talk",
        choices=MODES,
        default=TALK_DEFAULT,
        help="vad: send while you speak (voice activation, the default); continuous: always; "
        "ptt: push to talk, the space key toggling it in the terminal (v/c/p switch modes)",
    )
    ap.add_argument(
        "--no-input-processing",
        action="store_true",
        help="send the microphone as it is: no noise suppression and automatic gain control",
    )
    ap.add_argument("--quiet", action="store_true", help="no live status line")
    ap.add_argument("--log-level", default="WARNING")
    ap.add_argument("--password", default="", help="the relay's password, if it has one")
    ap.add_argument(
        "--accept-new-certificate",
        action="store_true",
        help="the relay's certificate changed and its operator confirmed it: pin the new one",
    )
    return ap


def format_devices(devices: list[dict[str, Any]]) -> str:
    """The devices PortAudio reports, one a line, with what ``--input device:N`` takes."""
    if not devices:
        return "no sound devices (no sound system, or PortAudio finds none); use files instead"
    lines = []
    for i, d in enumerate(devices):
        kinds = "/".join(
            k
            for k, n in (("in", d.get("max_input_channels")), ("out", d.get("max_output_channels")))
            if n
        )
        rate = d.get("default_samplerate")
        lines.append(f"{i:3d}  {d.get('name', '?')}  ({kinds or 'none'}, {rate:.0f} Hz)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list_devices:
        print(format_devices(list_devices()))
        return 0
    if not args.name:
        parser.error("--name is required")
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    try:
        source, sink = parse_input(args.input), parse_output(args.output)
        if source.is_device:
            check_device(source, "input")
        if sink.is_device:
            check_device(sink, "output")
    except MediaError as exc:
        print(f"voicechat: {exc}", file=sys.stderr)
        return 2
    if args.trace:
        args.trace.mkdir(parents=True, exist_ok=True)
    cfg = ClientConfig(
        host=args.server[0][0],
        port=args.server[0][1],
        fallbacks=tuple(args.server[1:]),
        name=args.name,
        channel=args.channel,
        source=source,
        sink=sink,
        loss_percent=args.loss,
        whisper=args.whisper,
        bitrate=args.bitrate,
        playback_frames=args.playback_frames,
        seed=args.seed,
        trace_dir=str(args.trace) if args.trace else None,
        udp_via=args.udp_via,
        fec=not args.no_fec,
        loss_hint=args.loss_hint,
        plc=not args.no_plc,
        jitter=args.jitter,
        talk=args.talk,
        input_processing=not args.no_input_processing,
        password=args.password,
        accept_new_certificate=args.accept_new_certificate,
        voice_path=args.voice_path,
        priority=args.priority,
    )
    return run_client(cfg, args.duration, args.stats_json, live=not args.quiet)


def run_client(cfg: ClientConfig, duration: float, stats_json: Path | None, live: bool) -> int:
    view = ClientView()
    stopping: list[str] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.append(signal.Signals(signum).name)

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    tty = live and sys.stdout.isatty()
    code = 0
    sup = Supervisor(cfg)
    talk = TalkKeys(cfg.talk)
    try:
        sup.start()
        assert sup.broker is not None
        with BusClient(sup.broker.address, topics=("",)) as bus, RawKeys() as keys:
            if keys.active and live:
                _print(tty, f"* talk: {talk.describe()}; {KEYS_HELP}")
            end = time.monotonic() + duration if duration > 0 else float("inf")
            next_line = 0.0
            while not stopping and time.monotonic() < end:
                sup.check(0)
                for ch in keys.read():
                    for cmd in talk.key(ch):
                        bus.publish(cmd)
                    if ch in " vcpVCP" and live:
                        _print(tty, f"* talk: {talk.describe()}")
                for event in bus.poll(0.1):
                    view.apply(event)
                    if isinstance(event, ev.EncodeStats):
                        for cmd in talk.corrections(event):
                            bus.publish(cmd)
                    if isinstance(event, ev.ChatLine) and live:
                        _print(tty, f"[{event.channel}] {event.name}: {event.text}")
                    elif isinstance(event, ev.Notice) and live:
                        _print(tty, f"* {event.text}")
                if view.state.state == ev.FAILED:  # a wrong password, a changed certificate
                    print(f"\nvoicechat: {view.state.reason}", file=sys.stderr)
                    code = 1
                    break
                now = time.monotonic()
                if live and now >= next_line:
                    if tty:
                        sys.stdout.write("\r\033[K" + view.status_line())
                        sys.stdout.flush()
                        next_line = now + 0.5
                    else:
                        print(view.status_line(), flush=True)
                        next_line = now + 5.0
            # One last round of stats before stopping, so the summary is current.
            deadline = time.monotonic() + 0.6
            while time.monotonic() < deadline:
                for event in bus.poll(0.1):
                    view.apply(event)
    except ClientFailed as exc:
        print(f"\nvoicechat: {exc}", file=sys.stderr)
        code = 1
    finally:
        sup.stop()
        for s, handler in old.items():
            signal.signal(s, handler)
    if tty:
        print()
    summary = view.summary()
    summary["restarts"] = sup.restart_counts
    if stats_json:
        stats_json.write_text(json.dumps(summary, indent=2) + "\n")
    if live:
        print(format_summary(view))
    return code


def _print(tty: bool, line: str) -> None:
    print(("\r\033[K" if tty else "") + line, flush=True)


def format_summary(view: ClientView) -> str:
    net = view.network or ev.NetworkStats()
    dec = view.decode or ev.DecodeStats()
    out = view.playback or ev.PlaybackStats()
    enc = view.encode or ev.EncodeStats()
    lines = [
        "summary:",
        f"  connection   {view.state.state} {view.state.reason}".rstrip(),
        f"  sent         {net.sent} packets ({net.chaos_dropped} dropped by chaos)",
        f"  talk         {enc.talk_mode or '?'}: {enc.spurts} spurts, {enc.unsent_frames} frames "
        f"of silence not sent, {enc.muted_frames} muted",
        f"  received     {net.received} packets",
        f"  sealed voice {net.good} good, {net.late} late, {net.lost} lost, "
        f"{net.replayed + net.too_old} replayed, {net.bad_auth} failed authentication",
        f"  loss         {dec.loss_percent:.1f} % (last 10 s)",
        f"  played       {out.frames} frames, {out.underflows} underflows",
    ]
    m2e = view.mouth_to_ear
    if m2e:
        lines.append(f"  mouth-to-ear p50 {m2e.p50:.1f} ms, p99 {m2e.p99:.1f} ms")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
