"""bench/quality.py: resampling and scoring, and a quick end-to-end run (no timing assertions)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench import quality
from pipeline.core.concealment import CONCEAL_FRAMES
from pipeline.media import synthetic

pytestmark = pytest.mark.timeout(240)


def test_resampling_round_trip_keeps_speech_band() -> None:
    ref = quality.read_wav_16k(quality.REFERENCE)
    back = quality.down3(quality.up3(ref))
    assert len(back) == len(ref)
    err = back[1000:-1000] - ref[1000:-1000]
    assert float(np.sqrt(np.mean(err**2))) < 0.05 * float(np.sqrt(np.mean(ref**2)))


def test_score_is_high_for_a_clean_copy_and_low_for_noise() -> None:
    ref = quality.read_wav_16k(quality.REFERENCE)
    clean = np.concatenate([np.zeros(4800, dtype=np.float32), quality.up3(ref)])
    mos, corr, passes = quality.score(ref, clean)
    assert passes == 1
    assert mos > 4.0 and corr > 0.95
    rng = np.random.default_rng(1)
    noisy = clean + rng.normal(0, 0.2, len(clean)).astype(np.float32)
    assert quality.score(ref, noisy)[0] < mos - 1.0
    one_pass = synthetic.frames(quality.up3(ref)).ravel()  # the source loops whole frames
    looped = np.concatenate([np.zeros(999, dtype=np.float32), one_pass, one_pass, one_pass])
    assert quality.score(ref, looped)[2] == 3
    # A stream that began mid-loop: the partial first pass is not scored.
    late = np.concatenate([np.zeros(999, dtype=np.float32), one_pass[50_000:], one_pass, one_pass])
    mos_late, _corr, passes = quality.score(ref, late)
    assert passes == 2 and mos_late > 4.0
    # One whose first 200 ms the playout dropped: that pass is scored, silent head and all.
    clipped = np.concatenate([np.zeros(999 + 9600, dtype=np.float32), one_pass[9600:],
                              one_pass, one_pass])  # fmt: skip
    assert quality.score(ref, clipped)[2] == 3


def test_quick_run_scores_a_call(tmp_path: Path) -> None:
    # One call (the loss scenario); the jitter scenarios run the same run_one with another
    # path and playout, and would triple the time.
    quality.main(["--quick", "--only", "loss", "--out", str(tmp_path)])
    (row,) = json.loads((tmp_path / "quality.json").read_text())["runs"]
    assert 1.0 <= row["pesq_wb"] <= 4.7
    assert row["frames_played"] > 100


def test_feedback_summary_compares_downlink_only_with_the_symmetric_case() -> None:
    rows = [
        {"condition": c.name, "feedback": c.feedback, "pesq_wb": pesq}
        for c, pesq in zip(quality.FEEDBACK_CASES, [3.3, 3.4, 2.5, 3.2], strict=True)
    ]
    summary = quality.feedback_summary(rows + rows)
    assert summary["mean_pesq"]["5% listener downlink only, feedback off"] == 2.5
    assert summary["median_pesq"]["5% listener downlink only, feedback on"] == 3.2
    assert summary["gap_to_symmetric"] == {"off": 0.8, "on": 0.2}
    assert summary["met"]


def test_the_seq_keyed_loss_pattern_has_the_models_figures() -> None:
    lost = quality.loss_pattern(20_000, seed=1, loss=10.0, burst=3.0)
    assert lost == quality.loss_pattern(20_000, seed=1, loss=10.0, burst=3.0)
    assert 0.08 < len(lost) / 20_000 < 0.12
    runs = sum(1 for i in lost if i - 1 not in lost)
    assert 2.5 < len(lost) / runs < 3.5


def test_in_memory_copies_rebuild_what_fec_and_plc_cannot() -> None:
    lost = {40, 41, 100, 101, 102, 200}
    plain_ = quality.red_bitrate_run(12000, lost, 1, ())
    red = quality.red_bitrate_run(12000, lost, 1, (2, 3))
    end = CONCEAL_FRAMES  # the stream's end is concealed (and faded) in both
    assert plain_["recovered_red"] == 0 and plain_["concealed"] >= end + 3
    # Every one from a copy: the buffer holds 4 frames, enough for the copies 3 back.
    assert red["recovered_red"] == 6 and red["recovered"] == 0 and red["concealed"] == end
    assert red["body_bytes_per_packet"] > plain_["body_bytes_per_packet"]


def test_burst_summary_checks_the_issues_target() -> None:
    rows = [
        {"condition": "clean", "mode": "fec+plc", "pesq_wb": 4.2},
        {"condition": "GE 10% (mean burst 3)", "mode": "fec+plc", "pesq_wb": 2.2,
         "body_kbps": 48.0, "wire_kbps": 86.0},
        {"condition": "GE 10% (mean burst 3)", "mode": "red+fec+plc", "pesq_wb": 3.5,
         "body_kbps": 72.0, "wire_kbps": 110.0},
    ]  # fmt: skip
    s = quality.burst_summary(rows)
    assert s["gap"] == 0.7 and s["body_ratio"] == 1.5 and s["met"]
    assert not quality.burst_summary([{**r, "pesq_wb": 2.0} if r["mode"] == "red+fec+plc" else r
                                      for r in rows])["met"]  # fmt: skip
    # Bandwidth is the wire's: bodies twice the size are within 1.7 times on the wire...
    doubled = [{**r, "body_kbps": 96.0, "wire_kbps": 134.0} if r["mode"] == "red+fec+plc"
               else r for r in rows]  # fmt: skip
    assert quality.burst_summary(doubled)["met"]
    # ...and more than 1.7 times the wire's bytes is not.
    wide = [{**r, "wire_kbps": 147.0} if r["mode"] == "red+fec+plc" else r for r in rows]
    assert not quality.burst_summary(wide)["met"]
    assert quality.burst_summary(rows[:1]) == {}


def test_an_in_memory_run_scores_its_first_pass_apart() -> None:
    # The first pass holds the playout's climb to the copies' depth; pesq_wb is the rest.
    r = quality.red_bitrate_run(None, set(), 2, (), adaptive=True, loss_hint=0)
    assert r["passes_scored"] == 1 and r["pesq_first_pass"] > 3.5 and r["pesq_wb"] > 3.5
