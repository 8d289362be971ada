"""The settings reconciler: a stage that reports something else gets the command again."""

from __future__ import annotations

from pipeline.ipc import events as ev
from ui.desired import Desired


def test_matching_reports_need_nothing() -> None:
    d = Desired(muted=True, bitrate=24000, chaos=5.0, whisper=3, deafened=True)
    assert d.corrections(ev.EncodeStats(muted=True, bitrate=24000)) == []
    assert d.corrections(ev.DecodeStats(deafened=True)) == []
    assert d.corrections(ev.NetworkStats(chaos_percent=5.0, whisper=3)) == []
    assert d.corrections(ev.PlaybackStats(underflows=1)) == []


def test_a_restarted_encoder_gets_mute_bitrate_and_loss_hint_again() -> None:
    d = Desired(muted=True, bitrate=24000, chaos=5.0)
    out = d.corrections(ev.EncodeStats(muted=False, bitrate=48000))
    assert out == [ev.MuteCmd(True), ev.BitrateCmd(24000), ev.ChaosCmd(5.0)]


def test_decode_and_network_mismatches() -> None:
    d = Desired(deafened=True, chaos=20.0, whisper=4)
    assert d.corrections(ev.DecodeStats(deafened=False)) == [ev.DeafenCmd(True)]
    assert d.corrections(ev.NetworkStats(chaos_percent=0.0, whisper=0)) == [
        ev.ChaosCmd(20.0),
        ev.WhisperCmd(4),
    ]


def test_a_small_chaos_difference_is_rounding_not_a_mismatch() -> None:
    d = Desired(chaos=20.0)
    assert d.corrections(ev.NetworkStats(chaos_percent=20.04)) == []


def test_the_control_process_is_told_mute_and_deafen_again() -> None:
    d = Desired(muted=True, deafened=True)
    assert d.corrections(ev.ControlStats(muted=True, deafened=True)) == []
    assert d.corrections(ev.ControlStats(muted=False, deafened=False)) == [
        ev.MuteCmd(True),
        ev.DeafenCmd(True),
    ]


def test_a_restarted_decoder_gets_every_volume_again() -> None:
    d = Desired(gains={2: 0.5, 3: 0.0})
    assert (
        d.corrections(ev.DecodeStats(gains=[ev.SpeakerGain(2, 0.5), ev.SpeakerGain(3, 0.0)])) == []
    )
    assert d.corrections(ev.DecodeStats()) == [ev.GainCmd(2, 0.5), ev.GainCmd(3, 0.0)]
    # A volume set back to normal that the stage still applies is reset.
    assert Desired().corrections(ev.DecodeStats(gains=[ev.SpeakerGain(4, 1.5)])) == [
        ev.GainCmd(4, 1.0)
    ]


def test_talk_mode_and_a_lost_push_to_talk_release_are_sent_again() -> None:
    d = Desired(talk="ptt", ptt=False)
    out = d.corrections(ev.EncodeStats(talk_mode="vad", ptt_pressed=True, bitrate=48000))
    assert out == [ev.TalkModeCmd("ptt"), ev.PushToTalkCmd(False)]
    assert d.corrections(ev.EncodeStats(talk_mode="ptt", ptt_pressed=False, bitrate=48000)) == []


def test_noise_suppression_is_switched_again_only_where_there_is_a_suppressor() -> None:
    d = Desired(noise_suppression=False)
    on = ev.EncodeStats(bitrate=48000, input_processing=True, noise_suppression=True)
    assert d.corrections(on) == [ev.NoiseSuppressionCmd(False)]
    assert d.corrections(ev.EncodeStats(bitrate=48000)) == []  # nothing to switch
    d.noise_suppression = True
    assert d.corrections(on) == []


def test_a_restarted_encoder_gets_the_threshold_again() -> None:
    d = Desired(vad_threshold=0.05)
    out = d.corrections(ev.EncodeStats(talk_mode="vad", bitrate=48000, vad_threshold=0.0))
    assert out == [ev.VadThresholdCmd(0.05)]
    assert d.corrections(ev.EncodeStats(talk_mode="vad", bitrate=48000, vad_threshold=0.05)) == []
