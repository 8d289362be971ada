"""pipeline/media/sound_device.py: the device adapters, driven by a fake sounddevice."""

from __future__ import annotations

import time
import types
from typing import Any

import numpy as np
import pytest

from pipeline.ipc.ring import Ring
from pipeline.media import sound_device
from pipeline.media.audio_format import FRAME_BYTES, FRAME_NS, FRAME_SAMPLES
from pipeline.media.sources import MediaError, MediaSpec


class FakeStream:
    """Stands in for sounddevice's streams: records its settings, runs the callback on demand."""

    def __init__(self, **kw: Any) -> None:
        self.kw = kw
        self.latency = 0.01
        self.device = kw["device"]
        self.started = self.closed = False

    @property
    def active(self) -> bool:
        return self.started

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.started = False

    def abort(self) -> None:
        self.started = False

    def close(self) -> None:
        self.closed = True

    def run(self, block: np.ndarray, ti: Any = None, **flags: bool) -> None:
        self.kw["callback"](block, len(block), ti, status(**flags))


def status(**flags: bool) -> Any:
    return types.SimpleNamespace(**{"input_overflow": False, "output_underflow": False, **flags})


def times(adc: float = 0.0, dac: float = 0.0, now: float = 0.0) -> Any:
    """PortAudio's time_info, on its own clock (seconds; on Linux the wall clock)."""
    return types.SimpleNamespace(inputBufferAdcTime=adc, outputBufferDacTime=dac, currentTime=now)


class FakeSd(types.SimpleNamespace):
    """The module: streams, device names, and PortAudio's restart (counted)."""

    def __init__(self) -> None:
        super().__init__(InputStream=FakeStream, OutputStream=FakeStream, restarts=0, fail=0)

    def query_devices(self, device: Any = None, kind: str = "") -> dict[str, Any]:
        return {"name": f"dev{device}"}

    def _terminate(self) -> None:
        self.restarts += 1

    def _initialize(self) -> None:
        if self.fail:
            self.fail -= 1
            raise OSError("PortAudio: no host API")


@pytest.fixture
def fake_sd(monkeypatch: pytest.MonkeyPatch) -> FakeSd:
    sd = FakeSd()
    monkeypatch.setattr(sound_device, "_sounddevice", lambda: sd)
    return sd


B = sound_device.BLOCK_SAMPLES


def test_small_blocks_gather_into_frames_stamped_with_the_adc_time(fake_sd: FakeSd) -> None:
    assert B < FRAME_SAMPLES and FRAME_SAMPLES % B == 0
    with Ring.create(4, FRAME_BYTES, label="devin") as ring:
        mic = sound_device.InputDevice(MediaSpec("device", "2"), ring)
        stream = mic._stream
        assert isinstance(stream, FakeStream)
        assert stream.kw["blocksize"] == B and stream.kw["device"] == 2 and mic.name == "dev2"
        signal = np.linspace(-1, 1, 2 * FRAME_SAMPLES, dtype=np.float32)
        before = time.monotonic_ns()
        for i in range(0, len(signal), B):  # each block's first sample 30 ms before "now"
            stream.run(signal[i : i + B].reshape(-1, 1), times(adc=100.0, now=100.03))
        after = time.monotonic_ns()
        assert mic.callbacks == 2 * FRAME_SAMPLES // B and mic.seq == 2
        one = ring.read(timeout=0)
        assert one is not None and one.seq == 1
        assert np.array_equal(one.samples(), signal[:FRAME_SAMPLES])
        # The frame is stamped when its first sample was captured: 30 ms before the
        # callback that brought it, not when its last block arrived.
        assert before - 30_000_000 <= one.timestamp <= after - 30_000_000
        first = one.timestamp
        two = ring.read(timeout=0)
        assert two is not None and np.array_equal(two.samples(), signal[FRAME_SAMPLES:])
        assert two.timestamp - first == pytest.approx(FRAME_NS, abs=2_000_000)
        ring.release()


