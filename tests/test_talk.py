"""pipeline/core/talk.py: talk modes, the VAD's hold and pre-roll, spurt starts, in memory.

The signals are synthetic with a known answer: silent frames and loud ones at known
indices, so which frames must be sent (pre-roll before the first loud one, the hold
after the last) is arithmetic. The detector is a plain energy threshold here, which
such signals answer exactly; WebRTC's detector on speech is tested in test_vad.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core.talk import (
    CONTINUOUS,
    HOLD_FRAMES,
    PREROLL_FRAMES,
    PTT,
    VAD,
    TalkError,
    TalkGate,
)
from pipeline.media import synthetic
from pipeline.media.audio_format import FRAME_SAMPLES


def loud(frame: np.ndarray) -> bool:
    return float(np.sqrt(np.mean(frame * frame))) > 0.01


def signal(pattern: str) -> list[np.ndarray]:
    """One frame per character: '.' silence (-80 dBFS noise), '#' a loud tone frame."""
    rng = np.random.default_rng(1)
    tone = synthetic.tone(0.02, 440.0, 0.3)
    return [
        tone.copy() if c == "#" else (1e-4 * rng.standard_normal(FRAME_SAMPLES)).astype(np.float32)
        for c in pattern
    ]


def run(gate: TalkGate[int], frames: list[np.ndarray]) -> tuple[list[int], list[int]]:
    """(indices sent, in order; indices whose batch started a spurt, the first of each)."""
    sent, starts = [], []
    for i, f in enumerate(frames):
        out = gate.push(f, i)
        if out and gate.started:
            starts.append(out[0][1])
        sent += [tag for _, tag in out]
    return sent, starts


def test_vad_sends_pre_roll_speech_and_hold_then_nothing() -> None:
    frames = signal("." * 10 + "#" * 5 + "." * 30)
    gate: TalkGate[int] = TalkGate(loud, VAD, hold_frames=12, preroll_frames=2)
    sent, starts = run(gate, frames)
    assert sent == list(range(8, 15 + 12))  # 2 pre-roll, 5 loud, 12 held
    assert starts == [8]
    assert gate.counts.spurts == 1 and gate.counts.sent == len(sent)
    assert gate.counts.unsent == len(frames) - len(sent)
    assert not gate.talking


def test_pre_rolled_frames_are_the_audio_captured_then() -> None:
    frames = signal("...#")
    frames[1][:] = 0.001  # marks frame 1 (still quiet)
    gate: TalkGate[int] = TalkGate(loud, VAD, preroll_frames=2)
    for i in range(3):
        assert gate.push(frames[i], i) == []
    frames[1][:] = 0.5  # the caller reuses its buffer: the pre-roll kept a copy
    out = gate.push(frames[3], 3)
    assert [t for _, t in out] == [1, 2, 3]
    assert np.all(out[0][0] == np.float32(0.001))
    assert out[-1][0] is frames[3]


def test_hold_bridges_a_pause_shorter_than_it() -> None:
    frames = signal("...." + "#" * 5 + "." * 11 + "#" * 5 + "." * 20)
    gate: TalkGate[int] = TalkGate(loud, VAD, hold_frames=12, preroll_frames=2)
    sent, starts = run(gate, frames)
    assert starts == [2]  # one spurt: word endings and the pause kept
    assert sent == list(range(2, 4 + 5 + 11 + 5 + 12))


def test_a_pause_longer_than_the_hold_is_two_spurts_each_with_its_pre_roll() -> None:
    frames = signal("...." + "#" * 5 + "." * 20 + "#" * 3 + "." * 15)
    gate: TalkGate[int] = TalkGate(loud, VAD, hold_frames=12, preroll_frames=2)
    sent, starts = run(gate, frames)
    assert starts == [2, 27]
    assert sent == [*range(2, 9 + 12), *range(27, 32 + 12)]


def test_the_defaults_are_what_the_measurements_chose() -> None:
    # 240 ms of hold (within the 200-300 ms that keeps word endings), 40 ms of pre-roll.
    assert HOLD_FRAMES * 20 == 240
    assert PREROLL_FRAMES == 2
    frames = signal("." * 5 + "#" + "." * 20)
    sent, _ = run(TalkGate(loud), frames)
    assert sent == list(range(5 - PREROLL_FRAMES, 6 + HOLD_FRAMES))


def test_an_onset_rule_of_two_frames_ignores_one_click() -> None:
    frames = signal("...#....##" + "." * 5)
    gate: TalkGate[int] = TalkGate(loud, VAD, hold_frames=2, preroll_frames=2, onset_frames=2)
    sent, starts = run(gate, frames)
    assert starts == [7]
    assert sent == [7, 8, 9, 10, 11]


def test_muted_audio_never_reaches_a_pre_roll() -> None:
    frames = signal("...." + "#")
    gate: TalkGate[int] = TalkGate(loud, VAD, preroll_frames=3)
    gate.push(frames[0], 0)
    gate.push(frames[1], 1)
    gate.mute()  # frames 2 and 3 captured while muted
    gate.mute()
    out = gate.push(frames[4], 4)
    assert [t for _, t in out] == [4]
    assert gate.started


def test_mute_ends_a_spurt_and_the_next_frame_starts_one() -> None:
    gate: TalkGate[int] = TalkGate(loud, CONTINUOUS)
    frames = signal("....")
    assert [gate.push(f, i) != [] and gate.started for i, f in enumerate(frames[:2])] == [
        True,
        False,
    ]
    gate.mute()
    gate.push(frames[3], 3)
    assert gate.started and gate.counts.spurts == 2


def test_continuous_sends_everything_and_never_asks_the_detector() -> None:
    def never(frame: np.ndarray) -> bool:
        raise AssertionError("the detector is not asked outside vad mode")

    frames = signal("..##..")
    sent, starts = run(TalkGate(never, CONTINUOUS), frames)
    assert sent == list(range(6)) and starts == [0]


def test_push_to_talk_sends_only_while_pressed_with_no_pre_roll() -> None:
    def never(frame: np.ndarray) -> bool:
        raise AssertionError("the detector is not asked outside vad mode")

    gate: TalkGate[int] = TalkGate(never, PTT)
    frames = signal("#" * 12)
    sent, starts = [], []
    for i, f in enumerate(frames):
        gate.pressed = 3 <= i < 6 or 8 <= i < 10
        out = gate.push(f, i)
        if out and gate.started:
            starts.append(i)
        sent += [t for _, t in out]
    assert sent == [3, 4, 5, 8, 9]
    assert starts == [3, 8]


def test_the_detector_hears_the_probe_when_given_one() -> None:
    quiet, tone = signal(".#")
    gate: TalkGate[int] = TalkGate(loud, VAD, preroll_frames=0)
    assert gate.push(tone, 0, probe=quiet) == []  # processed loud, microphone quiet
    out = gate.push(quiet, 1, probe=tone)
    assert len(out) == 1 and out[0][0] is quiet  # what is sent is the frame, not the probe


def test_switching_modes_at_run_time() -> None:
    gate: TalkGate[int] = TalkGate(loud, VAD, hold_frames=0, preroll_frames=2)
    quiet = signal(".")[0]
    assert gate.push(quiet, 0) == []
    gate.mode = CONTINUOUS
    assert [t for _, t in gate.push(quiet, 1)] == [1]  # nothing kept under VAD comes along
    gate.mode = VAD
    assert gate.push(quiet, 2) == []
    gate.mode = PTT
    assert gate.push(quiet, 3) == []
    with pytest.raises(TalkError, match="expected one of vad, continuous, ptt"):
        gate.mode = "whisper"
    with pytest.raises(TalkError):
        TalkGate(loud, "always")
    with pytest.raises(ValueError):
        TalkGate(loud, VAD, onset_frames=0)


def test_a_threshold_keeps_speech_quieter_than_it_off_the_wire() -> None:
    def speech(frame: np.ndarray) -> bool:
        return True  # a detector that takes everything for speech: the threshold decides

    gate: TalkGate[int] = TalkGate(speech, VAD, hold_frames=0, preroll_frames=0)
    tone = synthetic.tone(0.02, 440.0, 0.3)  # RMS 0.3 / sqrt(2): about -9.5 dBFS
    quiet = 0.1 * tone  # about -29.5 dBFS
    assert [t for _, t in gate.push(quiet, 0)] == [0]  # no threshold: any speech goes
    gate.threshold = 0.1  # -20 dBFS: between the two
    assert gate.push(quiet, 1) == []
    assert [t for _, t in gate.push(tone, 2)] == [2]
    assert gate.counts.speech == 2  # the quiet frame under it was not counted as speech
    gate.mode = CONTINUOUS  # the threshold is voice activation's only
    assert [t for _, t in gate.push(quiet, 3)] == [3]


def ends(gate: TalkGate[int], frames: list[np.ndarray]) -> tuple[list[int], list[int]]:
    """(the last index of each batch that ended a spurt; the first of each that began one)."""
    last, starts = [], []
    for i, f in enumerate(frames):
        out = gate.push(f, i)
        if out and gate.started:
            starts.append(out[0][1])
        if out and gate.ending:
            last.append(out[-1][1])
        assert not (gate.ending and not out)
    return last, starts


def test_the_holds_last_frame_is_flagged_as_its_spurts_end() -> None:
    frames = signal("...." + "#" * 5 + "." * 20 + "#" * 3 + "." * 15)
    gate: TalkGate[int] = TalkGate(loud, VAD, hold_frames=12, preroll_frames=2)
    assert ends(gate, frames) == ([20, 43], [2, 27])  # 8 + 12, 31 + 12
    # A pause the hold just spans is still one spurt, with no end inside it.
    gate = TalkGate(loud, VAD, hold_frames=12, preroll_frames=2)
    assert ends(gate, signal("...." + "#" * 5 + "." * 11 + "#" * 5 + "." * 20)) == ([36], [2])


def test_speech_right_after_the_flagged_end_starts_a_marked_spurt_and_loses_nothing() -> None:
    frames = signal("...." + "#" * 5 + "." * 12 + "#" * 5 + "." * 20)
    gate: TalkGate[int] = TalkGate(loud, VAD, hold_frames=12, preroll_frames=2)
    sent, _ = run(gate, frames)
    assert sent == list(range(2, 4 + 5 + 12 + 5 + 12))  # every frame as before
    gate = TalkGate(loud, VAD, hold_frames=12, preroll_frames=2)
    assert ends(gate, frames) == ([20, 37], [2, 21])  # the end told, then a new start


def test_only_voice_activation_knows_its_end_in_time() -> None:
    for mode in (CONTINUOUS, PTT):
        gate: TalkGate[int] = TalkGate(loud, mode, hold_frames=12)
        gate.pressed = True
        frames = signal("#" * 3 + "." * 20)
        assert ends(gate, frames)[0] == []
    gate = TalkGate(loud, VAD, hold_frames=12)
    gate.push(signal("#")[0], 0)
    gate.mode = PTT  # a mode change mid-hold ends nothing in advance
    gate.pressed = True
    assert ends(gate, signal("." * 20))[0] == []
