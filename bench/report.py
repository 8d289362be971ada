"""Turn bench/results/*.json into one readable report: REPORT.md and PNG plots.

Reads whatever results exist (a benchmark that was not run is left out) and
writes ``REPORT.md``, ``latency_cdf.png`` (per-stage latency CDFs),
``latency_budget.png`` (the mouth-to-ear budget as a stacked bar against its
floor) and ``quality.png`` (PESQ against loss for each way of handling it).

    python -m bench.report [--out DIR]
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import RESULTS, parser

HOPS = [
    "capture_to_encode", "encode", "encode_to_network", "network_send", "network_round_trip",
    "receive_to_decode", "jitter_wait", "decode", "decode_to_playback",
]  # fmt: skip


def _load(folder: Path, name: str) -> dict[str, Any] | None:
    path = folder / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _row(cells: list[Any]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    return [_row(header), _row(["---"] * len(header)), *(_row(r) for r in rows)]


def _f(x: Any, digits: int = 2) -> str:
    return f"{x:.{digits}f}" if isinstance(x, int | float) else "-"


def latency_section(doc: dict[str, Any]) -> list[str]:
    out = ["## Mouth-to-ear latency of an echo call (loopback)", ""]
    out.append(
        f"Measured per frame from stage timestamps over {doc['seconds']:.0f} s per configuration, "
        "all in one run. The fixed jitter buffer starts at two packets and never adapts; the "
        "adaptive one holds each speaker's measured delay quantile plus a scheduling margin and "
        "reaches it by time-stretching. Times in ms."
    )
    for name, hops in doc["configs"].items():
        floor = hops["floor_ms"]
        sink = floor.get("sink_wait", floor.get("sink_block", 0.0))  # older results: a block
        out += ["", f"### {name}", ""]
        out.append(
            f"Floor: {floor['frame']:.0f} ms frame + {floor['opus_lookahead']:.1f} ms Opus "
            f"lookahead + {floor['jitter_hold']:.0f} ms jitter hold + {sink:.0f} ms "
            f"wait for the sink = **{floor['total']:.1f} ms**. Adaptive playout: target "
            f"{_f(hops.get('target_ms'), 1)} ms, delay {_f(hops.get('delay_ms'), 1)} ms above the "
            f"fastest packet; time-stretched {_f(hops.get('accelerated_ms'), 0)} ms shorter, "
            f"{_f(hops.get('expanded_ms'), 0)} ms longer."
        )
        out.append("")
        rows = [
            [h, *(_f(hops[h][k]) for k in ("p50", "p99", "p99.9", "max"))]
            for h in [*HOPS, "total"]
            if hops.get(h, {}).get("n")
        ]
        out += _table(["hop", "p50", "p99", "p99.9", "max"], rows)
        est = hops.get("mouth_to_ear_estimate_ms")
        if est:
            p50, p99 = _f(est["p50"], 1), _f(est["p99"], 1)
            over_ms = hops["overhead_above_floor_ms"]
            over = f"{abs(over_ms):.1f} ms {'above' if over_ms >= 0 else 'below'}"
            out += [
                "",
                f"Mouth-to-ear (total + capture block + lookahead): p50 **{p50} ms**, p99 {p99} ms;"
                f" {over} the floor. Frames: {hops['total']['n']}; playback underflows:"
                f" {hops.get('playback_underflows')}; concealed: {hops.get('concealed')}"
                + (
                    f" ({hops['mid_call']['concealed']} of the {hops['mid_call']['frames']} frames"
                    " from the first voice to the last; the rest is the fade when the call ends)"
                    if hops.get("mid_call")
                    else ""
                )
                + (
                    f"; the pacer's lead at the end: {hops['lead_ms']:.1f} ms"
                    if hops.get("lead_ms")
                    else ""
                )
                + ".",
            ]
    return out


def ring_section(doc: dict[str, Any]) -> list[str]:
    out = ["## One frame between two processes (ring vs alternatives, same run)", ""]
    rows = []
    for name, t in doc["results"].items():
        slow, fast = t["spacing_20ms"], t["spacing_2ms"]
        rows.append([name,
                     _f(slow["latency_us"]["p50"], 0), _f(slow["latency_us"]["p99"], 0),
                     _f(slow["latency_us"]["max"], 0), _f(slow["cpu_percent"], 1),
                     _f(fast["latency_us"]["p50"], 0), _f(fast["latency_us"]["p99"], 0),
                     _f(t["burst"]["frames_per_s"], 0)])  # fmt: skip
    out += _table(["transport", "20 ms p50 µs", "p99", "max", "consumer CPU %",
                   "2 ms p50 µs", "p99", "flat-out frames/s"], rows)  # fmt: skip
    return out


def codec_section(doc: dict[str, Any]) -> list[str]:
    out = [f"## Opus per frame (µs; {doc['bitrate']} bps, complexity {doc['complexity']})", ""]
    rows = [[name, _f(r["raw"]["p50"], 1), _f(r["raw"]["p99"], 1),
             _f(r["opuslib"]["p50"], 1), _f(r["opuslib"]["p99"], 1)]
            for name, r in doc["results"].items() if "raw" in r and "opuslib" in r]  # fmt: skip
    out += _table(["call", "raw p50", "raw p99", "opuslib p50", "opuslib p99"], rows)
    return out


def quality_section(doc: dict[str, Any]) -> list[str]:
    out = ["## Speech quality under loss (PESQ wideband, MOS-LQO 1-4.64)", ""]
    conds = list(dict.fromkeys(r["condition"] for r in doc["runs"]))
    modes = list(dict.fromkeys(r["mode"] for r in doc["runs"]))
    by = {(r["condition"], r["mode"]): r for r in doc["runs"]}
    impaired = {r["condition"]: r.get("impaired_loss_percent") for r in doc["runs"]}
    rows = [[c, _f(impaired.get(c), 1),
             *(_f(by[(c, m)]["pesq_wb"]) if (c, m) in by else "-" for m in modes)]
            for c in conds]  # fmt: skip
    out += _table(["loss model", "share lost in the run %", *modes], rows)
    out += ["", "A lost frame is rebuilt from the next packet's in-band FEC (fec+plc), "
            "synthesised by Opus PLC (plc), or played as silence (none). Loss is keyed by "
            "sequence number, so every mode loses the same frames of the stream."]  # fmt: skip
    jitter = doc.get("jitter_runs") or []
    if jitter:
        when = f", {doc['jitter_when']}" if doc.get("jitter_when") else ""
        title = f"### Playout under jitter: fixed against adaptive jitter buffer (same run{when})"
        out += ["", title, ""]
        rows = []
        for r in jitter:
            m2e = r.get("mouth_to_ear_ms") or {}
            rows.append([r["condition"], r["jitter_buffer"], _f(r["pesq_wb"]),
                         _f(m2e.get("p50"), 1), _f(m2e.get("p95"), 1), str(r.get("late")),
                         _f(r.get("target_ms"), 1), _f(r.get("accelerated_ms"), 0),
                         _f(r.get("expanded_ms"), 0)])  # fmt: skip
        header = ["path", "jitter buffer", "PESQ", "mouth-to-ear p50 ms", "p95 ms",
                  "late packets", "target ms", "accelerated ms", "expanded ms"]  # fmt: skip
        out += _table(header, rows)
        out += ["", "Jitter is the standard deviation of a normal one-way delay (it reorders); "
                "mouth-to-ear is measured per frame on one clock, talker capture to listener sink, "
                "plus the capture block and the Opus lookahead."]  # fmt: skip
    burst = doc.get("burst_runs") or []
    if burst:
        out += ["", "### Bursty loss: redundancy, FEC, PLC (same run)", ""]
        rows = []
        for r in burst:
            m2e = r.get("mouth_to_ear_ms") or {}
            rows.append([r["condition"], r["mode"], _f(r["pesq_wb"]), _f(r.get("body_kbps"), 1),
                         _f(r.get("wire_kbps"), 1), str(r.get("recovered_red")),
                         str(r.get("recovered")), str(r.get("concealed")),
                         _f(m2e.get("p50"), 1)])  # fmt: skip
        header = ["loss", "mode", "PESQ", "body kbit/s", "wire kbit/s", "from copies",
                  "from FEC", "concealed", "mouth-to-ear p50 ms"]  # fmt: skip
        out += _table(header, rows)
        summary = doc.get("burst_summary") or {}
        if summary:
            out += ["", f"10 % in bursts of 3 with redundancy: {summary['gap']} below the clean "
                    f"path (target 0.8), at {summary['body_ratio']} times the body bytes and "
                    f"{summary['wire_ratio']} times the wire bytes of the stream without copies "
                    "(target 1.7)."]  # fmt: skip
    return out


def feedback_section(doc: dict[str, Any]) -> list[str]:
    out = [f"## Loss feedback: {doc['loss_percent']:g} % loss on one listener's downlink only "
           "(PESQ wideband, same run)", ""]  # fmt: skip
    summary = doc["summary"]
    rows = [[case, _f(mean), _f(summary["median_pesq"].get(case))]
            for case, mean in summary["mean_pesq"].items()]  # fmt: skip
    out += _table(["path, feedback", "mean PESQ", "median PESQ"], rows)
    gap = summary["gap_to_symmetric"]
    out += ["", f"Downlink-only against the symmetric case: {_f(gap['off'])} below it without "
            f"feedback, {_f(gap['on'])} with it (target: at most {summary['target_gap']}). "
            f"No configured loss hint; passes in the first {doc['warmup_seconds']:g} s "
            "are not scored."]  # fmt: skip
    return out


def client_section(doc: dict[str, Any]) -> list[str]:
    out = ["## Client cost per process", ""]
    rows = []
    for state in ("talking", "idle"):
        for k, v in doc[state].items():
            rows.append([state, k, _f(v["cpu_percent"]), _f(v["rss_mib"], 1)])
    out += _table(["state", "process", "CPU %", "RSS MiB"], rows)
    modes = doc.get("vad_against_continuous")
    if modes:
        out += [
            "",
            f"A quiet room, side by side: voice activation {_f(modes['vad_total_cpu_percent'])} "
            f"% CPU over all six processes, {_f(modes['vad_datagrams_per_s'])} datagrams/s; "
            f"continuous {_f(modes['continuous_total_cpu_percent'])} %, "
            f"{_f(modes['continuous_datagrams_per_s'])} datagrams/s.",
        ]
    for signal, row in (doc.get("per_frame") or {}).items():
        out.append(
            f"Per 20 ms frame on {signal}: noise suppression and gain control "
            f"{_f(row['noise_suppression_and_agc_us']['p50'], 0)} µs, voice activity detector "
            f"{_f(row['vad_us']['p50'], 0)} µs (p50)."
        )
    return out


def relay_section(doc: dict[str, Any]) -> list[str]:
    out = ["## Relay load (100-byte datagrams, fan-out 9, loopback)", ""]
    ramp = doc.get("ramp")
    if ramp:
        best = ramp.get("best") or {}
        taken = 100 * ramp["limits"]["min_taken_share"]
        out.append(
            f"Ramp, default relay pinned to one core: talkers at 50 datagrams/s in channels of "
            f"10, stepped up until the relay took in under {taken:.0f}"
            f" % of what was sent or the p99 forwarding delay passed "
            f"{ramp['limits']['p99_delay_us'] / 1000:.0f} ms. Best sustained: "
            f"**{_f(best.get('forwarded_per_s'), 0)} forwarded/s** with {best.get('talkers')} "
            f"talkers, relay CPU {_f(best.get('relay_cpu_cores'))} cores, p99 delay "
            f"{_f(best.get('delay_p99_us'), 0)} µs. Memory: "
            f"{_f(ramp.get('memory_per_session_kib'), 1)} KiB per session "
            f"({ramp.get('sessions')} sessions)."
        )
        out.append("")
        rows = [[r["talkers"], _f(r["sent_in_per_s"], 0), _f(r["forwarded_per_s"], 0),
                 _f(100 * r["taken_share"], 1), _f(r["delay_us"].get("p50"), 0),
                 _f(r["delay_us"].get("p99"), 0), _f(r["relay_cpu_cores"]),
                 "yes" if r["within_limits"] else "no"] for r in ramp["steps"]]  # fmt: skip
        out += _table(["talkers", "in/s", "forwarded/s", "taken %", "delay p50 µs",
                       "p99 µs", "relay CPU", "within limits"], rows)  # fmt: skip
        out.append("")
    best = doc.get("best_of_repeats", {})
    if best:
        out.append("Saturated (more offered than one core forwards) and paced delay, by relay "
                   "variant and channels of 10 talkers:")  # fmt: skip
        out.append("")
        rows = [[k, _f(v["forwarded_per_s"], 0), _f(v["forwarded_per_relay_cpu_s"], 0),
                 _f(v["relay_cpu_cores"]), _f(v["paced_delay_p50_us"], 0),
                 _f(v["paced_delay_p99_us"], 0)] for k, v in best.items()]  # fmt: skip
        out += _table(["variant", "forwarded/s", "per relay CPU-s", "relay CPU",
                       "paced p50 µs", "paced p99 µs"], rows)  # fmt: skip
    return out


def control_section(doc: dict[str, Any]) -> list[str]:
    out = ["## Control plane under load (loopback, a real relay process)", ""]
    st, ping = doc["storm"], doc["storm"]["ping_ms"]
    out.append(
        f"Join storm: {st['sessions']} sessions send {st.get('rounds', 1)} join(s) each at once "
        f"({2 * st['joins']} presence events, {st['joins'] * st['sessions'] * 2:,} deliveries), "
        f"{st.get('storms', 1)} time(s) in a row. "
        f"Presence settled in {_f(st['storm_s'])} s at the longest"
        f"{' (cut off)' if st['cut_off'] else ''}; "
        f"control ping during the storms (one at a time, every 5 ms): p50 "
        f"**{_f(ping.get('p50'), 1)} ms**, p99 **{_f(ping.get('p99'), 1)} ms**, max "
        f"{_f(ping.get('max'), 1)} ms over {ping.get('n', 0)} pings; relay CPU "
        f"{_f(st['relay_cpu_s'])} s per storm; "
        f"{_f(st['received_bytes_per_session'] / 1024, 1)} KiB received per session per storm."
    )
    out += ["", "Auth latency (auth sent to the whole welcome in), by sessions held:", ""]
    rows = [[level, _f(s.get("p50")), _f(s.get("p99")), _f(s.get("max")),
             _f(s.get("relay_cpu_ms_per_auth"))]
            for level, s in doc["auth_ms"].items()]  # fmt: skip
    out += _table(["sessions", "p50 ms", "p99 ms", "max ms", "relay CPU ms per auth"], rows)
    return out


def playout_section(doc: dict[str, Any]) -> list[str]:
    out = ["## Playout alone (simulated clock: real speech, Opus and jitter buffer)", "",
           "The jitter buffer and decoder fed at the arrival times of `bench/netem.py`'s path "
           "model, a sink taking a frame every 20 ms of a simulated clock: no process, socket "
           "or scheduling of this machine in the figures. PESQ wideband of every pass of the "
           "reference; the delay is capture to the start of playing (no device), in ms. "
           "Mean over the seeds.", ""]  # fmt: skip
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in doc["runs"]:
        groups.setdefault((r["condition"], r["playout"]), []).append(r)
    rows = []
    for (cond, playout), rs in groups.items():

        def mean(key: str, rs: list[dict[str, Any]] = rs) -> float:
            return float(np.mean([r[key] for r in rs]))

        delay = float(np.mean([r["playout_delay_ms"].get("p50", np.nan) for r in rs]))
        rows.append([cond, playout, _f(mean("pesq_wb")), _f(delay, 1), _f(mean("late"), 1),
                     _f(mean("concealed"), 1), _f(mean("accelerated_ms"), 0),
                     _f(mean("expanded_ms"), 0)])  # fmt: skip
    out += _table(["path", "playout", "PESQ", "delay p50", "late", "concealed",
                   "accelerated ms", "expanded ms"], rows)  # fmt: skip
    return out


def generic_section(name: str, doc: dict[str, Any]) -> list[str]:
    body = {k: v for k, v in doc.items() if k not in ("benchmark", "when", "machine")}
    return [f"## {name}", "", "```json", json.dumps(body, indent=1)[:4000], "```"]


def plots(folder: Path) -> list[str]:
    """Draw the PNGs that the available results allow; return their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    frames = folder / "latency_frames.npz"
    lat = _load(folder, "latency")
    if frames.exists() and lat:
        data = np.load(frames)
        # The default (just in time) where it was measured, else the 1-frame queue.
        config = next(
            (c for c in ("adaptive0", "adaptive1") if f"{c}/total" in data),
            next(iter(data)).split("/")[0],
        )
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for hop in [*HOPS, "total"]:
            key = f"{config}/{hop}"
            if key in data and len(data[key]):
                x = np.sort(data[key])
                ax.plot(x, np.arange(1, len(x) + 1) / len(x), label=hop)
        ax.set_xscale("log")
        ax.set_xlabel("ms (log)")
        ax.set_ylabel("fraction of frames")
        ax.set_title(
            f"Latency per stage, echo call ({config.rstrip('0123456789')} jitter buffer, "
            + (
                "each frame just in time)"
                if config.endswith("0")
                else f"playback queue {config[-1]})"
            )
        )
        ax.legend(fontsize=7, loc="lower right")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(folder / "latency_cdf.png", dpi=110)
        plt.close(fig)
        made.append("latency_cdf.png")

        fig, ax = plt.subplots(figsize=(8, 3.2))
        names = list(lat["configs"])
        for i, name in enumerate(names):
            hops = lat["configs"][name]
            floor = hops["floor_ms"]
            left = 0.0
            segments = [
                ("capture block", floor["frame"]),
                ("opus lookahead", floor["opus_lookahead"]),
            ]
            segments += [(h, hops[h]["p50"]) for h in HOPS if hops.get(h, {}).get("n")]
            for j, (label, width) in enumerate(segments):
                ax.barh(i, width, left=left, color=plt.cm.tab20(j), label=label if i == 0 else None)
                left += width
        for i, name in enumerate(names):
            total = lat["configs"][name]["floor_ms"]["total"]
            ax.plot([total, total], [i - 0.4, i + 0.4], color="k", ls="--")
        ax.set_yticks(range(len(names)), names)
        ax.set_xlabel("ms (medians per hop)")
        ax.set_title("Mouth-to-ear budget")
        ax.legend(fontsize=6, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.3))
        fig.tight_layout()
        fig.savefig(folder / "latency_budget.png", dpi=110)
        plt.close(fig)
        made.append("latency_budget.png")
    q = _load(folder, "quality")
    if q:
        fig, ax = plt.subplots(figsize=(7, 4))
        conds = list(dict.fromkeys(r["condition"] for r in q["runs"]))
        lost = {r["condition"]: r.get("impaired_loss_percent") for r in q["runs"]}
        for mode in dict.fromkeys(r["mode"] for r in q["runs"]):
            by = {r["condition"]: r["pesq_wb"] for r in q["runs"] if r["mode"] == mode}
            ys = [by.get(c, np.nan) for c in conds]
            ax.plot(range(len(conds)), ys, marker="o", label=mode)
        labels = [f"{c}\n(lost {lost[c]:.1f} %)" if lost.get(c) is not None else c for c in conds]
        ax.set_xticks(range(len(conds)), labels, fontsize=7)
        ax.set_ylabel("PESQ (wideband MOS-LQO)")
        ax.set_title("Speech quality under loss")
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(folder / "quality.png", dpi=110)
        plt.close(fig)
        made.append("quality.png")
    return made