def test_frames_handed_over_late_as_the_stream_starts_are_not_sent(fake_sd: FakeSd) -> None:
    # The first frames of a stream that just opened come 200 ms after they were
    # captured, all at once (a host's start-up backlog), then blocks come on time.
    with Ring.create(16, FRAME_BYTES, label="devbacklog") as ring:
        mic = sound_device.InputDevice(MediaSpec("device"), ring)
        block = np.zeros((B, 1), dtype=np.float32)
        backlog = 10 * FRAME_SAMPLES // B  # 200 ms of blocks, captured one after another
        for i in range(backlog):  # and all handed over 210 ms after the first was captured
            mic._stream.run(block, times(adc=100.0 + i * B / 48000, now=100.21))
        for _ in range(2 * FRAME_SAMPLES // B):  # then each 10 ms after its capture
            time.sleep(B / 48000)
            mic._stream.run(block, times(adc=100.0, now=100.01))
        # Frames whose first sample was over 80 ms old when complete: 210, 190 ... 90 ms.
        assert mic.backlog_dropped == 7
        assert mic.seq == 3 + 2  # the rest of the backlog and the on-time frames are sent
        assert ring.read(timeout=0) is not None
        ring.release()


def test_a_full_ring_counts_drops_and_an_overflow_is_counted(fake_sd: FakeSd) -> None:
    with Ring.create(4, FRAME_BYTES, label="devfull") as ring:
        mic = sound_device.InputDevice(MediaSpec("device"), ring)
        block = np.zeros((FRAME_SAMPLES, 1), dtype=np.float32)  # a host API may give more
        for _ in range(6):  # two more frames than the ring holds
            mic._stream.run(block)  # no time_info: the nominal latency
        mic._stream.run(block, input_overflow=True)
        assert ring.stats.dropped == 3 and mic.overflows == 1 and mic.seq == 7
        mic.start()
        mic.close()
        assert mic._stream is None and not mic.active


def test_frames_spread_over_blocks_and_the_ear_time_is_the_dac_time(fake_sd: FakeSd) -> None:
    played: list[tuple[int, ...]] = []
    with Ring.create(4, FRAME_BYTES, label="devout") as ring:
        spk = sound_device.OutputDevice(MediaSpec("device"), ring, lambda *a: played.append(a))
        stream = spk._stream
        assert isinstance(stream, FakeStream) and stream.kw["device"] is None
        out = np.ones((B, 1), dtype=np.float32)
        for _ in range(3):  # before the first frame: silence, but no underflow
            stream.run(out, output_underflow=True)
        assert not out.any() and spk.underflows == 0
        a = np.arange(FRAME_SAMPLES, dtype=np.float32)
        ring.write(a, seq=9, timestamp=123, flags=1, media=480)
        ring.write(a + FRAME_SAMPLES, seq=10, timestamp=456)
        got = []
        before = time.monotonic_ns()
        for _ in range(2 * FRAME_SAMPLES // B):  # blocks leave the DAC 25 ms from now
            stream.run(out, times(dac=50.025, now=50.0))
            got.append(out[:, 0].copy())
        after = time.monotonic_ns()
        assert np.array_equal(np.concatenate(got), np.arange(2 * FRAME_SAMPLES))
        assert [p[:4] for p in played] == [(9, 123, 1, 480), (10, 456, 0, 0)]
        for p in played:
            assert before + 25_000_000 <= p[4] <= after + 25_000_000
        assert ring.fill() == 0 and spk.underflows == 0
        # The last frame was read whole blocks ago: the next is wanted by the callback
        # after the one that finishes it, a frame after that read (for the decode stage).
        frame_ns = FRAME_SAMPLES * sound_device.NS_PER_SAMPLE
        assert before <= ring.due_ns - frame_ns <= after
        assert ring.starved == 0  # PortAudio's flag before the first frame was no starve
        # Starving for three blocks, PortAudio flagging it too: one underflow, not six.
        for _ in range(3):
            stream.run(out, output_underflow=True)
        assert not out.any() and spk.underflows == 1 and ring.starved == 1
        ring.write(a, seq=11, timestamp=1)
        for _ in range(FRAME_SAMPLES // B + 2):  # one frame, then dry again: a second run
            stream.run(out)
        assert spk.underflows == 2 and ring.starved == 2
        ring.write(a, seq=12, timestamp=1)
        for _ in range(FRAME_SAMPLES // B):  # PortAudio's own underflow, the ring full:
            stream.run(out, output_underflow=True)  # no starve (a lead cannot help it)
        assert ring.starved == 2
        spk.close()


def test_a_late_callback_tells_the_next_frame_due_from_its_slot(
    fake_sd: FakeSd, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The callback that takes a frame ran 3 ms after its slot: the next frame is wanted
    by the callback that finishes this one, in its slot, not 3 ms after it."""
    clock = [10_000_000_000]
    monkeypatch.setattr(sound_device.time, "monotonic_ns", lambda: clock[0])
    block_ns = B * 1_000_000_000 // 48_000
    with Ring.create(4, FRAME_BYTES, label="devslot") as ring:
        spk = sound_device.OutputDevice(MediaSpec("device"), ring, lambda *a: None)
        out = np.zeros((B, 1), dtype=np.float32)
        for _ in range(8):  # on time, the ring empty (waiting for voice)
            spk._stream.run(out)
            clock[0] += block_ns
        slot = clock[0]
        clock[0] += 3_000_000
        ring.write(np.zeros(FRAME_SAMPLES, dtype=np.float32), seq=1)
        spk._stream.run(out)
        blocks = FRAME_SAMPLES // B
        want = slot + blocks * B * sound_device.NS_PER_SAMPLE
        assert want <= ring.due_ns <= want + 20_000  # its slot (and what the grid relaxed)
        spk.close()


def test_a_lost_speaker_drops_what_it_would_have_played(fake_sd: FakeSd) -> None:
    with Ring.create(4, FRAME_BYTES, label="devidle") as ring:
        spk = sound_device.OutputDevice(MediaSpec("device"), ring, lambda *a: None)
        ring.write(np.zeros(FRAME_SAMPLES, dtype=np.float32), seq=1)
        spk._stream.run(np.ones((B, 1), dtype=np.float32))  # a frame part played
        spk.close()
        ring.write(np.zeros(FRAME_SAMPLES, dtype=np.float32), seq=2)
        spk.idle()  # the half-played frame and one more: gone
        assert ring.fill() == 0
        spk.idle()  # nothing to drop: nothing happens
        assert ring.fill() == 0


def test_reopen_restarts_portaudio_and_falls_back_to_the_default(
    fake_sd: FakeSd, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Ring.create(4, FRAME_BYTES, label="devre") as ring:
        mic = sound_device.InputDevice(MediaSpec("device", "usb"), ring)
        mic.start()
        mic._stream.run(np.zeros((B, 1), dtype=np.float32))  # a partial frame, then lost
        old = mic._stream
        fake_sd.fail = 1
        with pytest.raises(MediaError, match="PortAudio cannot start"):
            mic.reopen()
        assert old.closed and mic._stream is None and not mic.active

        def picky(**kw: Any) -> FakeStream:
            if kw["device"] == "usb":
                raise RuntimeError("Error querying device usb")
            return FakeStream(**kw)

        monkeypatch.setattr(fake_sd, "InputStream", picky)
        mic.reopen()  # the named device is gone: the default one
        assert fake_sd.restarts == 2 and mic.active and mic.name == "devNone"
        assert mic._stream.device is None
        for _ in range(FRAME_SAMPLES // B):  # the partial frame was forgotten
            mic._stream.run(np.ones((B, 1), dtype=np.float32))
        slot = ring.read(timeout=0)
        assert slot is not None and np.all(slot.samples() == 1)
        ring.release()
        monkeypatch.setattr(fake_sd, "InputStream", lambda **kw: picky(device="usb"))
        with pytest.raises(MediaError, match="cannot open the input device"):
            mic.reopen()
        mic.close()


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
