"""pipeline/stages/encode.py with its talk modes, end to end: real clients (six processes
each), a real relay, WAV sources and sinks.

* a talker in a quiet room in voice activation sends at most a datagram a second;
* switched to push-to-talk at run time, it sends only while the key is down;
* one speaking after silence is heard whole: onset, words and ending;
* voice activation's threshold keeps speech quieter than it off the wire, and the
  microphone's level says whether it is sent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.client.config import ClientConfig
from pipeline.client.local_client import LocalClient, connected
from pipeline.core.client_view import ClientView
from pipeline.core.talk import TalkGate
from pipeline.ipc import events as ev
from pipeline.media import synthetic
from pipeline.media.audio_format import SAMPLE_RATE
from pipeline.media.sources import MediaSpec, read_wav, write_wav
from tests.conftest import RelayProcess

pytestmark = pytest.mark.timeout(180)


def quiet_room(seconds: float, dbfs: float = -60.0) -> np.ndarray:
    """Pink-ish room noise (white noise through a gentle low-pass) at ``dbfs``."""
    x = np.random.default_rng(9).standard_normal(int(seconds * SAMPLE_RATE))
    x = np.convolve(x, np.ones(8) / 8, mode="same")
    return (x / np.sqrt(np.mean(x * x)) * 10 ** (dbfs / 20)).astype(np.float32)


def client(port: int, name: str, source: MediaSpec, sink: MediaSpec, **kw: object) -> LocalClient:
    cfg = ClientConfig(host="127.0.0.1", port=port, name=name, source=source, sink=sink)
    for k, v in kw.items():
        setattr(cfg, k, v)
    return LocalClient(cfg)


def sent(v: ClientView) -> int:
    return v.network.sent if v.network else 0


def received(v: ClientView) -> int:
    return v.network.received if v.network else 0


def test_quiet_room_sends_nothing_and_push_to_talk_only_while_pressed(
    relay: RelayProcess, tmp_path: Path
) -> None:
    _, port = relay
    write_wav(tmp_path / "room.wav", quiet_room(4.0))
    room, null = MediaSpec("wav", str(tmp_path / "room.wav")), MediaSpec("null")
    with (
        client(port, "lis", MediaSpec("silence"), null) as b,
        client(port, "room", room, null, talk="vad", input_processing=True) as a,
    ):
        a.until(connected, 30, "a connected")
        b.until(connected, 30, "b connected")
        a.until(lambda v: v.encode is not None and v.encode.unsent_frames > 25, 20, "a runs")
        # Voice activation in a quiet room: the frames go by, none goes out.
        s0, r0, frames0 = sent(a.view), received(b.view), a.view.encode.unsent_frames  # type: ignore[union-attr]
        a.pump(3.0)
        assert a.view.encode is not None
        assert a.view.encode.unsent_frames - frames0 >= 100  # 3 s of room noise seen...
        assert sent(a.view) - s0 <= 3  # ...and at most a datagram a second sent
        assert a.view.encode.talk_mode == "vad" and not a.view.encode.talking

        # Push-to-talk, switched at run time: nothing while the key is up...
        a.command(
            ev.TalkModeCmd("ptt"), lambda v: v.encode is not None and v.encode.talk_mode == "ptt"
        )
        s1 = sent(a.view)
        a.pump(1.0)
        assert sent(a.view) - s1 <= 1
        # ...every frame while it is down (the same quiet room, forwarded)...
        a.command(ev.PushToTalkCmd(True), lambda v: v.encode is not None and v.encode.ptt_pressed)
        s2 = sent(a.view)
        a.until(lambda v: sent(v) - s2 >= 50, 5, "every frame sent while the key is down")
        assert a.view.encode is not None
        spurts = a.view.encode.spurts
        # ...and nothing once it is up again.
        a.command(
            ev.PushToTalkCmd(False), lambda v: v.encode is not None and not v.encode.ptt_pressed
        )
        a.pump(0.3)
        s3 = sent(a.view)
        a.pump(1.5)
        assert sent(a.view) - s3 <= 1
        assert spurts >= 1
        b.pump(0.5)
        assert 50 <= received(b.view) - r0 <= sent(a.view) - s0  # the listener got the spurt


def speech_after_silence() -> np.ndarray:
    """1 s of quiet room, 2 s of speech, 1.5 s of quiet room."""
    speech = synthetic.speech_like(2.0, seed=11, amplitude=0.4)
    room = quiet_room(4.5)
    out = room.copy()
    out[SAMPLE_RATE : 3 * SAMPLE_RATE] += speech
    return out


def test_a_talker_in_voice_activation_is_heard_whole(relay: RelayProcess, tmp_path: Path) -> None:
    _, port = relay
    said = speech_after_silence()
    write_wav(tmp_path / "said.wav", said)
    rec, trace = tmp_path / "heard.wav", tmp_path / "trace"
    trace.mkdir()
    with (
        client(port, "lis", MediaSpec("silence"), MediaSpec("wav", str(rec))) as b,
        client(port, "talk", MediaSpec("wav", str(tmp_path / "said.wav")), MediaSpec("null"),
               talk="vad", input_processing=False, trace_dir=str(trace)) as a,
    ):  # fmt: skip
        a.until(connected, 30, "a connected")
        b.until(connected, 30, "b connected")
        a.until(lambda v: v.encode is not None and v.encode.spurts >= 1, 30, "a talks")
        a.until(lambda v: v.encode is not None and v.encode.unsent_frames > 60, 20, "a stops")
        b.pump(1.0)
        enc, net = a.view.encode, a.view.network
        assert enc is not None and net is not None and a.view.endpoint is not None
        listener = b.view.speaker(a.view.endpoint.user_id)
        # Each spurt ended with its hold's last packet flagged: the listener went quiet
        # there with nothing concealed (a concealment now is only a wait for a late one).
        # (A spurt whose successor is held when it ends, or still playing at the end of
        # the test, is no pause: at most one a spurt.)
        assert listener is not None and 1 <= listener.spurt_ends <= enc.spurts
        assert listener.concealed == listener.waited, listener
        # Frames the capture ring refused (an encode stage starved of CPU on a loaded
        # machine) never reach the talk mode: the one allowance made below.
        dropped = a.view.capture.ring_dropped if a.view.capture else 0
        b_received = received(b.view)
    # The frames sent, as the encode stage traced them: (capture seq, ...); the file
    # source starts at the file's first frame with capture seq 1, and loops.
    n = len(synthetic.frames(said))
    rows = np.load(trace / "encode.npy")
    sent_frames = {int(s - 1) for s in rows[:, 0] if s - 1 < n}  # the first pass
    # The known answer: the gate with an ideal detector (the speech's own energy) over
    # the same frames: the speech, each onset's pre-roll, each ending's hold.
    ideal: TalkGate[int] = TalkGate(lambda f: float(np.sqrt(np.mean(f * f))) > 0.01)
    want = {i for k, f in enumerate(synthetic.frames(said)) for _, i in ideal.push(f, k)}
    speech = {k for k, f in enumerate(synthetic.frames(said)) if np.sqrt(np.mean(f * f)) > 0.01}
    cut = speech - sent_frames
    assert len(cut) <= dropped, (sorted(cut), dropped)  # nothing said was cut
    # The room alone (the speech spans frames 50..149) stayed home, but for the pre-roll
    # and the hold, and a few frames where WebRTC hears the faint edges of the speech.
    room_only = set(range(50 - 2 - 3)) | set(range(150 + 12 + 6, n))
    assert not sent_frames & room_only, sorted(sent_frames & room_only)
    assert len(sent_frames) <= len(want) + 4 * ideal.counts.spurts
    assert enc.spurts == ideal.counts.spurts
    # Everything sent was heard: received, none lost, and the recording is the speech.
    assert b_received >= len(sent_frames)
    assert listener is None or listener.lost == 0
    # The listener played it: as much loud audio as was said (its playout may stretch a
    # few percent, and more on a loaded machine; the waveform is test_supervisor's part).
    loud = [np.sqrt(np.mean(f * f)) > 0.01 for f in synthetic.frames(read_wav(rec))]
    assert sum(loud) >= 0.85 * len(speech), (sum(loud), len(speech))


def test_a_threshold_above_the_voice_keeps_it_off_the_wire_and_the_level_says_so(
    relay: RelayProcess,
) -> None:
    _, port = relay
    speech, null = MediaSpec("speech"), MediaSpec("null")
    with client(port, "loud", speech, null, talk="vad", vad_threshold=0.9) as a:
        a.until(connected, 30, "a connected")
        a.until(lambda v: v.encode is not None and v.encode.unsent_frames > 50, 20, "a runs")
        # Speech the detector hears, every frame of it under -1 dBFS: nothing goes out.
        assert a.view.encode is not None and a.view.encode.vad_threshold == 0.9
        s0 = sent(a.view)
        a.pump(2.0)
        assert sent(a.view) - s0 <= 1
        assert 0.01 < a.view.input_level < 0.9 and not a.view.transmitting
        # The threshold lowered to none at run time: the same speech is sent, and said to be.
        a.command(
            ev.VadThresholdCmd(0.0),
            lambda v: v.encode is not None and v.encode.vad_threshold == 0.0,
        )
        s1 = sent(a.view)
        a.until(lambda v: v.transmitting, 10, "the level says it is sent")
        a.pump(2.0)
        assert sent(a.view) - s1 >= 40  # speech with pauses: most of 2 s of frames
