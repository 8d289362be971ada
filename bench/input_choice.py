"""How the capture path's detector and noise suppressor were chosen: quality and CPU.

Speech (espeak-ng's voice where it is installed, else the generated speech-like
signal, and both when it is) mixed with stationary and impulsive noise at known
levels, then:

* ``vad``: each detector's share of speech frames called speech and of noise-only
  frames called speech, raw and after the noise suppressor and gain control, and
  its cost per 20 ms frame. Candidates: WebRTC's VAD (``webrtcvad-wheels``) in modes
  1-3, the speech probability of WebRTC's noise suppressor (``pywebrtc-audio``), an
  energy threshold at -45 dBFS.
* ``gate``: the talk gate (pipeline/core/talk.py) with that detector hearing the
  microphone before processing, as the encode stage runs it: speech frames not sent
  (clipped) and spurts a minute opened by noise alone, by hold, pre-roll and onset
  rule.
* ``processing``: each noise suppressor's wideband PESQ against the clean speech,
  per noise, its attenuation of noise alone, its delay and its cost per frame.
  Candidates: WebRTC's (``pywebrtc-audio``: the chosen set-up with gain control, and
  its suppressor alone), ``speexdsp-ns`` and RNNoise (``pyrnnoise``'s library) where
  installed; none of the last two is a dependency of the project, so a run without
  them says they were skipped.

    python -m bench.input_choice [--quick] [--out DIR]
"""

from __future__ import annotations

import ctypes
import importlib.util
import shutil
import subprocess
import tempfile
import time
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import parser, write_result
from bench.quality import down3
from pipeline.core.talk import TalkGate
from pipeline.media import synthetic
from pipeline.media.audio_format import FRAME_SAMPLES, SAMPLE_RATE
from pipeline.media.input_processing import InputProcessor
from pipeline.media.vad import WebRtcVad

F = FRAME_SAMPLES
SENTENCES = (
    "The quick brown fox jumps over the lazy dog. Five hundred people said hello.",
    "She sells sea shells by the sea shore, then she stopped and thought about it.",
)
Frame = np.ndarray
Processor = Callable[[Frame], Frame]


# --- signals ---------------------------------------------------------------------------


