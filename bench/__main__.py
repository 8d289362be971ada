"""``make bench``: run every benchmark in turn, then write the report.

python -m bench [--quick] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import importlib
import time

from bench import report
from bench.common import RESULTS

# Cheapest first; relay_load and quality take minutes each.
BENCHMARKS = [
    "codec_speed", "ring_ipc", "playout_sim", "latency", "device_path", "tunnel", "client_cost",
    "control_load", "cluster", "relay_load", "quality", "input_choice",
]  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="smoke runs: numbers meaningless")
    ap.add_argument("--only", nargs="*", choices=BENCHMARKS, help="run just these")
    args = ap.parse_args(argv)
    passed = ["--quick"] if args.quick else []
    for name in args.only or BENCHMARKS:
        module = importlib.import_module(f"bench.{name}")
        print(f"== {name}", flush=True)
        t0 = time.monotonic()
        module.main(passed)
        print(f"== {name} done in {time.monotonic() - t0:.0f} s", flush=True)
    print(f"wrote {report.build(RESULTS)}")


if __name__ == "__main__":
    main()
