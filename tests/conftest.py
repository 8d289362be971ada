"""Shared test setup: Hypothesis profiles and the leftover checks every test gets."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

# "ci" (the default, `make test`) keeps the suite within its time budget: at 2,000
# examples the property tests alone took four of its minutes. "heavy" (`make fuzz`, which
# runs every Hypothesis test: the plugin marks them) digs 200 times deeper; failures
# either finds are kept in .hypothesis/ and replayed first by every later run.
settings.register_profile(
    "ci", max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "heavy", max_examples=50000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=200, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# Relays keep their self-signed identity in $XDG_DATA_HOME and clients their pinned
# certificates in $XDG_CONFIG_HOME: one folder per test run (children inherit it), so
# a test run never touches the user's own and parallel runs never share pins.
_STATE = tempfile.mkdtemp(prefix="vc-test-state-")
os.environ["XDG_DATA_HOME"] = os.path.join(_STATE, "data")
os.environ["XDG_CONFIG_HOME"] = os.path.join(_STATE, "config")


def _shm_segments() -> set[str]:
    try:
        return set(os.listdir("/dev/shm"))
    except FileNotFoundError:
        return set()


def live_children() -> list[int]:
    """Pids of this process's children that are still running (not zombies)."""
    me = os.getpid()
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name may hold spaces and parentheses; fields resume after the last ')'.
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == me and state != "Z" and int(entry) != _resource_tracker_pid():
            out.append(int(entry))
    return out


def _resource_tracker_pid() -> int | None:
    # multiprocessing's own helper lives as long as the test session does; it is not a leak.
    from multiprocessing import resource_tracker

    return resource_tracker._resource_tracker._pid  # type: ignore[attr-defined]


@pytest.fixture(autouse=True)
def own_pins(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test's clients pin relays in a folder of their own: ports come round again
    within a run, and a relay with an identity of its own (``--data-dir``) on a port an
    earlier test's relay had was refused as a changed certificate (a whole run failed
    test_pipeline_main once so)."""
    monkeypatch.setenv("XDG_CONFIG_HOME", tempfile.mkdtemp(prefix="config-", dir=_STATE))


@pytest.fixture(autouse=True)
def no_leftovers() -> Iterator[None]:
    """Fail a test that leaves a shared-memory segment or a child process behind."""
    import multiprocessing

    before = _shm_segments()
    yield
    deadline = time.monotonic() + 5
    while live_children() and time.monotonic() < deadline:
        multiprocessing.active_children()  # reaps finished multiprocessing children
        time.sleep(0.05)
    children = live_children()
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    multiprocessing.active_children()
    # Only segments this process created (ring names carry the creator's pid): other
    # test runs on the same machine have segments of their own, alive and in use.
    mine = f"_{os.getpid()}_"
    leaked = {s for s in _shm_segments() - before if s.startswith("vc_") and mine in s}
    for name in leaked:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"/dev/shm/{name}")
    assert not leaked, f"shared-memory segments left behind: {sorted(leaked)}"
    assert not children, f"child processes left running: {children}"


@pytest.fixture(autouse=True)
def qt_garbage_on_the_main_thread(request: pytest.FixtureRequest) -> Iterator[None]:
    """Free a Qt test's widgets on the main thread, never on another.

    A widget held in a reference cycle (a window's signal connections to its own
    methods and lambdas make one) is freed by Python's cyclic collector, which runs on
    whichever thread happens to allocate. Under pytest-xdist a worker has a second
    thread, execnet's reader, so a collection there deleted a Qt widget while the main
    thread painted it: a segfault in a later test. During a Qt test the collector is
    off; when it ends (after pytest-qt has closed its widgets) it runs here, on the main
    thread. (The UI process does the same for its own second thread, the bus broker:
    ui/main_thread_gc.py.)
    """
    if not request.node.module.__name__.split(".")[-1].startswith("test_ui_"):
        yield
        return
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.collect()
        if was_enabled:
            gc.enable()


RelayProcess = tuple["subprocess.Popen[str]", int]


def _relay(*args: str) -> Iterator[RelayProcess]:
    from relay.launch import start_relay, stop_relay

    proc, port = start_relay(*args)
    try:
        yield proc, port
    finally:
        stop_relay(proc)


@pytest.fixture
def relay() -> Iterator[RelayProcess]:
    """A real relay daemon on a free loopback port: (process, port)."""
    yield from _relay()


@pytest.fixture
def relay_port(relay: RelayProcess) -> int:
    return relay[1]


@pytest.fixture
def echo_relay_port() -> Iterator[int]:
    """A relay in echo mode: every client hears itself."""
    for _proc, port in _relay("--echo"):
        yield port


@pytest.fixture
def redis_server() -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """A private ``redis-server`` on a free loopback port, keeping nothing on disk:
    (process, port). Skipped, saying why, where redis-server is not installed."""
    from relay.launch import redis_available, start_redis, stop_redis

    if not redis_available():
        pytest.skip("redis-server is not installed (scripts/setup.sh installs it)")
    proc, port = start_redis()
    try:
        yield proc, port
    finally:
        stop_redis(proc)


# --- a private X server, and a keyboard on it (the global push-to-talk key's tests) ------


@pytest.fixture
def xvfb() -> Iterator[str]:
    """A private X server's display name."""
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed")
    read, write = os.pipe()
    proc = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write), "-nolisten", "tcp", "-screen", "0", "640x480x24"],
        pass_fds=(write,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write)
    try:
        with os.fdopen(read) as f:
            number = f.readline().strip()  # written once the server takes connections
        assert number, "Xvfb did not start"
        yield f":{number}"
    finally:
        proc.terminate()
        proc.wait(10)


class Keyboard:
    """Key events on an X display through XTest, as from a keyboard."""

    def __init__(self, display: str) -> None:
        self.x = ctypes.CDLL(ctypes.util.find_library("X11"))
        self.xtst = ctypes.CDLL(ctypes.util.find_library("Xtst"))
        self.x.XOpenDisplay.restype = ctypes.c_void_p
        self.x.XOpenDisplay.argtypes = [ctypes.c_char_p]
        self.x.XKeysymToKeycode.restype = ctypes.c_ubyte
        self.x.XKeysymToKeycode.argtypes = [ctypes.c_void_p, ctypes.c_ulong]
        self.x.XFlush.argtypes = [ctypes.c_void_p]
        self.x.XCloseDisplay.argtypes = [ctypes.c_void_p]
        self.xtst.XTestFakeKeyEvent.argtypes = [
            ctypes.c_void_p,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_ulong,
        ]
        self.dpy = self.x.XOpenDisplay(display.encode())
        assert self.dpy

    def key(self, qt_key: int, down: bool) -> None:
        from ui.global_hotkey import keysym_of

        code = self.x.XKeysymToKeycode(self.dpy, keysym_of(qt_key))
        self.xtst.XTestFakeKeyEvent(self.dpy, code, int(down), 0)
        self.x.XFlush(self.dpy)

    def close(self) -> None:
        self.x.XCloseDisplay(self.dpy)
