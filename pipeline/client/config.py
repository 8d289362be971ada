"""What a whole client is asked to do: the relay, the user, the media, the tuning knobs."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from pipeline.core.relays import server_text, servers_text, split_server, split_servers
from pipeline.media.sources import MediaSpec

__all__ = [
    "PRIORITY_DEFAULT",
    "TALK_DEFAULT",
    "ClientConfig",
    "server_text",
    "servers_text",
    "split_server",
    "split_servers",
]

TALK_DEFAULT = "vad"  # what a user starts in: voice activation, as Mumble does
PRIORITY_DEFAULT = "high"  # what a user's audio stages ask for (pipeline/ipc/scheduling.py)


@dataclass
class ClientConfig:
    host: str  # the first relay to try
    port: int
    name: str
    channel: str = ""
    source: MediaSpec = field(default_factory=lambda: MediaSpec("silence"))
    sink: MediaSpec = field(default_factory=lambda: MediaSpec("null"))
    loss_percent: float = 0.0
    whisper: int = 0
    bitrate: int = 48000
    realtime_input: bool = True
    playback_frames: int = 0
    seed: int | None = None
    trace_dir: str | None = None
    udp_via: tuple[str, int] | None = None  # send voice through this address (benchmarks)
    fec: bool = True  # Opus in-band FEC: sent by the encoder, used by the decoder
    plc: bool = True  # Opus packet loss concealment for lost frames
    # Playout: "adaptive" follows each speaker's measured jitter and time-stretches;
    # "fixed" starts at two packets and never adapts (the old buffer, for comparison).
    jitter: str = "adaptive"
    loss_hint: float = 0.0  # loss % the encoder expects before it measures any
    # Talk mode (pipeline/core/talk.py): "vad", "continuous" or "ptt", switchable at run
    # time (TalkModeCmd, PushToTalkCmd). The CLI and the desktop client start users in
    # "vad" with input processing on (TALK_DEFAULT); this config's own defaults are the
    # transparent path the tests and benchmarks measure (every frame sent as captured).
    talk: str = "continuous"
    input_processing: bool = False  # noise suppression and gain control before encoding
    noise_suppression: bool = True  # of which the noise suppressor (cmd.noise switches it)
    vad_threshold: float = 0.0  # voice activation's RMS level (cmd.threshold; 0: none)
    # Loss feedback (SPEC.md): report what we receive of each speaker, and raise our FEC
    # for what our listeners report. Off: neither (benchmarks compare the two).
    loss_feedback: bool = True
    # Copies of earlier frames in each packet while listeners lose packets in bursts
    # (pipeline/core/redundancy.py). Off: never (benchmarks compare the two).
    redundancy: bool = True
    # Added to every timestamp this client sends, so none reveals its clock; the same
    # for the client's whole life (a restarted stage goes on with the same stream).
    clock_offset: int = field(default_factory=lambda: secrets.randbits(64))
    password: str = field(default="", repr=False)  # the server's, if it has one
    pins_file: str = ""  # the relays' pinned certificates; "": the user's config folder
    accept_new_certificate: bool = False  # replace the pin of a relay whose certificate changed
    # Voice over UDP, through the control connection (the TCP tunnel) while UDP is dead:
    # "auto"; or always "udp" or "tcp" (benchmarks; a network known to block UDP).
    voice_path: str = "auto"
    # How the audio stages ask to be scheduled (pipeline/ipc/scheduling.py): "high" (nice
    # -10), "realtime" (SCHED_RR, else a higher nice) or "normal"; else as they are. The
    # CLI and the desktop client ask for PRIORITY_DEFAULT; tests and benchmarks run as
    # they are unless they ask (a test run's many clients would crowd its harness out).
    priority: str = "normal"
    # More relays to try, in order, when (host, port) cannot be reached or is lost
    # (SPEC.md, "Several relays"); relays the welcome names are added to them.
    fallbacks: tuple[tuple[str, int], ...] = ()

    @property
    def servers(self) -> list[tuple[str, int]]:
        """Every configured relay, the first one first."""
        return [(self.host, self.port), *self.fallbacks]
