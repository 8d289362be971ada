"""Sound-device adapters: PortAudio streams through sounddevice, as thin as they can be.

The callbacks follow sounddevice's real-time rules: they copy one block into
or out of a ring and count; no allocation beyond what numpy slicing does, no
locks, no logging, no I/O. sounddevice is imported lazily so that a machine
without PortAudio still runs everything file-based.
"""

from __future__ import annotations

import time
from types import ModuleType
from typing import Any

from pipeline.ipc.ring import Ring
from pipeline.media.audio_format import FRAME_SAMPLES, SAMPLE_RATE
from pipeline.media.sources import INPUT_HELP, OUTPUT_HELP, MediaError, MediaSpec


def _sounddevice() -> ModuleType:
    try:
        import sounddevice
    except OSError as exc:  # PortAudio itself is missing
        raise MediaError(f"no sound system: PortAudio cannot be loaded ({exc})") from None
    return sounddevice


def _device_arg(spec: MediaSpec) -> int | str | None:
    if not spec.arg:
        return None
    return int(spec.arg) if spec.arg.isdigit() else spec.arg


def check_device(spec: MediaSpec, kind: str) -> None:
    """Raise MediaError with one clear line when the input/output device cannot be used."""
    alternatives = INPUT_HELP if kind == "input" else OUTPUT_HELP
    try:
        sd = _sounddevice()
        info = sd.query_devices(_device_arg(spec), kind=kind)
        if kind == "input":
            sd.check_input_settings(_device_arg(spec), channels=1, samplerate=SAMPLE_RATE)
        else:
            sd.check_output_settings(_device_arg(spec), channels=1, samplerate=SAMPLE_RATE)
    except MediaError as exc:
        raise MediaError(f"{exc}; use --{kind} with one of: {alternatives}") from None
    except Exception as exc:  # PortAudio reports "no device" in several ways
        raise MediaError(
            f"no usable {kind} sound device ({exc}); use --{kind} with one of: {alternatives}"
        ) from None
    if not info:
        raise MediaError(f"no {kind} sound device; use --{kind} with one of: {alternatives}")


def list_devices() -> list[dict[str, Any]]:
    """Every device PortAudio reports, or [] when there is no sound system."""
    try:
        return [dict(d) for d in _sounddevice().query_devices()]
    except (MediaError, Exception):
        return []


def usable_devices() -> list[dict[str, Any]]:
    """:func:`list_devices`, each marked ``usable_input``/``usable_output``: whether
    PortAudio takes a 48 kHz mono stream of that kind on it (what the client opens)."""
    devices = list_devices()
    if not devices:
        return []
    sd = _sounddevice()
    for index, d in enumerate(devices):
        number = int(d.get("index", index))
        for kind, check in (
            ("input", sd.check_input_settings),
            ("output", sd.check_output_settings),
        ):
            ok = int(d.get(f"max_{kind}_channels", 0) or 0) > 0
            if ok:
                try:
                    check(number, channels=1, samplerate=SAMPLE_RATE)
                except Exception:  # PortAudio refuses in several ways; all mean "not this"
                    ok = False
            d[f"usable_{kind}"] = ok
    return devices


class _Device:
    """One PortAudio stream of 960-sample mono float32 blocks, with a ring on its far side."""

    KIND = ""

    def __init__(self, spec: MediaSpec, ring: Ring) -> None:
        sd = _sounddevice()
        self.ring = ring
        stream = sd.InputStream if self.KIND == "input" else sd.OutputStream
        self._stream = stream(
            samplerate=SAMPLE_RATE,
            channels=1,
            dtype="float32",
            blocksize=FRAME_SAMPLES,
            device=_device_arg(spec),
            latency="low",
            callback=self._callback,
        )
        self.latency = float(self._stream.latency)

    def _callback(self, data: Any, frames: int, time_info: Any, status: Any) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self._stream.start()

    def close(self) -> None:
        self._stream.stop()
        self._stream.close()


class InputDevice(_Device):
    """Microphone -> ring. The callback stamps each block with its capture time."""

    KIND = "input"

    def __init__(self, spec: MediaSpec, ring: Ring) -> None:
        self.seq = 0
        self.overflows = 0
        super().__init__(spec, ring)

    def _callback(self, indata: Any, frames: int, time_info: Any, status: Any) -> None:
        if status.input_overflow:
            self.overflows += 1
        self.seq += 1
        self.ring.write(indata[:, 0], seq=self.seq, timestamp=time.monotonic_ns())  # full: counted


class OutputDevice(_Device):
    """Ring -> speaker. An empty ring plays silence.

    An underflow is a block the speaker wanted while audio was playing and did not
    get, from an empty ring or by PortAudio's own flag: counted once per block, and
    not before the first frame (waiting for the first voice is not an underflow).
    """

    KIND = "output"

    def __init__(self, spec: MediaSpec, ring: Ring, on_frame: Any) -> None:
        self.underflows = 0
        self._started = False
        self._on_frame = on_frame  # records latency; must be allocation-light
        super().__init__(spec, ring)

    def _callback(self, outdata: Any, frames: int, time_info: Any, status: Any) -> None:
        slot = self.ring.read(timeout=0)
        if self._started and (slot is None or status.output_underflow):
            self.underflows += 1
        if slot is None:
            outdata.fill(0)
            return
        self._started = True
        samples = slot.samples()
        n = min(len(samples), frames)
        outdata[:n, 0] = samples[:n]
        outdata[n:, 0] = 0
        self._on_frame(slot.seq, slot.timestamp, slot.flags, slot.media)
        self.ring.release()
