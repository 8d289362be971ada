"""pipeline/__main__.py: the headless client as a user runs it, in its own process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from pipeline.demo import ROOT

pytestmark = pytest.mark.timeout(120)


def cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid``."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    state, ppid = f.read().rsplit(")", 1)[1].split()[:2]
            except OSError:
                continue
            if state != "Z":
                children.setdefault(int(ppid), []).append(int(entry))
    out: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.add(child)
            todo.append(child)
    return out


def alive(pids: set[int]) -> set[int]:
    out = set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                    out.add(pid)
        except OSError:
            pass
    return out


def segments_of(pid: int) -> set[str]:
    """Ring segments created by that process (their names carry the creator's pid)."""
    return {s for s in os.listdir("/dev/shm") if s.startswith("vc_") and f"_{pid}_" in s}


def test_bad_input_is_one_clear_line() -> None:
    p = cli("--name", "x", "--input", "microphone", "--output", "null")
    _out, err = p.communicate(timeout=60)
    assert p.returncode == 2
    assert "unknown input 'microphone'" in err and "FILE.wav" in err


def test_a_playout_queue_the_ring_cannot_hold_is_refused_up_front() -> None:
    from pipeline.__main__ import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["--name", "x", "--playback-frames", "9"])
    assert build_parser().parse_args(["--name", "x", "--playback-frames", "1"]).playback_frames == 1


