"""pipeline/media/sources.py: source/sink specs, WAV in and out, frame sources."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from pipeline.media import synthetic
from pipeline.media.audio_format import FRAME_SAMPLES, SAMPLE_RATE
from pipeline.media.sources import (
    MediaError,
    MediaSpec,
    WavSink,
    open_sink,
    open_source,
    parse_input,
    parse_output,
    read_wav,
    write_wav,
)


def test_parse_specs(tmp_path: Path) -> None:
    wav = tmp_path / "a.wav"
    write_wav(wav, synthetic.tone(0.1))
    assert parse_input("device") == MediaSpec("device")
    assert parse_input("device:3") == MediaSpec("device", "3")
    assert parse_input("tone:440") == MediaSpec("tone", "440")
    assert parse_input("speech") == MediaSpec("speech")
    assert parse_input(str(wav)) == MediaSpec("wav", str(wav))
    assert parse_output("null") == MediaSpec("null")
    assert parse_output(str(tmp_path / "out.wav")).kind == "wav"


@pytest.mark.parametrize("text", ["mic", "tone:abc", "missing.wav", "speech:x"])
def test_bad_input_says_what_to_use(text: str) -> None:
    with pytest.raises(MediaError):
        parse_input(text)


def test_bad_output_folder() -> None:
    with pytest.raises(MediaError, match="does not exist"):
        parse_output("/no/such/dir/x.wav")


def test_wav_round_trip(tmp_path: Path) -> None:
    sig = synthetic.tone(0.5, 440, 0.5)
    write_wav(tmp_path / "t.wav", sig)
    back = read_wav(tmp_path / "t.wav")
    assert len(back) == -(-len(sig) // FRAME_SAMPLES) * FRAME_SAMPLES
    assert np.max(np.abs(back[: len(sig)] - sig)) < 1e-3


def test_wav_stereo_and_other_rate_are_converted(tmp_path: Path) -> None:
    path = tmp_path / "s.wav"
    n = 16000
    left = (np.sin(2 * np.pi * 500 * np.arange(n) / 16000) * 10000).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(np.stack([left, left], axis=1).tobytes())
    data = read_wav(path)
    assert abs(len(data) - SAMPLE_RATE) <= 1
    assert 0.25 < np.max(np.abs(data)) < 0.35


def test_not_a_wav(tmp_path: Path) -> None:
    path = tmp_path / "bad.wav"
    path.write_bytes(b"RIFF\x00\x00garbage")
    with pytest.raises(MediaError, match="not a PCM WAV"):
        read_wav(path)


def test_sources_give_frames() -> None:
    for spec in (MediaSpec("tone"), MediaSpec("speech"), MediaSpec("silence")):
        src = open_source(spec)
        for _ in range(100):
            frame = src.read()
            assert frame is not None and frame.shape == (FRAME_SAMPLES,)
            assert frame.dtype == np.float32


def test_wav_source_ends_unless_looped(tmp_path: Path) -> None:
    write_wav(tmp_path / "a.wav", synthetic.tone(0.05))  # 3 frames
    once = open_source(MediaSpec("wav", str(tmp_path / "a.wav")), loop=False)
    assert [once.read() is not None for _ in range(4)] == [True, True, True, False]
    looped = open_source(MediaSpec("wav", str(tmp_path / "a.wav")), loop=True)
    assert all(looped.read() is not None for _ in range(10))


def test_wav_sink_does_not_touch_the_callers_frame(tmp_path: Path) -> None:
    frame = np.full(FRAME_SAMPLES, 0.5, dtype=np.float32)
    sink = open_sink(MediaSpec("wav", str(tmp_path / "o.wav")))
    sink.write(frame)
    sink.close()
    assert np.all(frame == 0.5)
    assert np.allclose(read_wav(tmp_path / "o.wav"), 0.5, atol=1e-4)


def test_an_appending_sink_keeps_what_a_previous_one_recorded(tmp_path: Path) -> None:
    path = tmp_path / "out.wav"
    first = synthetic.tone(0.2, 440.0)
    with WavSink(path) as sink:
        for frame in synthetic.frames(first):
            sink.write(frame)
    second = synthetic.tone(0.1, 880.0)
    with WavSink(path, append=True) as sink:  # a restarted playback stage
        for frame in synthetic.frames(second):
            sink.write(frame)
    got = read_wav(path)
    assert len(got) == len(first) + len(second)
    assert np.allclose(got[: len(first)], first, atol=1e-3)
    assert np.allclose(got[len(first) :], second, atol=1e-3)
    assert not (tmp_path / "out.wav.part").exists()


def test_appending_to_nothing_or_to_a_foreign_file_starts_afresh(tmp_path: Path) -> None:
    for name, content in (("missing.wav", None), ("junk.wav", b"not a wav file")):
        path = tmp_path / name
        if content is not None:
            path.write_bytes(content)
        with WavSink(path, append=True) as sink:
            sink.write(np.zeros(960, dtype=np.float32))
        assert len(read_wav(path)) == 960
