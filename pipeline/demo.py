"""``make demo``: a local relay and two headless clients talking through it.

Alice speaks a generated speech-like signal (or the microphone, with
``--device``); Bob, in the same channel, records what he hears to a WAV file
(or plays it, with ``--device``). Afterwards the demo lines Bob's recording up
with what Alice sent and prints the latency, the loss and how alike they are.
Everything goes encrypted (protocol 2: TLS control, sealed voice); the relay's
self-signed identity and the clients' pinned certificate stay in the output folder.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from pipeline.media import synthetic
from pipeline.media.audio_format import SAMPLE_RATE
from pipeline.media.sources import read_wav, write_wav
from relay.launch import start_relay, stop_relay

ROOT = Path(__file__).resolve().parent.parent


def client(
    port: int, name: str, inp: str, out: str, seconds: float, stats: Path, *extra: str
) -> subprocess.Popen[bytes]:
    # The demo's pins live next to its recordings, not in the user's config folder.
    env = dict(os.environ, XDG_CONFIG_HOME=str(stats.parent / "config"))
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline",
            "--server",
            f"127.0.0.1:{port}",
            "--name",
            name,
            "--input",
            inp,
            "--output",
            out,
            "--duration",
            str(seconds),
            "--stats-json",
            str(stats),
            "--quiet",
            *extra,
        ],
        cwd=ROOT,
        env=env,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--out", type=Path, default=ROOT / "out")
    ap.add_argument("--loss", type=float, default=0.0, help="chaos loss %% on Alice's side")
    ap.add_argument(
        "--device", action="store_true", help="Alice uses the microphone, Bob the speaker"
    )
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    sent_wav, heard_wav = args.out / "demo-sent.wav", args.out / "demo-heard.wav"
    sent = synthetic.speech_like(args.seconds, seed=7)
    write_wav(sent_wav, sent)
    alice_in = "device" if args.device else str(sent_wav)
    bob_out = "device" if args.device else str(heard_wav)

    relay, port = start_relay("--data-dir", str(args.out / "relay"))
    print(f"relay listening on 127.0.0.1:{port}")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        # Bob listens until Alice is done, however long a loaded machine takes to start
        # her processes: he stops (SIGTERM, a clean stop that still writes his stats)
        # only once she has exited.
        bob = client(port, "bob", "silence", bob_out, args.seconds + 60, args.out / "bob.json")
        procs.append(bob)
        time.sleep(1.5)  # Bob is connected and listening before Alice speaks
        alice = client(
            port,
            "alice",
            alice_in,
            "null",
            args.seconds + 6.0,  # her start-up counts too; her file loops until she stops
            args.out / "alice.json",
            "--loss",
            str(args.loss),
        )
        procs.append(alice)
        print(f"alice speaks for {args.seconds:.0f} s; bob listens ...", flush=True)
        alice.wait(timeout=args.seconds + 30)
        time.sleep(1.0)  # the last packets reach Bob's sink
        bob.send_signal(signal.SIGTERM)
        bob.wait(timeout=30)
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait(10)
        stop_relay(relay)
    return report(args, sent, heard_wav)


def report(args: argparse.Namespace, sent: np.ndarray, heard_wav: Path) -> int:
    try:
        bob = json.loads((args.out / "bob.json").read_text())
        alice = json.loads((args.out / "alice.json").read_text())
    except (OSError, ValueError) as exc:
        print(f"demo: a client did not finish ({exc}); see its messages above", file=sys.stderr)
        return 1
    m2e = bob.get("mouth_to_ear_ms")
    net = alice["stats"].get("network", {})
    dec = bob["stats"].get("decode", {})
    print("\ndemo summary")
    print(
        f"  alice sent       {net.get('sent', 0)} packets, "
        f"{net.get('chaos_dropped', 0)} dropped by chaos"
    )
    enc = alice["stats"].get("encode", {})
    bob_sent = bob["stats"].get("network", {}).get("sent", 0)
    print(
        f"  talk             alice in {enc.get('talk_mode', '?')}: {enc.get('spurts', 0)} talk "
        f"spurts, {enc.get('unsent_frames', 0)} frames of pause not sent; silent bob sent "
        f"{bob_sent} packets"
    )
    print(f"  bob lost         {dec.get('loss_percent', 0.0):.1f} % (concealed where missing)")
    bnet = bob["stats"].get("network", {})
    print(
        f"  encrypted        TLS control; sealed voice: bob opened {bnet.get('good', 0)} "
        f"datagrams, refused {bnet.get('bad_auth', 0)} forged and "
        f"{bnet.get('replayed', 0) + bnet.get('too_old', 0)} replayed"
    )
    if m2e:
        print(
            f"  mouth-to-ear     p50 {m2e['p50']:.1f} ms, p99 {m2e['p99']:.1f} ms "
            f"(estimated: arrival to playback measured, plus the UDP round trip)"
        )
    if args.device:
        print("  (device mode: nothing recorded to compare)")
        return 0
    heard = read_wav(heard_wav)
    # Per-second windows, so a jitter buffer adapting by a frame mid-call still lines up.
    corr = synthetic.align_windows(sent, heard)
    print(f"  heard            {len(heard) / SAMPLE_RATE:.1f} s recorded in {heard_wav}")
    print(f"  alignment        bob's recording matches alice's signal with correlation {corr:.2f}")
    ok = corr > 0.5
    print(
        "  result           " + ("voice went through" if ok else "NOT HEARD (correlation too low)")
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