def tunnel_section(doc: dict[str, Any]) -> list[str]:
    out = ["## Voice over UDP and through the TCP tunnel (loopback)", ""]
    out.append(
        f"The echo call of the latency benchmark, {doc['seconds']:.0f} s over each path in one "
        f"run (load {doc['load_before']:.1f} before, {doc['load_after']:.1f} after). "
        "`network_round_trip` is the network stage's send to its receive: over TCP it holds "
        "the local hop to the control process and back, TLS both ways and the relay's "
        "control loop. Times in ms."
    )
    out += ["", "| hop | UDP p50 | UDP p99 | TCP p50 | TCP p99 |", "|---|---|---|---|---|"]
    udp, tcp = doc["configs"]["udp"], doc["configs"]["tcp"]
    for hop in ("network_round_trip", "jitter_wait", "total"):
        out.append(
            f"| {hop} | {_f(udp[hop]['p50'], 2)} | {_f(udp[hop]['p99'], 2)} | "
            f"{_f(tcp[hop]['p50'], 2)} | {_f(tcp[hop]['p99'], 2)} |"
        )
    sock, bus = doc["local_hop_us"]["unix_socket"], doc["local_hop_us"]["bus"]
    out += [
        "",
        "The local hop network <-> control, one way, 180 bytes at 50/s: Unix datagram "
        f"socket p50 {_f(sock['p50'], 0)} us, p99 {_f(sock['p99'], 0)} us; the ZeroMQ bus "
        f"p50 {_f(bus['p50'], 0)} us, p99 {_f(bus['p99'], 0)} us.",
    ]
    return out