def espeak(text: str) -> np.ndarray | None:
    """``text`` spoken by espeak-ng at 48 kHz, or None without espeak-ng."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.wav"
        subprocess.run([exe, "-s", "150", "-w", str(path), text], check=True)
        with wave.open(str(path)) as w:
            rate = w.getframerate()
            x = np.frombuffer(w.readframes(w.getnframes()), np.int16) / 32768.0
    n = int(len(x) * SAMPLE_RATE / rate)  # resampled in the frequency domain
    spectrum = np.zeros(n // 2 + 1, complex)
    src = np.fft.rfft(x)
    spectrum[: len(src)] = src
    y = np.fft.irfft(spectrum, n) * n / len(x)
    return (0.5 * y / np.max(np.abs(y))).astype(np.float32)


def speech_material(quick: bool) -> tuple[np.ndarray, str]:
    parts: list[np.ndarray] = []
    names = []
    # Half a second of nothing first: a microphone opens on a room, not on a word.
    parts.append(np.zeros(SAMPLE_RATE // 2, np.float32))
    spoken = [s for s in (espeak(t) for t in SENTENCES[: 1 if quick else 2]) if s is not None]
    if spoken:
        names.append("espeak-ng")
        for s in spoken:
            parts += [s, np.zeros(SAMPLE_RATE // 2, np.float32)]
    names.append("speech-like")
    parts.append(synthetic.speech_like(2.0 if quick else 6.0, seed=3))
    x = np.concatenate(parts)
    return x[: len(x) // F * F], " + ".join(names)


def noises(n: int, seed: int = 7) -> dict[str, np.ndarray]:
    """Unit-RMS noises of ``n`` samples."""
    rng = np.random.default_rng(seed)
    x = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(x), dtype=np.float64)
    f[0] = 1
    pink = np.fft.irfft(x / np.sqrt(f), n)
    t = np.arange(n) / SAMPLE_RATE
    brown = np.cumsum(rng.standard_normal(n))
    brown -= np.convolve(brown, np.ones(4800) / 4800, "same")
    fan = (
        brown / np.std(brown)
        + 0.5 * np.sin(2 * np.pi * 100 * t)
        + 0.3 * np.sin(4 * np.pi * 100 * t)
    )
    keys = 0.02 * rng.standard_normal(n)
    for s in rng.integers(0, n - 2000, size=int(n / SAMPLE_RATE * 6)):  # 6 key clicks a second
        keys[s : s + 1500] += rng.standard_normal(1500) * np.exp(-np.arange(1500) / 200)
    out = {"white": rng.standard_normal(n), "pink": pink, "fan": fan, "keyboard": keys}
    return {k: (v / np.sqrt(np.mean(v * v))).astype(np.float32) for k, v in out.items()}


def db(x: np.ndarray) -> float:
    return float(20 * np.log10(np.sqrt(np.mean(np.square(x, dtype=np.float64))) + 1e-12))


def per_frame(proc: Processor, x: np.ndarray) -> tuple[np.ndarray, float]:
    """The processed signal and the cost in µs per frame."""
    frames = synthetic.frames(x)
    t0 = time.perf_counter()
    out = np.concatenate([proc(f) for f in frames])
    return out, (time.perf_counter() - t0) / len(frames) * 1e6


# --- candidates --------------------------------------------------------------------------


def _webrtc_apm(ns_only: bool) -> Processor:
    if ns_only:
        return InputProcessor(gain_control=False).process
    return InputProcessor().process


def _speexdsp() -> Processor | None:
    if importlib.util.find_spec("speexdsp_ns") is None:
        return None
    from speexdsp_ns import NoiseSuppression

    ns = NoiseSuppression.create(F // 2, SAMPLE_RATE)

    def run(frame: Frame) -> Frame:
        out = []
        for half in (frame[: F // 2], frame[F // 2 :]):
            pcm = (np.clip(half, -1, 1) * 32767).astype(np.int16).tobytes()
            out.append(np.frombuffer(ns.process(pcm), np.int16) / 32768.0)
        return np.concatenate(out).astype(np.float32)

    return run


def _rnnoise() -> Processor | None:
    spec = importlib.util.find_spec("pyrnnoise")  # its library only: its package pulls plots
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "librnnoise.so"
    if not path.exists():
        return None
    lib = ctypes.CDLL(str(path))
    lib.rnnoise_create.restype = ctypes.c_void_p
    lib.rnnoise_create.argtypes = [ctypes.c_void_p]
    fptr = ctypes.POINTER(ctypes.c_float)
    lib.rnnoise_process_frame.argtypes = [ctypes.c_void_p, fptr, fptr]
    lib.rnnoise_process_frame.restype = ctypes.c_float
    state = lib.rnnoise_create(None)
    buf = np.zeros(F // 2, np.float32)

    def run(frame: Frame) -> Frame:
        out = np.empty(F, np.float32)
        for i in (0, F // 2):
            buf[:] = frame[i : i + F // 2] * 32767
            p = buf.ctypes.data_as(fptr)
            lib.rnnoise_process_frame(state, p, p)
            out[i : i + F // 2] = buf / 32767
        return out

    return run


def suppressors() -> dict[str, Callable[[], Processor | None]]:
    return {
        "none": lambda: lambda f: f,
        "webrtc ns+agc (chosen)": lambda: _webrtc_apm(False),
        "webrtc ns": lambda: _webrtc_apm(True),
        "speexdsp-ns": _speexdsp,
        "rnnoise": _rnnoise,
    }


def detectors() -> dict[str, Callable[[], Callable[[Frame], bool]]]:
    import pywebrtc_audio
    import webrtcvad

    def webrtc(mode: int) -> Callable[[Frame], bool]:
        v = webrtcvad.Vad(mode)
        return lambda f: v.is_speech(
            (np.clip(f, -1, 1) * 32767).astype(np.int16).tobytes(), SAMPLE_RATE
        )

    def ns_probability() -> Callable[[Frame], bool]:
        d = pywebrtc_audio.VoiceDetector(sample_rate=SAMPLE_RATE)

        def run(f: Frame) -> bool:
            d.process(np.ascontiguousarray(f, np.float32))
            return float(d.speech_probability) > 0.5

        return run

    return {
        "webrtcvad 1": lambda: webrtc(1),
        "webrtcvad 2": lambda: webrtc(2),
        "webrtcvad 3 (chosen)": lambda: webrtc(3),
        "webrtc ns speech probability": ns_probability,
        "energy -45 dBFS": lambda: lambda f: db(f) > -45,
    }


# --- measurements ------------------------------------------------------------------------


def align_delay(clean: np.ndarray, out: np.ndarray, max_lag: int = 2 * F) -> int:
    n = len(clean) - max_lag
    return max(range(0, max_lag, 4), key=lambda lag: float(np.dot(clean[:n], out[lag : lag + n])))


def measure_processing(speech: np.ndarray, quick: bool) -> dict[str, Any]:
    from pesq import pesq

    n = len(speech)
    noise = noises(n)
    active = float(np.mean(speech[np.abs(speech) > 1e-3] ** 2))
    conds = [("pink", 10), ("white", 10), ("fan", 10), ("keyboard", 10)]
    if not quick:
        conds += [("pink", 20), ("pink", 5)]
    ref16 = down3(speech)
    rows: dict[str, Any] = {}
    for name, make in suppressors().items():
        if make() is None:
            rows[name] = {"skipped": "not installed"}
            continue
        row: dict[str, Any] = {}
        costs = []
        for kind, snr in conds:
            nz = noise[kind] * np.sqrt(active / 10 ** (snr / 10))
            proc = make()
            assert proc is not None
            out, us = per_frame(proc, speech + nz)
            costs.append(us)
            lag = align_delay(speech, out)
            deg = down3(np.concatenate([out[lag:], np.zeros(lag, np.float32)]))
            row[f"pesq {kind} {snr} dB"] = round(float(pesq(16000, ref16, deg, "wb")), 2)
        proc = make()
        assert proc is not None
        clean_out, _ = per_frame(proc, speech)
        lag = align_delay(speech, clean_out)
        deg = down3(np.concatenate([clean_out[lag:], np.zeros(lag, np.float32)]))
        row["pesq clean"] = round(float(pesq(16000, ref16, deg, "wb")), 2)
        row["delay_ms"] = round(lag / SAMPLE_RATE * 1000, 1)
        proc = make()
        assert proc is not None
        room = noise["pink"] * 10 ** (-40 / 20)  # noise alone, after a second to learn it
        out, _ = per_frame(proc, room)
        row["pink -40 dBFS alone, out dBFS"] = round(db(out[SAMPLE_RATE:]), 1)
        row["us_per_frame"] = round(float(np.median(costs)), 1)
        rows[name] = row
    return rows


def measure_vad(speech: np.ndarray, quick: bool) -> dict[str, Any]:
    n = len(speech)
    noise = noises(n, seed=8)
    label = np.sqrt(np.mean(synthetic.frames(speech) ** 2, axis=1)) > 10 ** (-35 / 20)
    conds = [("pink", -60), ("pink", -40), ("fan", -50), ("fan", -40), ("keyboard", -45)]
    if not quick:
        conds += [("white", -50)]
    out: dict[str, Any] = {}
    for front in (False, True):
        for name, make in detectors().items():
            row: dict[str, Any] = {}
            costs = []
            for kind, level in conds:
                nz = noise[kind] * 10 ** (level / 20)
                said: list[bool] = []
                for sig, acc in ((speech + nz, said), (nz, None)):
                    det = make()
                    proc = InputProcessor() if front else None
                    calls = []
                    frames = synthetic.frames(sig)
                    spent = 0.0
                    for f in frames:
                        g = proc.process(f) if proc is not None else f
                        t0 = time.perf_counter()
                        calls.append(bool(det(g)))
                        spent += time.perf_counter() - t0
                    costs.append(spent / len(frames) * 1e6)
                    if acc is not None:
                        acc += calls
                    else:
                        false = float(np.mean(calls[50:]))  # after a second to settle
                speech_hit = float(np.mean(np.array(said)[label]))
                row[f"{kind} {level} dBFS"] = {
                    "speech_found_percent": round(100 * speech_hit, 1),
                    "noise_called_speech_percent": round(100 * false, 1),
                }
            row["us_per_frame"] = round(float(np.median(costs)), 1)
            out[f"{'after ns+agc' if front else 'raw'}: {name}"] = row
    return out


def measure_gate(speech: np.ndarray, quick: bool) -> dict[str, Any]:
    n = len(speech)
    noise = noises(n, seed=9)
    label = np.sqrt(np.mean(synthetic.frames(speech) ** 2, axis=1)) > 10 ** (-35 / 20)
    seconds = n / SAMPLE_RATE
    rules = [(1, 0), (1, 1), (1, 2), (2, 2), (2, 3)] if not quick else [(1, 0), (1, 2)]
    out: dict[str, Any] = {}
    for onset, pre in rules:
        row: dict[str, Any] = {}
        for kind, level in (("pink", -60), ("fan", -45), ("keyboard", -45)):
            nz = noise[kind] * 10 ** (level / 20)
            stats = []
            for sig in (speech + nz, nz):
                proc = InputProcessor()
                gate: TalkGate[int] = TalkGate(WebRtcVad(), onset_frames=onset, preroll_frames=pre)
                sent = np.zeros(len(label), bool)
                for i, f in enumerate(synthetic.frames(sig)):
                    for _, k in gate.push(proc.process(f), i, probe=f):  # as the encoder does
                        sent[k] = True
                stats.append((sent, gate.counts.spurts))
            (sent_s, _), (sent_n, spurts_n) = stats
            row[f"{kind} {level} dBFS"] = {
                "speech_frames_clipped": int((label & ~sent_s).sum()),
                "noise_spurts_per_min": round(spurts_n / seconds * 60, 1),
                "noise_datagrams_per_s": round(float(sent_n.sum()) / seconds, 2),
            }
        out[f"onset {onset}, pre-roll {pre}, hold 12"] = row
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = parser(__doc__ or "")
    args = ap.parse_args(argv)
    speech, material = speech_material(args.quick)
    result: dict[str, Any] = {
        "speech": material,
        "seconds": round(len(speech) / SAMPLE_RATE, 1),
        "processing": measure_processing(speech, args.quick),
        "vad": measure_vad(speech, args.quick),
        "gate": measure_gate(speech, args.quick),
    }
    path = write_result("input_choice", result, args.out)
    for section in ("processing", "vad", "gate"):
        print(f"== {section}")
        for name, row in result[section].items():
            print(f"  {name}: {row}")
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
