"""Opus at 48 kHz mono, VOIP, in-band FEC: a thin wrapper over opuslib 3.0.1.

opuslib stays the binding (it finds libopus and declares the C signatures), but the
hot calls go straight to the raw functions it declares, into preallocated buffers,
because opuslib's own wrappers copy through Python floats (MEASURED.md: decode ~64 µs
vs ~24 µs raw, PLC ~73 vs ~10 µs). The quirks of opuslib 3.0.1 worked around here, each
pinned by a test in tests/test_opus.py:

* ``Encoder.encode_float`` rejects a numpy array: we pass a ctypes pointer to the array.
* ``Decoder.decode_float(None, ...)`` raises TypeError: PLC calls the raw decode with a
  NULL packet pointer.
* the ``inband_fec`` setter and the ``dtx`` property are broken: we call ``encoder_ctl``
  with ``ctl.set_inband_fec`` / ``ctl.set_packet_loss_perc`` ourselves.
* libopus errors surface as ``opuslib.OpusError`` with a bare code, or with none at
  all from the encoder: every libopus error becomes :class:`CodecError` carrying the
  libopus message (``opus_strerror``).
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

try:
    import opuslib
    import opuslib.api.ctl as _ctl
    import opuslib.api.decoder as _dec
    import opuslib.api.encoder as _enc
    import opuslib.api.info as _info
except Exception as exc:  # opuslib raises a bare Exception when libopus is missing
    raise ImportError(f"opuslib could not load libopus ({exc}): install libopus0") from exc

from pipeline.media.audio_format import FRAME_SAMPLES, MAX_PACKET, SAMPLE_RATE

_FLOAT_P = ctypes.POINTER(ctypes.c_float)


class CodecError(Exception):
    """libopus refused a call; the message is libopus's own (opus_strerror)."""

    def __init__(self, what: str, code: int | None = None) -> None:
        self.code = code
        if code is not None:
            what = f"{what}: {_strerror(code)} ({code})"
        super().__init__(what)


def _strerror(code: int) -> str:
    msg = _info.strerror(code)
    return msg.decode() if isinstance(msg, bytes) else str(msg)


def _ctl_call(fn: Any, state: Any, request: Any, *value: int) -> Any:
    try:
        return fn(state, request, *value)
    except opuslib.OpusError as e:
        raise CodecError("opus ctl failed", e.code) from e


