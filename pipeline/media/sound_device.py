"""Sound-device adapters: PortAudio streams through sounddevice, as thin as they can be.

The callbacks follow sounddevice's real-time rules: they copy one small block
into a frame being gathered or out of the frame being played, and count; no
allocation beyond what numpy slicing does, no locks, no logging, no I/O.
sounddevice is imported lazily so that a machine without PortAudio still runs
everything file-based.
"""

from __future__ import annotations

import contextlib
import time
from types import ModuleType
from typing import Any

import numpy as np

from pipeline.core.callback_grid import CallbackGrid
from pipeline.core.capture_clock import CaptureClock, StartupBacklog
from pipeline.ipc.ring import Ring
from pipeline.media.audio_format import BLOCK_SAMPLES, FRAME_SAMPLES, SAMPLE_RATE
from pipeline.media.sources import INPUT_HELP, OUTPUT_HELP, MediaError, MediaSpec
from pipeline.stages.trace import Tracer


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


DEVICE_LATENCY = "low"  # PortAudio's suggested latency (see bench/device_path.py)
NS_PER_SAMPLE = 1_000_000_000 // SAMPLE_RATE


def _ahead_ns(time_info: Any, dac: bool, nominal: float) -> int:
    """How far the block's first sample is from now (ns, >= 0), by PortAudio's own timing.

    ``time_info`` gives the ADC time of the input block's first sample or the DAC
    time of the output block's, and the stream's current time, all on PortAudio's
    clock (not ours: on Linux it is the wall clock); their difference is what we
    need. A host API that fills in no times gets the stream's nominal latency.
    """
    now = time_info.currentTime if time_info is not None else 0.0
    edge = (time_info.outputBufferDacTime if dac else time_info.inputBufferAdcTime) if now else 0
    if not now or not edge:
        return int(nominal * 1e9)
    return max(0, int(((edge - now) if dac else (now - edge)) * 1e9))


class _Device:
    """One PortAudio stream of small mono float32 blocks, with a ring on its far side.

    ``callbacks`` counts callbacks (a stream that stops counting is dead, see
    pipeline/core/device_watch.py); ``reopen()`` starts PortAudio afresh, so a
    sound server that restarted, or a device that came back, is found again.
    """

    KIND = ""

    def __init__(self, spec: MediaSpec, ring: Ring, tracer: Tracer | None = None) -> None:
        self.spec = spec
        self.ring = ring
        # One row per callback (bench/device_path.py reads them): when it ran, PortAudio's
        # edge time of its first sample on our clock, its length, its status flag.
        self.tracer = tracer if tracer is not None else Tracer(None, 4)
        self.callbacks = 0
        self.finished = False
        self.name = ""
        self.latency = 0.0
        self._stream: Any = None
        self._open(_device_arg(spec))

    def _open(self, device: int | str | None) -> None:
        sd = _sounddevice()
        stream = sd.InputStream if self.KIND == "input" else sd.OutputStream
        self.finished = False
        self._stream = stream(
            samplerate=SAMPLE_RATE,
            channels=1,
            dtype="float32",
            blocksize=BLOCK_SAMPLES,
            device=device,
            latency=DEVICE_LATENCY,
            callback=self._callback,
            finished_callback=self._finished,
        )
        self.latency = float(self._stream.latency)
        try:
            self.name = str(sd.query_devices(self._stream.device)["name"])
        except Exception:  # a name is only for people
            self.name = str(device if device is not None else "default")

    def _finished(self) -> None:  # PortAudio's thread: a flag, nothing more
        self.finished = True

    def _callback(self, data: Any, frames: int, time_info: Any, status: Any) -> None:
        raise NotImplementedError

    @property
    def active(self) -> bool:
        return self._stream is not None and not self.finished and bool(self._stream.active)

    def start(self) -> None:
        self._stream.start()

    def reopen(self) -> None:
        """Close whatever is left, start PortAudio afresh and open the device again (or the
        default one if the named device is gone). MediaError when neither opens."""
        self.close()
        self._reset()
        sd = _sounddevice()
        try:
            sd._terminate()  # PortAudio lists devices only when it starts
            sd._initialize()
        except Exception as exc:
            raise MediaError(f"PortAudio cannot start ({exc})") from None
        wanted = _device_arg(self.spec)
        tries = (wanted,) if wanted is None else (wanted, None)
        error: Exception | None = None
        for device in tries:
            try:
                self._open(device)
                self.start()
                return
            except Exception as exc:  # PortAudio's errors come in several types
                self.close()
                error = exc
        raise MediaError(f"cannot open the {self.KIND} device ({error})")

    def _reset(self) -> None:
        """Forget a partial frame (the stream is closed, no callback runs)."""

    def idle(self) -> None:
        """Called every 20 ms while the stream is lost (closed: no callback runs)."""

    def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is None:
            return
        with contextlib.suppress(Exception):  # a stream whose server died may refuse
            stream.abort()
        with contextlib.suppress(Exception):
            stream.close()


