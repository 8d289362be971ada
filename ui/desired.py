"""What the user has set (mute, deafen, bitrate, chaos, whisper) and the commands that apply it.

Bus commands are fire-and-forget: a stage that was restarted, or subscribed a
moment too late, never saw them. Every stage reports its settings in its
stats, so the UI compares each report with what the user wants and sends the
command again on a mismatch. Sans-I/O: events in, commands out.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.ipc import events as ev


@dataclass
class Desired:
    muted: bool = False
    deafened: bool = False
    bitrate: int = 48000
    chaos: float = 0.0
    whisper: int = 0

    def commands(self) -> list[ev.Event]:
        """Every setting as a command (sent whole after attaching to a fresh client)."""
        return [
            ev.MuteCmd(self.muted),
            ev.DeafenCmd(self.deafened),
            ev.BitrateCmd(self.bitrate),
            ev.ChaosCmd(self.chaos),
            ev.WhisperCmd(self.whisper),
        ]

    def corrections(self, stats: ev.Stats) -> list[ev.Event]:
        """The commands to send again because this stage reports something else."""
        v = stats.values
        out: list[ev.Event] = []
        if stats.stage == "encode":
            if _differs(v, "muted", self.muted):
                out.append(ev.MuteCmd(self.muted))
            if _differs(v, "bitrate", self.bitrate):
                out.append(ev.BitrateCmd(self.bitrate))
            if out and self.chaos:  # a restarted encoder also lost its loss hint
                out.append(ev.ChaosCmd(self.chaos))
        elif stats.stage == "decode":
            if _differs(v, "deafened", self.deafened):
                out.append(ev.DeafenCmd(self.deafened))
        elif stats.stage == "network":
            chaos = v.get("chaos_percent")
            if isinstance(chaos, int | float) and abs(chaos - self.chaos) > 0.05:
                out.append(ev.ChaosCmd(self.chaos))
            if _differs(v, "whisper", self.whisper):
                out.append(ev.WhisperCmd(self.whisper))
        return out


def _differs(values: dict[str, object], key: str, wanted: object) -> bool:
    """Only a reported value that differs counts; a stage that does not report it is left alone."""
    return key in values and values[key] != wanted
