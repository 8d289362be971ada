"""pipeline/media/sound_device.py: the device adapters, driven by a fake sounddevice."""

from __future__ import annotations

import types
from typing import Any

import numpy as np
import pytest

from pipeline.ipc.ring import Ring
from pipeline.media import sound_device
from pipeline.media.audio_format import FRAME_BYTES, FRAME_SAMPLES
from pipeline.media.sources import MediaError, MediaSpec


class FakeStream:
    """Stands in for sounddevice's streams: records its settings, runs the callback on demand."""

    def __init__(self, **kw: Any) -> None:
        self.kw = kw
        self.latency = 0.01
        self.started = self.closed = False

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.started = False

    def close(self) -> None:
        self.closed = True


def status(**flags: bool) -> Any:
    return types.SimpleNamespace(**{"input_overflow": False, "output_underflow": False, **flags})


@pytest.fixture
def fake_sd(monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    sd = types.SimpleNamespace(InputStream=FakeStream, OutputStream=FakeStream)
    monkeypatch.setattr(sound_device, "_sounddevice", lambda: sd)
    return sd


def test_input_callback_copies_blocks_into_the_ring(fake_sd: types.SimpleNamespace) -> None:
    with Ring.create(4, FRAME_BYTES, label="devin") as ring:
        mic = sound_device.InputDevice(MediaSpec("device", "2"), ring)
        stream = mic._stream
        assert isinstance(stream, FakeStream)
        assert stream.kw["blocksize"] == FRAME_SAMPLES and stream.kw["device"] == 2
        block = np.linspace(-1, 1, FRAME_SAMPLES, dtype=np.float32).reshape(-1, 1)
        for _ in range(6):  # two more than the ring holds
            stream.kw["callback"](block, FRAME_SAMPLES, None, status())
        stream.kw["callback"](block, FRAME_SAMPLES, None, status(input_overflow=True))
        assert ring.stats.dropped == 3 and mic.overflows == 1 and mic.seq == 7
        slot = ring.read(timeout=0)
        assert slot is not None and slot.seq == 1 and slot.timestamp > 0
        assert np.array_equal(slot.samples(), block[:, 0])
        ring.release()
        mic.start()
        mic.close()
        assert stream.closed


def test_output_callback_plays_the_ring_then_silence(fake_sd: types.SimpleNamespace) -> None:
    played: list[tuple[int, int, int, int]] = []
    with Ring.create(4, FRAME_BYTES, label="devout") as ring:
        spk = sound_device.OutputDevice(MediaSpec("device"), ring, lambda *a: played.append(a))
        stream = spk._stream
        assert isinstance(stream, FakeStream) and stream.kw["device"] is None
        frame = np.full(FRAME_SAMPLES, 0.25, dtype=np.float32)
        out = np.ones((FRAME_SAMPLES, 1), dtype=np.float32)
        for _ in range(3):  # before the first frame: silence, but no underflow
            stream.kw["callback"](out, FRAME_SAMPLES, None, status(output_underflow=True))
        assert not out.any() and spk.underflows == 0
        ring.write(frame, seq=9, timestamp=123, flags=1, media=480)
        stream.kw["callback"](out, FRAME_SAMPLES, None, status())
        assert np.all(out == 0.25) and played == [(9, 123, 1, 480)]
        # Ring empty and PortAudio flagging it too: one underflow, not two.
        stream.kw["callback"](out, FRAME_SAMPLES, None, status(output_underflow=True))
        assert not out.any() and spk.underflows == 1
        spk.close()


def test_no_portaudio_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing() -> Any:
        raise MediaError("no sound system: PortAudio cannot be loaded (libportaudio.so.2)")

    monkeypatch.setattr(sound_device, "_sounddevice", missing)
    with pytest.raises(MediaError, match="use --input with one of: device"):
        sound_device.check_device(MediaSpec("device"), "input")
    assert sound_device.list_devices() == []


def test_no_device_names_the_file_options(monkeypatch: pytest.MonkeyPatch) -> None:
    def query_devices(*a: Any, **kw: Any) -> Any:
        raise RuntimeError("Error querying device -1")

    sd = types.SimpleNamespace(query_devices=query_devices)
    monkeypatch.setattr(sound_device, "_sounddevice", lambda: sd)
    with pytest.raises(MediaError, match=r"no usable output sound device .* FILE\.wav, null"):
        sound_device.check_device(MediaSpec("device"), "output")


def test_usable_devices_are_those_that_take_48_khz_mono(monkeypatch: pytest.MonkeyPatch) -> None:
    devices = [
        {"name": "mic", "index": 0, "max_input_channels": 2, "max_output_channels": 0},
        {"name": "44k1 only", "index": 1, "max_input_channels": 2, "max_output_channels": 2},
    ]

    def check(device: int, channels: int, samplerate: int) -> None:
        assert channels == 1 and samplerate == 48000
        if device == 1:
            raise RuntimeError("Invalid sample rate")

    sd = types.SimpleNamespace(
        query_devices=lambda *a, **kw: devices,
        check_input_settings=check,
        check_output_settings=check,
    )
    monkeypatch.setattr(sound_device, "_sounddevice", lambda: sd)
    got = sound_device.usable_devices()
    assert [(d["usable_input"], d["usable_output"]) for d in got] == [(True, False), (False, False)]