def cluster_section(doc: dict[str, Any]) -> list[str]:
    out = ["## The relay cluster (loopback, docs/cluster.md)", ""]
    h, cost, r, big = doc["hop"], doc["cost"], doc["redis"], doc["hundred_relays"]
    one, two = h["one_relay"], h["two_relays"]
    out.append(
        f"Load {doc['load_before']:.1f} before, {doc['load_after']:.1f} after. One datagram "
        "every 20 ms, send to receive (us), a listener on the speaker's relay against one on "
        "another relay, taking turns:"
    )
    out += ["", "| path | p50 | p99 | n |", "|---|---|---|---|"]
    out.append(f"| one relay | {_f(one['p50'], 0)} | {_f(one['p99'], 0)} | {one['n']} |")
    out.append(f"| two relays | {_f(two['p50'], 0)} | {_f(two['p99'], 0)} | {two['n']} |")
    out += ["", "| one channel, 12 users, 6 talking | delivered | CPU-s | idle CPU-s | "
            "delivered per CPU-s | per CPU-s over idle |", "|---|---|---|---|---|---|"]  # fmt: skip
    for name, c in cost.items():
        out.append(f"| {name.replace('_', ' ')} | {c['delivered']} of {c['expected']} | "
                   f"{_f(c['cpu_s'])} | {_f(c.get('idle_cpu_s'))} | "
                   f"{_f(c['delivered_per_cpu_s'], 0)} | "
                   f"{_f(c.get('delivered_per_cpu_s_over_idle'), 0)} |")  # fmt: skip
    steps, cap = r.get("steps", {}), doc.get("redis_capacity")
    per_step = ", ".join(f"{name} {_f(st['commands'], 1)}" for name, st in steps.items())
    out += [
        "",
        f"Redis, three relays: {_f(r['idle_commands_per_s'], 1)} commands/s idle "
        f"({_f(r['idle_commands_per_s_per_relay'], 1)} per relay"
        + (f", {_f(r['idle_out_bytes_per_s'], 0)} bytes/s out" if "idle_out_bytes_per_s" in r
           else "")
        + f"), {_f(r['commands_per_join'], 1)} commands"
        + (f" ({per_step})" if per_step else "")
        + f" and {_f(r['redis_cpu_us_per_join'], 0)} us of "
        f"Redis CPU per session (auth, move, leave), {_f(r['events_published_per_join'], 1)} "
        f"events published each, delivered {_f(r['pubsub_fanout'], 1)} times (pub/sub fan-out). "
        f"A 100-relay cluster: {_f(big['idle_commands_per_s'], 0)} commands/s idle reading "
        f"{_f(big['registry_records_read_per_s'], 0)} relay records/s"
        + (f" ({_f(big['registry_bytes_out_per_s'] / 1e6, 1)} MB/s out of Redis)"
           if "registry_bytes_out_per_s" in big else "")
        + f", and {_f(big['deliveries_per_join'], 0)} event deliveries per session"
        + (f" (Redis measured at {_f(cap['cpu_us_per_command'], 1)} us of CPU a command and "
           f"{_f(cap['cpu_us_per_delivery'], 2)} us a pub/sub delivery to "
           f"{cap['subscribers']} subscribers: {_f(big['redis_cpu_us_per_join'], 0)} us a "
           f"session, {_f(big['joins_per_redis_core_s'], 0)} sessions a second per core)"
           if cap else "")
        + ".",
    ]  # fmt: skip
    return out