class InputDevice(_Device):
    """Microphone -> ring. Blocks gather into 960-sample frames, each stamped with the
    time its first sample reached the converter: PortAudio's ADC time on our clock,
    kept to the sample clock's regular 20 ms steps (pipeline/core/capture_clock.py)."""

    KIND = "input"

    def __init__(self, spec: MediaSpec, ring: Ring, tracer: Tracer | None = None) -> None:
        self.seq = 0
        self.overflows = 0
        self._frame = np.zeros(FRAME_SAMPLES, dtype=np.float32)
        self._fill = 0
        self._stamp = 0
        self._clock = CaptureClock()
        self._backlog = StartupBacklog()
        super().__init__(spec, ring, tracer)

    @property
    def resyncs(self) -> int:
        """Times the capture clock started afresh after samples went missing unannounced."""
        return self._clock.resyncs

    @property
    def backlog_dropped(self) -> int:
        """Frames of a stream's start-up backlog dropped, not sent (capture_clock.py)."""
        return self._backlog.dropped

    def _reset(self) -> None:
        self._fill = 0
        self._clock.restart()
        self._backlog.restart()

    def _callback(self, indata: Any, frames: int, time_info: Any, status: Any) -> None:
        self.callbacks += 1
        if status.input_overflow:
            self.overflows += 1
            self._clock.restart()  # samples were lost: the count starts again
        now = time.monotonic_ns()
        first = now - _ahead_ns(time_info, False, self.latency)
        self.tracer.add(now, first, frames, bool(status.input_overflow))
        done = 0
        while done < frames:
            if self._fill == 0:
                self._stamp = self._clock.stamp(first + done * NS_PER_SAMPLE)
            n = min(frames - done, FRAME_SAMPLES - self._fill)
            self._frame[self._fill : self._fill + n] = indata[done : done + n, 0]
            self._fill += n
            done += n
            if self._fill == FRAME_SAMPLES:
                self._fill = 0
                if self._backlog.stale(now, self._stamp):
                    continue  # handed over late as the stream started: never sent
                self.seq += 1
                self.ring.write(self._frame, seq=self.seq, timestamp=self._stamp)  # full: counted


class OutputDevice(_Device):
    """Ring -> speaker: slots (the decode stage's blocks) re-chunked into the device's blocks.
    An empty ring plays silence.

    ``on_frame(seq, timestamp, flags, media, ear_ns, samples)`` is called as a slot starts to
    play, with the time its first sample leaves the converter (PortAudio's DAC time,
    on our clock). An underflow is a run of blocks the speaker wanted while audio was
    playing and did not get (from an empty ring or by PortAudio's own flag): counted
    once per run, and not before the first frame (waiting for voice is no underflow).
    """

    KIND = "output"

    def __init__(
        self,
        spec: MediaSpec,
        ring: Ring,
        on_frame: Any,
        tracer: Tracer | None = None,
    ) -> None:
        self.underflows = 0
        self._started = False
        self._starving = False
        self._empty = False  # the last callback found the ring empty
        self._samples: Any = None  # the frame being played, a view into the held slot
        self._pos = 0
        self._on_frame = on_frame  # records latency; must be allocation-light
        self._grid = CallbackGrid()  # the callbacks' slots: the next frame's due is told from them
        super().__init__(spec, ring, tracer)

    def _reset(self) -> None:
        self._grid.reset()
        if self._samples is not None:
            self._samples = None
            self.ring.release()

    def idle(self) -> None:
        """Drop the frame the lost speaker would have played now: what was said while it
        was away is gone anyway, and the decode stage keeps its pace instead of backing up."""
        self._reset()
        if self.ring.read(timeout=0) is not None:
            self.ring.release()

    def _callback(self, outdata: Any, frames: int, time_info: Any, status: Any) -> None:
        self.callbacks += 1
        now = time.monotonic_ns()
        ear = now + _ahead_ns(time_info, True, self.latency)
        slot_ns = self._grid.slot(now, frames)  # this callback's slot: a late one's is earlier
        done = 0
        starved = False
        while done < frames:
            if self._samples is None:
                slot = self.ring.read(timeout=0)
                if slot is None:
                    outdata[done:, 0] = 0
                    starved = True
                    break
                self._samples = slot.samples()
                self._pos = 0
                self._started = True
                # The next frame is wanted by the callback that finishes this one, in its
                # slot: planned from when this one ran, a late callback makes it late.
                left = len(self._samples) - (frames - done)
                self.ring.set_due(slot_ns + (left // frames + 1) * frames * NS_PER_SAMPLE)
                self._on_frame(slot.seq, slot.timestamp, slot.flags, slot.media,
                               ear + done * NS_PER_SAMPLE, len(self._samples))  # fmt: skip
            n = min(frames - done, len(self._samples) - self._pos)
            outdata[done : done + n, 0] = self._samples[self._pos : self._pos + n]
            self._pos += n
            done += n
            if self._pos >= len(self._samples):
                self._samples = None
                self.ring.release()
        # Traced: PortAudio's underflow flag (1) and a block the ring left short (2).
        self.tracer.add(now, ear, frames, bool(status.output_underflow) | (starved * 2))
        trouble = self._started and (starved or status.output_underflow)
        if trouble and not self._starving:
            self.underflows += 1
        if starved and self._started and not self._empty:  # the decode stage was late
            self.ring.note_starved()  # once a run, as underflows; PortAudio's flag is not it
        self._empty = starved
        self._starving = trouble
