"""What the user has set (mute, deafen, bitrate, chaos, whisper, talk mode and threshold,
push-to-talk,
noise suppression, each speaker's volume) and the commands that apply it.

Bus commands are fire-and-forget: a stage that was restarted, or subscribed a
moment too late, never saw them. Every stage reports its settings in its
stats, so the UI compares each report with what the user wants and sends the
command again on a mismatch. Sans-I/O: events in, commands out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.client.config import TALK_DEFAULT
from pipeline.ipc import events as ev


@dataclass
class Desired:
    muted: bool = False
    deafened: bool = False
    bitrate: int = 48000
    chaos: float = 0.0
    whisper: int = 0
    gains: dict[int, float] = field(default_factory=dict)  # user id -> volume (not 1.0)
    talk: str = TALK_DEFAULT
    ptt: bool = False  # the push-to-talk key or button is down
    noise_suppression: bool = True
    vad_threshold: float = 0.0  # voice activation's RMS level, set on the meter

    def corrections(self, stats: ev.StageReport) -> list[ev.Event]:
        """The commands to send again because this stage reports something else."""
        out: list[ev.Event] = []
        if isinstance(stats, ev.EncodeStats):
            if stats.muted != self.muted:
                out.append(ev.MuteCmd(self.muted))
            if stats.bitrate != self.bitrate:
                out.append(ev.BitrateCmd(self.bitrate))
            if stats.talk_mode and stats.talk_mode != self.talk:
                out.append(ev.TalkModeCmd(self.talk))
            if stats.talk_mode and abs(stats.vad_threshold - self.vad_threshold) > 1e-6:
                out.append(ev.VadThresholdCmd(self.vad_threshold))
            if stats.ptt_pressed != self.ptt:  # a lost key-up must not leave the mic open
                out.append(ev.PushToTalkCmd(self.ptt))
            # Only a stage that cleans its input has a suppressor to switch.
            if stats.input_processing and stats.noise_suppression != self.noise_suppression:
                out.append(ev.NoiseSuppressionCmd(self.noise_suppression))
            if out and self.chaos:  # a restarted encoder also lost its loss hint
                out.append(ev.ChaosCmd(self.chaos))
        elif isinstance(stats, ev.DecodeStats):
            if stats.deafened != self.deafened:
                out.append(ev.DeafenCmd(self.deafened))
            reported = {g.user_id: g.gain for g in stats.gains}
            for uid in sorted(set(reported) | set(self.gains)):
                want = self.gains.get(uid, 1.0)
                if abs(reported.get(uid, 1.0) - want) > 1e-6:
                    out.append(ev.GainCmd(uid, want))
        elif isinstance(stats, ev.ControlStats):  # what the relay is told, for the others
            if stats.muted != self.muted:
                out.append(ev.MuteCmd(self.muted))
            if stats.deafened != self.deafened:
                out.append(ev.DeafenCmd(self.deafened))
        elif isinstance(stats, ev.NetworkStats):
            if abs(stats.chaos_percent - self.chaos) > 0.05:
                out.append(ev.ChaosCmd(self.chaos))
            if stats.whisper != self.whisper:
                out.append(ev.WhisperCmd(self.whisper))
        return out