def test_server_takes_a_list_and_names_a_bad_entry(capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.__main__ import build_parser

    args = build_parser().parse_args(["--server", "a:8080,[::1]:9000"])
    assert args.server == [("a", 8080), ("::1", 9000)]
    assert build_parser().parse_args([]).server == [("127.0.0.1", 8080)]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--server", "a:8080,b"])
    assert "server 2 of 2: expected HOST:PORT or [IPV6]:PORT, got 'b'" in capsys.readouterr().err


def test_missing_sound_device_names_the_file_options() -> None:
    p = cli("--name", "x", "--input", "device", "--output", "null")
    _out, err = p.communicate(timeout=60)
    if p.returncode == 0:
        pytest.skip("this machine has a sound input device")
    assert p.returncode == 2
    assert err.count("\n") == 1 and "--input" in err and "FILE.wav" in err


def test_runs_for_a_duration_and_writes_stats(relay_port: int, tmp_path: Path) -> None:
    stats = tmp_path / "s.json"
    # A steady tone is no speech to voice activation (nor to noise suppression): sent
    # as it is, continuously.
    p = cli("--server", f"127.0.0.1:{relay_port}", "--name", "cli", "--input", "tone",
            "--output", "null", "--duration", "5", "--stats-json", str(stats),
            "--talk", "continuous", "--no-input-processing")  # fmt: skip
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert "summary:" in out and "connected" in out
    doc = json.loads(stats.read_text())
    assert doc["state"] == "connected" and doc["channel"] == "Lobby"
    assert doc["stats"]["network"]["sent"] > 50
    # The CLI's audio stages ask for a higher priority; the summary says what they got.
    decode = doc["stats"]["decode"]
    assert decode["priority"].split()[0] in ("high", "normal")
    assert decode["priority_short"] == decode["priority"].startswith("normal")


@contextmanager
def running_cli(relay_port: int, name: str) -> Iterator[tuple[subprocess.Popen[str], set[int]]]:
    """A headless client talking a tone, once all its processes are up: (process, descendants)."""
    p = cli("--server", f"127.0.0.1:{relay_port}", "--name", name, "--input", "tone",
            "--output", "null")  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while len(descendants(p.pid)) < 7 and time.monotonic() < deadline:  # 6 + the tracker
            time.sleep(0.1)
        kids = descendants(p.pid)
        assert len(kids) >= 6
        assert len(segments_of(p.pid)) == 4
        time.sleep(1.0)
        yield p, kids
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def wait_gone(kids: set[int], pid: int, seconds: float = 15) -> None:
    """Wait for the processes and the client's ring segments to disappear."""
    deadline = time.monotonic() + seconds
    while (alive(kids) or segments_of(pid)) and time.monotonic() < deadline:
        time.sleep(0.05)


def reap(kids: set[int], pid: int) -> None:
    """After a failed check: end what is left, the stages first, so that the resource
    tracker (which unlinks the rings once nobody holds its pipe) goes last, and remove
    the rings if even it was gone: a failing test leaves nothing behind."""
    for last in (False, True):
        for kid in alive(kids):
            try:
                with open(f"/proc/{kid}/cmdline", "rb") as f:
                    if last or b"resource_tracker" not in f.read():
                        os.kill(kid, signal.SIGKILL)
            except OSError:  # gone meanwhile
                pass
        wait_gone(kids, pid, seconds=5)
    for name in segments_of(pid):
        os.unlink(f"/dev/shm/{name}")


def test_ctrl_c_stops_everything(relay_port: int) -> None:
    with running_cli(relay_port, "int") as (p, kids):
        p.send_signal(signal.SIGINT)
        out, _err = p.communicate(timeout=30)
    try:
        assert p.returncode == 0 and "summary:" in out
        wait_gone(kids, p.pid)  # the resource tracker exits just after its parent
        assert not alive(kids)
        assert not segments_of(p.pid)
    finally:
        reap(kids, p.pid)


def test_sigkill_of_the_supervisor_leaves_no_orphan(relay_port: int) -> None:
    with running_cli(relay_port, "kil") as (p, kids):
        p.kill()
        p.wait(10)
    try:
        wait_gone(kids, p.pid)
        assert not alive(kids), "children outlived their supervisor"
        assert not segments_of(p.pid), "segments outlived the supervisor"
    finally:
        reap(kids, p.pid)


def test_list_devices_names_each_device_or_says_there_is_none() -> None:
    from pipeline.__main__ import format_devices

    assert "no sound devices" in format_devices([])
    text = format_devices(
        [
            {
                "name": "Mic",
                "max_input_channels": 1,
                "max_output_channels": 0,
                "default_samplerate": 48000.0,
            },
            {
                "name": "Speakers",
                "max_input_channels": 0,
                "max_output_channels": 2,
                "default_samplerate": 44100.0,
            },
        ]
    )
    assert text.splitlines() == ["  0  Mic  (in, 48000 Hz)", "  1  Speakers  (out, 44100 Hz)"]
    p = cli("--list-devices")
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0 and out.strip(), err


def test_connecting_needs_a_name() -> None:
    p = cli("--input", "tone", "--output", "null")
    _out, err = p.communicate(timeout=60)
    assert p.returncode == 2 and "--name is required" in err


def test_space_in_the_terminal_pushes_to_talk(relay_port: int, tmp_path: Path) -> None:
    """The key path as a user has it: the client in a real pseudo-terminal, space typed."""
    import select

    stats = tmp_path / "s.json"
    master, slave = os.openpty()
    p = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "--server", f"127.0.0.1:{relay_port}",
         "--name", "key", "--input", "tone", "--output", "null", "--talk", "ptt",
         "--no-input-processing", "--stats-json", str(stats)],
        cwd=ROOT, stdin=slave, stdout=slave, stderr=subprocess.PIPE,
    )  # fmt: skip
    os.close(slave)
    seen = b""

    def wait_for(text: bytes, timeout: float = 60.0) -> None:
        nonlocal seen
        end = time.monotonic() + timeout
        while text not in seen and time.monotonic() < end:
            if select.select([master], [], [], 0.2)[0]:
                seen += os.read(master, 4096)
        assert text in seen, seen[-500:]

    try:
        wait_for(b"keys: space")  # the terminal was taken into cbreak mode
        wait_for(b" as key in ")
        time.sleep(1.0)  # the voice path comes up: nothing sent with the key up
        os.write(master, b" ")
        wait_for(b"key down: talking")
        time.sleep(1.5)
        os.write(master, b" ")
        wait_for(b"key up")
        time.sleep(1.0)
        p.send_signal(signal.SIGINT)
        p.wait(30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        os.close(master)
    assert p.returncode == 0
    doc = json.loads(stats.read_text())
    enc, net = doc["stats"]["encode"], doc["stats"]["network"]
    assert enc["talk_mode"] == "ptt" and enc["spurts"] == 1 and not enc["ptt_pressed"]
    assert 30 <= net["sent"] <= 150  # about the 1.5 s the key was down
    assert enc["unsent_frames"] >= 50  # the second before and after it, key up


def test_password_flag_gets_in_and_a_wrong_one_exits_with_the_reason(tmp_path: Path) -> None:
    from relay.launch import start_relay, stop_relay

    (tmp_path / "pw").write_text("sesame\n")
    proc, port = start_relay("--password-file", str(tmp_path / "pw"), "--data-dir", str(tmp_path))
    try:
        common = ("--server", f"127.0.0.1:{port}", "--input", "silence", "--output", "null")
        wrong = cli(*common, "--name", "w", "--password", "open", "--duration", "60", "--quiet")
        _out, err = wrong.communicate(timeout=90)
        assert wrong.returncode == 1 and "bad_password" in err, err
        stats = tmp_path / "right.json"
        right = cli(*common, "--name", "r", "--password", "sesame", "--duration", "10",
                    "--quiet", "--stats-json", str(stats))  # fmt: skip
        _out, err = right.communicate(timeout=90)
        assert right.returncode == 0, err
        assert json.loads(stats.read_text())["state"] == "connected"
    finally:
        stop_relay(proc)


def test_the_summary_names_the_sealed_voice_counters() -> None:
    from pipeline.__main__ import format_summary
    from pipeline.core.client_view import ClientView
    from pipeline.ipc import events as ev

    view = ClientView()
    view.apply(ev.NetworkStats(good=900, late=3, lost=7, replayed=2, too_old=1, bad_auth=4))
    line = "sealed voice 900 good, 3 late, 7 lost, 3 replayed, 4 failed authentication"
    assert line in format_summary(view)
