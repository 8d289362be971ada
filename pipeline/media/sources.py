"""Where audio comes from and goes to: WAV files, generated signals, silence, null, a device.

``--input`` and ``--output`` strings parse into specs here. File and generated
sources hand out 960-sample frames on request (the capture stage paces them);
the sound device is callback-driven and lives in pipeline/media/sound_device.py.
"""

from __future__ import annotations

import os
import wave
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np

from pipeline.media import synthetic
from pipeline.media.audio_format import FRAME_SAMPLES, SAMPLE_RATE


class MediaError(ValueError):
    """A source or sink that cannot be used, with what to do instead."""


INPUT_HELP = "device[:NAME], FILE.wav, tone[:HZ], speech[:SEED], silence"
OUTPUT_HELP = "device[:NAME], FILE.wav, null"


@dataclass(frozen=True, slots=True)
class MediaSpec:
    kind: str  # device | wav | tone | speech | silence | null
    arg: str = ""

    @property
    def is_device(self) -> bool:
        return self.kind == "device"


def parse_input(text: str) -> MediaSpec:
    kind, _, arg = text.partition(":")
    if kind in ("device", "tone", "speech", "silence"):
        if kind == "tone" and arg:
            _number(arg, "tone frequency")
        if kind == "speech" and arg:
            _number(arg, "speech seed")
        return MediaSpec(kind, arg)
    if text.lower().endswith(".wav"):
        if not Path(text).is_file():
            raise MediaError(f"input file {text} does not exist")
        return MediaSpec("wav", text)
    raise MediaError(f"unknown input {text!r}; use one of: {INPUT_HELP}")


def parse_output(text: str) -> MediaSpec:
    kind, _, arg = text.partition(":")
    if kind in ("device", "null"):
        return MediaSpec(kind, arg)
    if text.lower().endswith(".wav"):
        parent = Path(text).resolve().parent
        if not parent.is_dir():
            raise MediaError(f"output folder {parent} does not exist")
        return MediaSpec("wav", text)
    raise MediaError(f"unknown output {text!r}; use one of: {OUTPUT_HELP}")


def _number(text: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise MediaError(f"{what} must be a number, got {text!r}") from None


class FrameSource:
    """Frames from a signal held in memory (generated, or read from a WAV file)."""

    def __init__(self, signal: np.ndarray, loop: bool) -> None:
        self._frames = synthetic.frames(signal) if len(signal) else np.zeros((1, FRAME_SAMPLES))
        self._frames = self._frames.astype(np.float32)
        self._loop = loop
        self._i = 0

    def read(self) -> np.ndarray | None:
        """The next frame (a view, valid until the next call), or None at the end."""
        if self._i >= len(self._frames):
            if not self._loop:
                return None
            self._i = 0
        frame = self._frames[self._i]
        self._i += 1
        return frame


def open_source(spec: MediaSpec, loop: bool = True) -> FrameSource:
    """A frame source for anything but the device. Generated signals loop; files loop if asked."""
    if spec.kind == "tone":
        freq = float(spec.arg) if spec.arg else 1000.0
        # A whole number of cycles per second keeps the loop seamless.
        return FrameSource(synthetic.tone(1.0, freq), loop=True)
    if spec.kind == "speech":
        return FrameSource(synthetic.speech_like(10.0, seed=int(float(spec.arg or 1))), loop=True)
    if spec.kind == "silence":
        return FrameSource(np.zeros(FRAME_SAMPLES, dtype=np.float32), loop=True)
    if spec.kind == "wav":
        return FrameSource(read_wav(Path(spec.arg)), loop=loop)
    raise MediaError(f"{spec.kind} is not a frame source")


def read_wav(path: Path) -> np.ndarray:
    """A PCM WAV file as 48 kHz mono float32 (channels averaged, other rates resampled)."""
    try:
        with wave.open(str(path), "rb") as w:
            rate, width, channels = w.getframerate(), w.getsampwidth(), w.getnchannels()
            raw = w.readframes(w.getnframes())
    except (wave.Error, EOFError) as exc:
        raise MediaError(f"{path}: not a PCM WAV file ({exc})") from None
    if width == 2:
        data = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    elif width == 4:
        data = np.frombuffer(raw, dtype="<i4").astype(np.float32) / 2147483648.0
    elif width == 1:
        data = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    else:
        raise MediaError(f"{path}: {8 * width}-bit samples are not supported; use 16-bit PCM")
    data = data.reshape(-1, channels).mean(axis=1)
    if rate != SAMPLE_RATE:
        n = int(len(data) * SAMPLE_RATE / rate)
        data = np.interp(np.arange(n) * rate / SAMPLE_RATE, np.arange(len(data)), data)
    return data.astype(np.float32)


class WavSink:
    """Writes frames to a 16-bit 48 kHz mono WAV file.

    With ``append`` (a playback stage restarted mid-call) the audio already in the
    file is kept and the new frames follow it: the existing samples are copied into
    a new file beside it, which then replaces the old one and goes on being written.
    A file that is missing or not ours starts afresh.
    """

    def __init__(self, path: Path, append: bool = False) -> None:
        kept = _readable_wav(path) if append else None
        target = path.with_name(path.name + ".part") if kept else path
        self._w = wave.open(str(target), "wb")  # noqa: SIM115 (closed in close())
        self._w.setnchannels(1)
        self._w.setsampwidth(2)
        self._w.setframerate(SAMPLE_RATE)
        if kept:
            with wave.open(str(path), "rb") as old:
                while chunk := old.readframes(SAMPLE_RATE):
                    self._w.writeframes(chunk)
            os.replace(target, path)  # the open file follows the rename
        self._scratch = np.empty(FRAME_SAMPLES, dtype=np.float32)
        self._pcm = np.empty(FRAME_SAMPLES, dtype="<i2")

    def write(self, frame: np.ndarray) -> None:
        n = len(frame)
        scaled = self._scratch[:n]
        np.clip(frame, -1.0, 32767 / 32768, out=scaled)
        scaled *= 32768.0
        self._pcm[:n] = scaled
        self._w.writeframes(self._pcm[:n].tobytes())

    def close(self) -> None:
        self._w.close()

    def __enter__(self) -> WavSink:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class NullSink:
    def write(self, frame: np.ndarray) -> None:
        pass

    def close(self) -> None:
        pass


def _readable_wav(path: Path) -> bool:
    """Whether ``path`` is a WAV file in the format WavSink writes (so it can be continued)."""
    try:
        with wave.open(str(path), "rb") as w:
            return (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, SAMPLE_RATE)
    except (OSError, wave.Error, EOFError):
        return False


def open_sink(spec: MediaSpec, append: bool = False) -> WavSink | NullSink:
    """A file or null sink; ``append`` continues a WAV file instead of truncating it."""
    if spec.kind == "wav":
        return WavSink(Path(spec.arg), append)
    if spec.kind == "null":
        return NullSink()
    raise MediaError(f"{spec.kind} is not a file sink")


def write_wav(path: Path, signal: np.ndarray) -> None:
    with WavSink(path) as sink:
        for frame in synthetic.frames(signal):
            sink.write(frame)
