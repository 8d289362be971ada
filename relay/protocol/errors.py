"""The one error family every wire parser raises on bad input from the network."""

from __future__ import annotations


class ProtocolError(ValueError):
    """Bad input from the network; ``code`` is the reason sent back in an ``error`` reply."""

    def __init__(self, message: str, code: str = "bad_message") -> None:
        super().__init__(message)
        self.code = code


class FramingError(ProtocolError):
    """The control stream can no longer be split into frames: close it."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="bad_frame")
