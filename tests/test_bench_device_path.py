"""bench/device_path.py (and bench/pulse.py): a call through a real PulseAudio server.

The client runs on PortAudio (pipeline/media/sound_device.py) with a virtual
microphone and speaker of a private PulseAudio; the room is recorded from outside
on the server's clock. Skipped, saying why, only where PulseAudio cannot start.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench import device_path, pulse
from pipeline.media import synthetic
from pipeline.media.audio_format import FRAME_SAMPLES, SAMPLE_RATE

pytestmark = pytest.mark.timeout(150)


PATH = [(0.0, 140.0), (2.0, 100.0), (4.0, 60.0)]  # (from second, lag ms): a moving delay


def lag_at(sample: int) -> int:
    return int([lag for t, lag in PATH if t * SAMPLE_RATE <= sample][-1] * SAMPLE_RATE / 1000)


def test_a_moving_delay_is_no_dropout_and_a_hole_is() -> None:
    """The dropout count looks for each block at its own stretch's lag: the playout's
    delay moves during a call, which moves audio, not loses it. (The call's median lag
    alone counted 7 silent blocks here, at word edges; and every one of the 4-5 that a
    15 s call through PulseAudio showed was there at its stretch's lag.)"""
    mouth = synthetic.speech_like(6.0, seed=4)
    ear = np.zeros(len(mouth) + SAMPLE_RATE, dtype=np.float32)
    for first in range(0, len(mouth), FRAME_SAMPLES):
        at = first + lag_at(first)
        ear[at : at + FRAME_SAMPLES] = mouth[first : first + FRAME_SAMPLES]
    track = pulse.window_lags(mouth, ear, max_ms=200)
    assert {round(lag) for _, lag in track} == {140, 100, 60}
    assert pulse.dropouts(mouth, ear, track) == []
    speech = np.flatnonzero(pulse.frame_levels(mouth) > 0.02)
    holes = [int(k) * FRAME_SAMPLES for k in speech[len(speech) // 4 :: 25][:5]]
    for first in holes:  # five speech blocks that never come out
        ear[first + lag_at(first) : first + lag_at(first) + FRAME_SAMPLES] = 0
    found = pulse.dropouts(mouth, ear, pulse.window_lags(mouth, ear, max_ms=200))
    # Each hole found from its start, and nothing outside them (a quiet 2.5 ms inside
    # one, below the speech level, may split it in two).
    assert {first for first, _ in found} >= set(holes)
    assert all(any(h <= f and f + n <= h + FRAME_SAMPLES for h in holes) for f, n in found)


def test_a_delay_that_moves_in_a_pause_is_no_dropout_and_a_5_ms_hole_is() -> None:
    """The delay moves in the pause after a word, late in a window: the word's last
    blocks, heard whole at the lag they had, sit nearer the next window, which measures
    the new lag (two 60 s calls through PulseAudio each counted one such "dropout"). A
    hole shorter than a frame, in speech, is a dropout."""
    speech = synthetic.speech_like(6.0, seed=4)
    levels = pulse.frame_levels(speech)
    word_end = next(  # the first word after 2 s followed by two silent blocks
        k
        for k in range(2 * SAMPLE_RATE // FRAME_SAMPLES, len(levels) - 2)
        if levels[k - 1] > 0.02 and levels[k] < 1e-4 and levels[k + 1] < 1e-4
    )
    # Silence before it puts the word's end 80 % into a window (window_lags: 0.5 s each).
    window = SAMPLE_RATE // 2
    pad = (window * 4 // 5 - word_end * FRAME_SAMPLES) % window
    mouth = np.concatenate([np.zeros(pad, np.float32), speech])
    cut = pad + word_end * FRAME_SAMPLES + FRAME_SAMPLES // 2  # in the pause
    before, after = 60 * SAMPLE_RATE // 1000, 75 * SAMPLE_RATE // 1000  # 15 ms more
    ear = np.zeros(len(mouth) + SAMPLE_RATE, dtype=np.float32)
    ear[before : before + cut] = mouth[:cut]
    ear[after + cut : after + len(mouth)] = mouth[cut:]
    track = pulse.window_lags(mouth, ear, max_ms=200)
    assert {round(lag) for _, lag in track} == {60, 75}
    # The word's last block is nearer the next window, which measured the new lag: at
    # that lag alone (as the count was) it is silent.
    last = pad + (word_end - 1) * FRAME_SAMPLES
    starts = np.array([s for s, _ in track])
    assert track[int(np.argmin(np.abs(starts - last)))][1] == pytest.approx(75, abs=0.5)
    assert not ear[last + after : last + after + FRAME_SAMPLES].any()
    assert pulse.dropouts(mouth, ear, track) == []
    loud = [int(k) for k in np.flatnonzero(pulse.frame_levels(mouth) > 0.05)]
    k = next(k for k in loud if k * FRAME_SAMPLES > cut + SAMPLE_RATE)  # far from the move
    hole = k * FRAME_SAMPLES + FRAME_SAMPLES // 4
    ear[hole + after : hole + after + pulse.DROPOUT_BLOCK] = 0  # 5 ms lost
    assert pulse.dropouts(mouth, ear, track) == [(hole, pulse.DROPOUT_BLOCK)]
    # Off the blocks' grid too, by 1 ms: still found (one 2.5 ms block lies inside).
    ear[hole + after : hole + after + pulse.DROPOUT_BLOCK] = mouth[
        hole : hole + pulse.DROPOUT_BLOCK
    ]
    off = hole + 3 * pulse.DROPOUT_BLOCK + SAMPLE_RATE // 1000
    ear[off + after : off + after + pulse.DROPOUT_BLOCK] = 0
    assert len(pulse.dropouts(mouth, ear, track)) == 1


def test_the_claim_is_held_against_each_window_it_was_measured_in(tmp_path: Path) -> None:
    # Frames captured from 1 s for 2 s of speech, heard 96 ms later (the client says
    # 96 ms too); then 1 s of silence in which the playout dropped to 60 ms. Only the
    # speech is measured from outside: the silence's frames are no part of the claim
    # (the whole stretch's median was 60 ms, 36 ms short: the CI run of stop 28).
    offset = 12345
    ms = 1_000_000
    rows = []
    for k in range(150):
        capture = 1_000 * ms + k * 20 * ms
        m2e = 96 if k < 100 else 60
        media = offset + capture * SAMPLE_RATE // 1_000_000_000
        rows.append((k, capture + (m2e - device_path.OPUS_LOOKAHEAD_MS) * ms, 1, media))
    trace = tmp_path / "playback.npy"
    np.save(trace, np.array(rows, dtype=np.int64))
    windows = [(1_000 * ms + w * 500 * ms, 96.0 + w) for w in range(4)]  # 96..99 measured
    claim, diff = device_path.claimed_ms(trace, offset, windows) or (0.0, 0.0)
    assert claim == pytest.approx(96.0, abs=0.1)
    assert diff == pytest.approx(96.0 - 97.5, abs=0.1)  # per window, then the median
    assert device_path.claimed_ms(trace, offset, [(9_000 * ms, 96.0)]) is None  # no frames


def run_call(seconds: float, restart: bool, root: Path) -> dict[str, Any]:
    """bench.device_path.run, skipped (saying why) where PulseAudio cannot start at all.
    A server that started once and does not come back is a failure (RuntimeError)."""
    why = pulse.available()
    if why:
        pytest.skip(f"PulseAudio cannot start here: {why}")
    try:
        return device_path.run(seconds, restart, root)
    except pulse.PulseError as exc:
        pytest.skip(f"PulseAudio cannot start here: {exc}")


def test_heard_and_back_after_the_sound_server_restarts(tmp_path: Path) -> None:
    r = run_call(2.0, True, tmp_path)
    call, after = r["call"], r["after"]
    assert call["mouth_to_ear_ms"]["n"] >= 1, call  # the signal comes out
    # The client's own times (PortAudio's ADC and DAC times) are what the recording shows:
    # the old stamps (callback time, nominal output latency) were 50 ms short. Here within
    # 20 ms, a loaded machine's spread over 2 s; the 5 ms goal is the soak test's below.
    assert abs(call["claimed_minus_measured_ms"]) <= 20.0, call
    # The server dies: the user is told, in words, within a second.
    assert r["told_after_s"] <= 1.0, r
    assert "lost" in r["told"] and "reopening" in r["told"], r
    assert any("microphone lost" in n for n in r["notices"]), r["notices"]
    assert any("speaker lost" in n for n in r["notices"]), r["notices"]
    # It comes back: the devices reopen by themselves, the user is told, audio flows.
    assert any("microphone open" in n and "back after" in n for n in r["notices"]), r
    assert any("speaker open" in n and "back after" in n for n in r["notices"]), r
    assert after["mouth_to_ear_ms"]["n"] >= 1, after
    assert "lost" not in after["status"], after


@pytest.mark.soak
def test_the_latency_the_client_reports_is_what_the_recording_shows(tmp_path: Path) -> None:
    r = run_call(8.0, False, tmp_path)["call"]
    assert r["mouth_to_ear_ms"]["n"] >= 10, r
    assert abs(r["claimed_minus_measured_ms"]) <= 5.0, r  # per frame, the same stretch
    # The status line's figure: a p50 over the last 20 s (the call's first seconds too,
    # when the playout held a different depth), the network estimated from the ping.
    assert abs(r["reported_minus_measured_ms"]) <= 15.0, r


@pytest.mark.soak
def test_a_minute_without_a_dropout(tmp_path: Path) -> None:
    r = run_call(60.0, False, tmp_path)["call"]
    assert r["mouth_to_ear_ms"]["n"] >= 100, r
    assert r["dropouts"] == 0, r
    assert abs(r["claimed_minus_measured_ms"]) <= 5.0, r
