"""pipeline/client/terminal_keys.py: keys to talk commands, and a real pseudo-terminal."""

from __future__ import annotations

import os
import termios
import time

from pipeline.client.terminal_keys import RawKeys, TalkKeys
from pipeline.ipc import events as ev


def test_space_toggles_push_to_talk_and_switches_to_it() -> None:
    keys = TalkKeys("vad")
    assert keys.key(" ") == [ev.TalkModeCmd("ptt"), ev.PushToTalkCmd(True)]
    assert keys.describe() == "push-to-talk, key down: talking"
    assert keys.key(" ") == [ev.PushToTalkCmd(False)]
    assert keys.key(" ") == [ev.PushToTalkCmd(True)]
    assert keys.key("v") == [ev.TalkModeCmd("vad"), ev.PushToTalkCmd(False)]  # key up
    assert keys.key("v") == []  # already
    assert keys.key("C") == [ev.TalkModeCmd("continuous"), ev.PushToTalkCmd(False)]
    assert keys.key("x") == [] and keys.key("\n") == []


def test_what_the_encoder_missed_is_sent_again() -> None:
    keys = TalkKeys("ptt")
    keys.key(" ")
    stale = ev.EncodeStats(talk_mode="vad", ptt_pressed=False)
    assert keys.corrections(stale) == [ev.TalkModeCmd("ptt"), ev.PushToTalkCmd(True)]
    keys.key(" ")  # released: a report that still says pressed gets the release again
    assert keys.corrections(ev.EncodeStats(talk_mode="ptt", ptt_pressed=True)) == [
        ev.PushToTalkCmd(False)
    ]
    assert keys.corrections(ev.EncodeStats(talk_mode="ptt", ptt_pressed=False)) == []


def test_raw_keys_read_a_real_terminal_without_blocking_and_restore_it() -> None:
    master, slave = os.openpty()
    with os.fdopen(slave, "rb", buffering=0) as stream:
        before = termios.tcgetattr(slave)
        with RawKeys(stream) as keys:
            assert keys.active
            assert keys.read() == ""  # nothing typed: no wait
            os.write(master, b" v")
            got = ""
            for _ in range(100):
                got += keys.read()
                if len(got) == 2:
                    break
                time.sleep(0.01)
            assert got == " v"  # one key at a time, no Enter needed
            assert not termios.tcgetattr(slave)[3] & termios.ICANON
        assert termios.tcgetattr(slave) == before
    os.close(master)


def test_raw_keys_are_a_no_op_without_a_terminal() -> None:
    r, w = os.pipe()
    with os.fdopen(r, "rb") as stream, RawKeys(stream) as keys:
        assert not keys.active and keys.read() == ""
    os.close(w)