SECTIONS = {
    "cluster": cluster_section,
    "tunnel": tunnel_section,
    "latency": latency_section,
    "ring_ipc": ring_section,
    "quality": quality_section,
    "quality_feedback": feedback_section,
    "client_cost": client_section,
    "codec_speed": codec_section,
    "relay_load": relay_section,
    "control_load": control_section,
    "playout_sim": playout_section,
}
ORDER = [
    "latency", "tunnel", "relay_load", "control_load", "cluster", "client_cost", "quality",
    "playout_sim",
    "quality_feedback",
    "ring_ipc", "codec_speed",
]  # fmt: skip


def build(folder: Path) -> Path:
    lines = ["# Benchmark report", ""]
    whens = []
    for name in ORDER:
        doc = _load(folder, name)
        if doc is None:
            continue
        whens.append(f"{name} {doc.get('when', '?')}")
        try:
            lines += SECTIONS.get(name, lambda d, n=name: generic_section(n, d))(doc)
        except (KeyError, TypeError):  # a result of an older shape: show it raw
            lines += generic_section(name, doc)
        lines.append("")
    for png in plots(folder):
        lines += [f"![{png}]({png})", ""]
    lines += ["Runs: " + "; ".join(whens), ""]
    path = folder / "REPORT.md"
    path.write_text("\n".join(lines))
    return path


def main(argv: list[str] | None = None) -> None:
    ap = parser(__doc__ or "")
    args = ap.parse_args(argv)
    print(f"wrote {build(args.out if args.out else RESULTS)}")


if __name__ == "__main__":
    main()
