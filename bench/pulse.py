"""A private PulseAudio server with a virtual microphone and speaker, recorded on one clock.

For the device-path test and benchmark: one stereo null sink ``air`` is the room.
A known signal played into its left channel is what the microphone hears (``mic``,
the left channel of air's monitor); the client plays into its right channel
(``speaker``). Recording air's monitor then gives mouth (left) and ear (right)
sample-aligned on the server's one clock, so their lag is the mouth-to-ear time.

The server runs with a private HOME and XDG_RUNTIME_DIR (as root it needs
``-n --exit-idle-time=-1 --disallow-exit``, the native protocol module loaded by
hand); ``client_env`` is what a client needs in its environment to reach it.
``PulseError`` when it cannot start.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from types import TracebackType

import numpy as np

from pipeline.media.audio_format import FRAME_SAMPLES, SAMPLE_RATE


class PulseError(RuntimeError):
    """PulseAudio is missing or will not start here."""


def available() -> str | None:
    """Why PulseAudio cannot be used here, or None when it can."""
    missing = [t for t in ("pulseaudio", "pactl", "pacat", "parec") if shutil.which(t) is None]
    if missing:
        return f"{', '.join(missing)} not installed (Debian: pulseaudio pulseaudio-utils)"
    return None


class PulseServer:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.socket = root / "native"
        home, run = root / "home", root / "run"
        home.mkdir(parents=True, exist_ok=True)
        run.mkdir(parents=True, exist_ok=True)
        run.chmod(0o700)
        conf = root / "client.conf"
        conf.write_text("autospawn = no\n")  # a client must never start a server of its own
        self.client_env = {"PULSE_SERVER": f"unix:{self.socket}", "PULSE_CLIENTCONFIG": str(conf)}
        self.env = {**os.environ, "HOME": str(home), "XDG_RUNTIME_DIR": str(run), **self.client_env}
        self._proc: subprocess.Popen[bytes] | None = None
        self._children: list[subprocess.Popen[bytes]] = []

    def start(self, timeout: float = 10.0) -> None:
        why = available()
        if why:
            raise PulseError(why)
        log = open(self.root / "pulseaudio.log", "ab")  # noqa: SIM115 (the server owns it)
        self._proc = subprocess.Popen(
            ["pulseaudio", "-n", "--exit-idle-time=-1", "--disallow-exit", "--daemonize=no",
             "--use-pid-file=no", "--log-target=stderr",
             "-L", f"module-native-protocol-unix auth-anonymous=1 socket={self.socket}",
             "-L", f"module-null-sink sink_name=air channels=2 rate={SAMPLE_RATE}",
             "-L", "module-remap-source source_name=mic master=air.monitor channels=1 "
                   "master_channel_map=front-left channel_map=mono remix=no",
             "-L", "module-remap-sink sink_name=speaker master=air channels=1 "
                   "master_channel_map=front-right channel_map=mono remix=no"],
            env=self.env, stdout=log, stderr=log, start_new_session=True,
        )  # fmt: skip
        log.close()
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self._proc.poll() is not None:
                raise PulseError(f"pulseaudio exited ({self._proc.returncode}); see its log")
            if self.pactl("info").returncode == 0:
                self.pactl("set-default-source", "mic")
                self.pactl("set-default-sink", "speaker")
                return
            time.sleep(0.1)
        self.kill()
        raise PulseError(f"pulseaudio did not answer within {timeout:.0f} s")

    def pactl(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(["pactl", *args], env=self.env, capture_output=True, timeout=10)

    def kill(self) -> None:
        """SIGKILL the server (a crash, as a client sees it)."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        if proc is not None:
            proc.wait()
        self.socket.unlink(missing_ok=True)

    def play(self, signal_: np.ndarray) -> subprocess.Popen[bytes]:
        """Play a mono float32 signal into the microphone (air's left channel)."""
        raw = self.root / f"play{len(self._children)}.f32"
        np.asarray(signal_, dtype="<f4").tofile(raw)
        proc = subprocess.Popen(
            ["pacat", "--playback", "--device=air", "--format=float32le", f"--rate={SAMPLE_RATE}",
             "--channels=1", "--channel-map=front-left", "--latency-msec=20", str(raw)],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self._children.append(proc)
        return proc

    def record(self, path: Path) -> subprocess.Popen[bytes]:
        """Record air's monitor (left: mouth, right: ear) into ``path`` as raw float32."""
        out = open(path, "wb")  # noqa: SIM115 (closed right after the child has it)
        proc = subprocess.Popen(
            ["parec", "--device=air.monitor", "--format=float32le", f"--rate={SAMPLE_RATE}",
             "--channels=2", "--latency-msec=20"],
            env=self.env, stdout=out, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        out.close()
        self._children.append(proc)
        return proc

    def stop_children(self) -> None:
        for proc in self._children:
            if proc.poll() is None:
                proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._children.clear()

    def __enter__(self) -> PulseServer:
        self.start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop_children()
        self.kill()


def read_recording(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The (mouth, ear) channels of a recording made by :meth:`PulseServer.record`."""
    data = np.fromfile(path, dtype="<f4")
    data = data[: len(data) // 2 * 2].reshape(-1, 2)
    return data[:, 0].copy(), data[:, 1].copy()


WINDOW = SAMPLE_RATE // 2  # samples in each window whose lag is measured


def window_lags(
    mouth: np.ndarray,
    ear: np.ndarray,
    window: int = WINDOW,
    max_ms: float = 600.0,
    min_corr: float = 0.7,
) -> list[tuple[int, float]]:
    """(first sample, lag in ms) of every window where the mouth speaks and the ear,
    that much later, matches it (correlation >= ``min_corr``)."""
    from pipeline.media.synthetic import align

    max_lag = int(max_ms * SAMPLE_RATE / 1000)
    out = []
    for start in range(0, len(mouth) - window - max_lag, window):
        sent = mouth[start : start + window]
        if float(np.sqrt(np.mean(sent * sent))) < 0.01:
            continue
        lag, corr = align(sent, ear[start : start + window + max_lag], max_lag=max_lag)
        if corr >= min_corr:
            out.append((start, lag * 1000 / SAMPLE_RATE))
    return out


def lags_ms(mouth: np.ndarray, ear: np.ndarray, window: int = WINDOW,
            max_ms: float = 600.0, min_corr: float = 0.7) -> list[float]:  # fmt: skip
    """The ear's lag behind the mouth (ms) in each window where the mouth speaks and the
    ear matches it (correlation >= ``min_corr``)."""
    return [lag for _, lag in window_lags(mouth, ear, window, max_ms, min_corr)]


def frame_levels(signal: np.ndarray, block: int = FRAME_SAMPLES) -> np.ndarray:
    """The RMS level of each whole ``block`` (20 ms unless told)."""
    n = len(signal) // block
    blocks = signal[: n * block].reshape(n, -1)
    return np.sqrt(np.mean(blocks * blocks, axis=1))


DROPOUT_BLOCK = FRAME_SAMPLES // 4  # 5 ms: the shortest hole always found
_BLOCK = DROPOUT_BLOCK // 2  # looked at in 2.5 ms blocks: one lies wholly inside any 5 ms hole


def dropouts(mouth: np.ndarray, ear: np.ndarray, lags: list[tuple[int, float]],
             floor: float = 0.05) -> list[tuple[int, int]]:  # fmt: skip
    """The stretches of speech that never came out, as (first mouth sample, samples):
    runs of the 2.5 ms blocks :func:`missing_blocks` finds. A hole of 5 ms or more in
    speech is always found, wherever it falls; a shorter one may be."""
    runs: list[tuple[int, int]] = []
    for first in missing_blocks(mouth, ear, lags, floor):
        if runs and runs[-1][0] + runs[-1][1] == first:
            runs[-1] = (runs[-1][0], runs[-1][1] + _BLOCK)
        else:
            runs.append((first, _BLOCK))
    return runs


LOCAL_CONTEXT = FRAME_SAMPLES * 4  # the audio before a block its own lag is found from


def missing_blocks(mouth: np.ndarray, ear: np.ndarray, lags: list[tuple[int, float]],
                   floor: float = 0.05, block: int = _BLOCK) -> list[int]:  # fmt: skip
    """The first mouth sample of each ``block`` where the mouth speaks and the ear is
    silent (below ``floor`` of the mouth's level) at its own lag: audio that went missing
    on the way. The lag is the nearest window's (``lags`` from :func:`window_lags`); a
    block silent there is heard after all if a window either side measured another lag
    and the 80 ms of audio leading into the block came out at that lag (within 1 ms),
    correlating 0.8 or more and better than at its own: the playout's delay moves during
    a call, in the pauses between words, so a word's last block may sit nearer a window
    measured after the delay moved, while the word, and the block with it, came out at
    the lag before. A real hole keeps the lag of the audio before it (voiced speech
    repeats, so another lag may correlate well too, but not better), and is silent at
    that lag."""
    from pipeline.media.synthetic import align

    if not lags:
        return []
    starts = np.array([s for s, _ in lags], dtype=np.int64)
    shifts = np.array([round(lag * SAMPLE_RATE / 1000) for _, lag in lags], dtype=np.int64)
    m_rms = frame_levels(mouth, block)
    slack = SAMPLE_RATE // 1000  # 1 ms either side of a window's lag

    def silent(first: int, shift: int, level: float) -> bool:
        at = first + shift
        if at < 0 or at + block > len(ear):
            return False  # the recording ended before this block could come out
        got = ear[at : at + block]
        return float(np.sqrt(np.mean(got * got))) < floor * level

    def context(a: int, sent: np.ndarray, shift: int) -> tuple[int, float]:
        """Where near ``shift`` the audio before the block came out, and how alike."""
        lo = max(0, shift - slack)
        seg = ear[a + lo : a + shift + slack + len(sent)]
        if len(seg) < len(sent) + shift + slack - lo:
            return shift, 1.0  # the recording ended: as if heard
        lag, corr = align(sent, seg, max_lag=shift + slack - lo)
        return lo + lag, corr

    missing = []
    for k in np.flatnonzero(m_rms > 0.02):
        first = int(k) * block
        level = float(m_rms[k])
        nearest = int(np.argmin(np.abs(starts - first)))
        own = int(shifts[nearest])
        if not silent(first, own, level):
            continue
        others = {int(x) for x in shifts[max(0, nearest - 1) : nearest + 2]} - {own}
        heard = False
        if others:
            a = max(0, first - LOCAL_CONTEXT)
            sent = mouth[a : first + block]
            _, own_corr = context(a, sent, own)
            for other in others:
                lag, corr = context(a, sent, other)
                if corr >= 0.8 and corr > own_corr and not silent(first, lag, level):
                    heard = True  # at the lag the audio before it came out at
                    break
        if not heard:
            missing.append(first)
    return missing
