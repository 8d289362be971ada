"""What waits for one connection of the TCP tunnel for voice (SPEC.md, "TCP tunnel"), sans-I/O.

TCP delivers in order, so a stalled connection would hold every frame behind the
first. Voice is written only while little is unsent on the connection; the rest waits
here, at most ``max_frames`` and ``max_age`` old, the oldest dropped first, so the
tunnel never builds up more than a fraction of a second of delay nor grows memory. The
relay keeps one per tunnelled connection (relay/control_server.py), the client one for
its own (pipeline/stages/control.py).
"""

from __future__ import annotations

import fcntl
import struct
from collections import deque

MAX_FRAMES = 16  # voice frames waiting for one connection (a third of a second of one speaker)
MAX_AGE = 0.2  # seconds a frame may wait before it is dropped: late voice is worse than lost
MAX_UNSENT = 8 * 1024  # bytes on a connection not yet taken by its reader, before voice waits
RETRY = 0.01  # seconds between looks at a connection that voice waits for
SIOCOUTQNSD = 0x894B  # Linux: bytes in a TCP socket's send queue not yet sent
_INT = struct.Struct("i")


def kernel_unsent(fd: int) -> int:
    """Bytes in socket ``fd``'s kernel send queue not sent yet (0 where it cannot be read):
    the part of ``unsent`` both adapters (the relay's and the client's) measure alike."""
    try:
        return int(_INT.unpack(fcntl.ioctl(fd, SIOCOUTQNSD, b"\0" * 4))[0])
    except OSError:
        return 0


class VoiceQueue:
    """The voice frames waiting for one tunnelled connection (encoded ``voice`` frames).

    ``unsent`` is what the adapter measures the connection holds that its reader has
    not taken: a frame is written at once only when nothing waits and that is at most
    ``max_unsent`` bytes. Times are monotonic seconds.
    """

    __slots__ = ("_q", "dropped", "max_age", "max_frames", "max_unsent", "written")

    def __init__(
        self, max_frames: int = MAX_FRAMES, max_age: float = MAX_AGE, max_unsent: int = MAX_UNSENT
    ) -> None:
        self.max_frames = max_frames
        self.max_age = max_age
        self.max_unsent = max_unsent
        self._q: deque[tuple[float, bytes]] = deque()
        self.dropped = 0  # frames given up: too many waiting, or waited too long
        self.written = 0

    def __len__(self) -> int:
        return len(self._q)

    def offer(self, frame: bytes, unsent: int, now: float) -> list[bytes]:
        """A new frame; returns the frames to write now (it alone, or none)."""
        if not self._q and unsent <= self.max_unsent:
            self.written += 1
            return [frame]
        self._q.append((now, frame))
        if len(self._q) > self.max_frames:
            self._q.popleft()
            self.dropped += 1
        return self.take(unsent, now)

    def take(self, unsent: int, now: float) -> list[bytes]:
        """Frames to write now that ``unsent`` bytes are waiting; expired ones dropped."""
        q = self._q
        while q and now - q[0][0] > self.max_age:
            q.popleft()
            self.dropped += 1
        out: list[bytes] = []
        while q and unsent <= self.max_unsent:
            frame = q.popleft()[1]
            out.append(frame)
            unsent += len(frame)
        self.written += len(out)
        return out

    def clear(self) -> None:
        self.dropped += len(self._q)
        self._q.clear()