def _as_frame(frame: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(frame, dtype=np.float32)  # no copy for the normal case
    if a.shape != (FRAME_SAMPLES,):
        raise ValueError(f"an Opus frame is {FRAME_SAMPLES} float32 samples, got {a.shape}")
    return a


class OpusEncoder:
    """48 kHz mono ``APPLICATION_VOIP`` encoder; one 960-sample frame per packet."""

    def __init__(
        self,
        bitrate: int = 48000,
        *,
        fec: bool = True,
        loss_percent: int = 0,
        complexity: int = 9,
        max_bytes: int = MAX_PACKET,
    ) -> None:
        """``max_bytes``: the largest packet to make (the encoder lowers the bitrate of a
        frame that would not fit), e.g. room left for a voice body's flag byte."""
        if not 1 <= max_bytes <= MAX_PACKET:
            raise ValueError(f"max_bytes {max_bytes} is outside 1..{MAX_PACKET}")
        self.max_bytes = max_bytes
        try:
            self._state: Any = _enc.create_state(SAMPLE_RATE, 1, opuslib.APPLICATION_VOIP)
        except opuslib.OpusError as e:
            raise CodecError("opus_encoder_create failed", e.code) from e
        self._out = (ctypes.c_char * MAX_PACKET)()
        self.set_bitrate(bitrate)
        self.set_complexity(complexity)
        self.set_fec(fec)
        self.set_loss_percent(loss_percent)
        self.lookahead: int = int(_ctl_call(_enc.encoder_ctl, self._state, _ctl.get_lookahead))

    def encode(self, frame: np.ndarray) -> bytes:
        """One Opus packet (1..``max_bytes`` bytes) for one float32[960] frame."""
        if self._state is None:
            raise CodecError("encoder is closed")
        a = _as_frame(frame)
        n = _enc.libopus_encode_float(
            self._state, a.ctypes.data_as(_FLOAT_P), FRAME_SAMPLES, self._out, self.max_bytes
        )
        if n < 0:
            raise CodecError("opus_encode_float failed", n)
        return ctypes.string_at(self._out, n)

    def set_bitrate(self, bps: int) -> None:
        _ctl_call(_enc.encoder_ctl, self._state, _ctl.set_bitrate, int(bps))

    @property
    def bitrate(self) -> int:
        return int(_ctl_call(_enc.encoder_ctl, self._state, _ctl.get_bitrate))

    def set_loss_percent(self, pct: int) -> None:
        """The expected packet loss (0..100): more loss makes the encoder spend more on FEC."""
        _ctl_call(_enc.encoder_ctl, self._state, _ctl.set_packet_loss_perc, int(pct))

    @property
    def loss_percent(self) -> int:
        return int(_ctl_call(_enc.encoder_ctl, self._state, _ctl.get_packet_loss_perc))

    def set_fec(self, on: bool) -> None:
        # opuslib's `inband_fec` property setter drops the value: call the ctl directly.
        _ctl_call(_enc.encoder_ctl, self._state, _ctl.set_inband_fec, int(on))

    @property
    def fec(self) -> bool:
        return bool(_ctl_call(_enc.encoder_ctl, self._state, _ctl.get_inband_fec))

    def set_complexity(self, complexity: int) -> None:
        _ctl_call(_enc.encoder_ctl, self._state, _ctl.set_complexity, int(complexity))

    def reset(self) -> None:
        _ctl_call(_enc.encoder_ctl, self._state, _ctl.reset_state)

    def close(self) -> None:
        state = getattr(self, "_state", None)  # None too when __init__ failed early
        if state is not None:
            _enc.destroy(state)
        self._state = None

    def __enter__(self) -> OpusEncoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


class OpusDecoder:
    """48 kHz mono decoder with PLC and FEC recovery.

    Every method returns a view of one internal float32[960] buffer, valid until the
    next call on this decoder: copy it (or mix it) before decoding again.
    """

    def __init__(self) -> None:
        try:
            self._state: Any = _dec.create_state(SAMPLE_RATE, 1)
        except opuslib.OpusError as e:
            raise CodecError("opus_decoder_create failed", e.code) from e
        self._pcm = np.zeros(FRAME_SAMPLES, dtype=np.float32)
        self._pcm_p = self._pcm.ctypes.data_as(_FLOAT_P)

    def _run(self, packet: bytes | None, fec: int, what: str) -> np.ndarray:
        if self._state is None:
            raise CodecError("decoder is closed")
        n = _dec.libopus_decode_float(
            self._state,
            packet,
            0 if packet is None else len(packet),
            self._pcm_p,
            FRAME_SAMPLES,
            fec,
        )
        if n < 0:
            raise CodecError(f"{what} failed", n)
        if n != FRAME_SAMPLES:
            # A valid packet of another duration (not from our encoder): keep the frame
            # size fixed downstream and say why.
            raise CodecError(f"{what}: packet holds {n} samples, not {FRAME_SAMPLES}")
        return self._pcm

    @staticmethod
    def _packet(packet: bytes | bytearray | memoryview) -> bytes:
        p = packet if isinstance(packet, bytes) else bytes(packet)
        if not 0 < len(p) <= MAX_PACKET:
            raise CodecError(f"an Opus packet is 1..{MAX_PACKET} bytes, got {len(p)}")
        return p

    def decode(self, packet: bytes | bytearray | memoryview) -> np.ndarray:
        """The frame in ``packet``."""
        return self._run(self._packet(packet), 0, "opus_decode_float")

    def conceal(self) -> np.ndarray:
        """A frame of packet-loss concealment (no data): fades toward silence."""
        return self._run(None, 0, "opus PLC")

    def recover(self, next_packet: bytes | bytearray | memoryview) -> np.ndarray:
        """The lost frame rebuilt from the in-band FEC of the packet that follows it.

        libopus falls back to PLC when ``next_packet`` carries no FEC data. Decode
        ``next_packet`` itself normally on the next tick.
        """
        return self._run(self._packet(next_packet), 1, "opus FEC decode")

    def reset(self) -> None:
        """Forget the stream (a new speaker stream starts)."""
        _ctl_call(_dec.decoder_ctl, self._state, _ctl.reset_state)

    def close(self) -> None:
        state = getattr(self, "_state", None)  # None too when __init__ failed early
        if state is not None:
            _dec.destroy(state)
        self._state = None

    def __enter__(self) -> OpusDecoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()
