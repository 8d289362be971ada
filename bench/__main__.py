"""``make bench``: run every benchmark in turn; the arguments are passed to each."""

from __future__ import annotations

import sys

from bench import codec_speed, ring_ipc

BENCHMARKS = [ring_ipc, codec_speed]


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    for module in BENCHMARKS:
        print(f"== {module.__name__}", flush=True)
        module.main(args)


if __name__ == "__main__":
    main()
