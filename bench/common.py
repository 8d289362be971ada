"""What every benchmark shares: percentile summaries and the results folder."""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def summarize(samples: Sequence[float] | np.ndarray) -> dict[str, float]:
    """Median and tail percentiles of one series, in the unit it was given in."""
    a = np.asarray(samples, dtype=np.float64)
    if a.size == 0:
        return {"n": 0}
    p50, p90, p99, p999 = np.percentile(a, [50, 90, 99, 99.9])
    return {
        "n": int(a.size),
        "p50": float(p50),
        "p90": float(p90),
        "p99": float(p99),
        "p99.9": float(p999),
        "max": float(a.max()),
        "mean": float(a.mean()),
    }


def write_result(name: str, data: dict[str, Any], results_dir: Path = RESULTS) -> Path:
    """Write ``results/<name>.json`` with the machine it ran on; return the path."""
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{name}.json"
    doc = {
        "benchmark": name,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"python": platform.python_version(), "cpu": platform.processor() or "?"},
        **data,
    }
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


def parser(description: str) -> argparse.ArgumentParser:
    """The arguments every benchmark takes."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--quick", action="store_true", help="a short smoke run, numbers meaningless")
    ap.add_argument("--out", type=Path, default=RESULTS, help="folder for the JSON result")
    return ap
