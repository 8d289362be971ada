"""``python -m ui.screenshot [--live] [PNG]``: the main window with the overlay open.

(``--live`` also writes PNG's ``-disconnected`` and ``-never-connected`` siblings.)

Renders offscreen (QT_QPA_PLATFORM=offscreen needs no display). By default the
window is fed scripted events of a call of four people, with no client running,
so the picture can be regenerated quickly after any change to the window.
``--live`` instead runs a real call on loopback: a relay, Bob speaking with 5 %
chaos loss, Dave in another channel, and the window's own client (Alice); every
figure in the picture is then measured.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

from PyQt6.QtWidgets import QApplication

from pipeline.ipc import events as ev
from relay.protocol.messages import UserInfo
from ui.busbridge import BusBridge
from ui.window import MainWindow

DEFAULT_PATH = Path(__file__).resolve().parent.parent / "docs" / "screenshot.png"


def _latency(hop: str, p50: float, p99: float, n: int = 3000) -> ev.Percentiles:
    return ev.Percentiles(hop, p50, p99, n)


def sample_events(now: float) -> list[ev.Event]:
    """A moment of a call: Alice (us) in Lobby with Bob speaking, whispering to Carol."""
    users = [
        UserInfo(1, "Alice", "Lobby"),
        UserInfo(2, "Bob", "Lobby"),
        UserInfo(3, "Carol", "Lobby", muted=True),
        UserInfo(4, "Dave", "Gaming"),
        UserInfo(5, "Erin", "Gaming"),
        UserInfo(6, "Frank", "AFK", server_muted=True),
    ]
    speakers = [
        ev.SpeakerStats(2, depth=3, loss_percent=4.8, concealed=14, late=1, played=2950),
        ev.SpeakerStats(3, depth=2, loss_percent=0.0, concealed=0, late=0, played=1210),
    ]
    return [
        ev.ConnectionState(ev.CONNECTED, "voice.example.org:8080", 0, "", 1, "Alice", "Lobby"),
        ev.Roster(1, "Lobby", ["Lobby", "Gaming", "Music", "AFK"], users),
        ev.ChatLine(4, "Dave", "Lobby", "a round later?", now - 260),
        ev.Notice("Dave left Lobby"),
        ev.ChatLine(2, "Bob", "Lobby", "sounds great now", now - 95),
        ev.ChatLine(1, "Alice", "Lobby", "chaos at 5 % now", now - 70),
        ev.ChatLine(2, "Bob", "Lobby", "a few clicks", now - 41),
        ev.ChatLine(3, "Carol", "Lobby", "all clear here", now - 12),
        ev.Activity([2]),
        ev.InputLevel(0.004),
        ev.ControlStats(tcp_rtt_ms=23.4),
        ev.CaptureStats(frames=4410),
        ev.EncodeStats(
            packets=4409,
            bitrate=48000,
            latency=[
                _latency(ev.HOP_CAPTURE_TO_ENCODE, 0.21, 0.84),
                _latency(ev.HOP_ENCODE, 0.32, 0.71),
            ],
        ),
        ev.NetworkStats(
            sent=4190,
            chaos_dropped=219,
            chaos_percent=5.0,
            udp_rtt_ms=21.7,
            whisper=3,
            latency=[
                _latency(ev.HOP_ENCODE_TO_NETWORK, 0.09, 0.35),
            ],
        ),
        ev.PlaybackStats(
            underflows=3,
            frames=4400,
            ring_fill=2,
            latency=[_latency(ev.HOP_ARRIVAL_TO_EAR, 45.88, 69.18)],
        ),
        ev.DecodeStats(
            speakers=speakers,
            loss_percent=4.8,
            playback_fill=2,
            latency=[
                _latency(ev.HOP_RECEIVE_TO_DECODE, 3.1, 19.2),
                _latency(ev.HOP_JITTER_WAIT, 38.5, 61.0),
                _latency(ev.HOP_DECODE, 0.11, 0.3),
            ],
        ),
    ]


def render(path: Path) -> None:
    app = QApplication.instance() or QApplication(sys.argv[:1])
    now = time.time()
    mono = 1000.0
    import tempfile

    from PyQt6.QtCore import QSettings

    bridge = BusBridge()
    ini = Path(tempfile.mkdtemp(prefix="vc-shot-")) / "ui.ini"
    settings = QSettings(str(ini), QSettings.Format.IniFormat)  # not the user's
    window = MainWindow(bridge, clock=lambda: mono, settings=settings)
    # The last minute of the graph: clean at first, then the chaos slider at 5 %.
    for i in range(119):
        t = mono - 60 + i * 0.5
        loss = 0.0 if i < 40 else 4.0 + 1.5 * math.sin(i / 3.0) + (3.0 if i % 17 == 0 else 0.0)
        depth = 2 + (1 if i >= 40 and i % 5 in (1, 2) else 0) + (1 if i % 23 == 0 else 0)
        window.overlay.history.add(t, max(0.0, loss), depth)
    for event in sample_events(now):
        window.apply(event)
    window.set_whisper(3)
    for picker in (
        window.audio.input,
        window.audio.output,
    ):  # as they are when the UI owns the client
        picker.setEnabled(True)
    window.audio.output.select("null")
    window.audio.chaos.setValue(5)
    window.show()
    window.toggle_overlay()
    app.processEvents()
    window.grab().save(str(path))
    window.shutdown()
    window.close()


RELAY_CONFIG = """\
channels = [
    "Lobby",
    { name = "Gaming", description = "Squad chat", max_users = 4 },
    { name = "Music", description = "Listening party: keep it quiet" },
    "AFK",
]
"""


def render_live(
    path: Path, seconds: float = 50.0, states: bool = True, everyone: bool = True
) -> None:
    """A real call on loopback: Alice (the window) talking in voice activation with a
    threshold set on her level meter, Bob talking (5 % chaos loss), Carol muted, Dave talking
    at a volume Alice lowered to 40 %, Erin in another channel and muted by the server's
    operator (its admin socket); the overlay open. With
    ``states``, also the window while the relay is down (``-disconnected``) and a window
    that never reached its server (``-never-connected``), next to ``path``. Without
    ``everyone``, Bob alone (a quick check that it still runs)."""
    import tempfile

    from PyQt6.QtCore import QSettings

    from pipeline.client.config import ClientConfig
    from pipeline.client.local_client import LocalClient, connected
    from pipeline.media.sources import MediaSpec
    from relay import admin_protocol as ap
    from relay.admin_cli import call
    from relay.launch import start_relay, stop_relay
    from ui import connection as cn
    from ui.connect import ConnectInfo
    from ui.host import ClientHost

    app = QApplication.instance() or QApplication(sys.argv[:1])
    scratch = Path(tempfile.mkdtemp(prefix="vc-shot-"))
    (scratch / "relay.toml").write_text(RELAY_CONFIG)
    settings = QSettings(str(scratch / "ui.ini"), QSettings.Format.IniFormat)
    admin = str(scratch / "admin.sock")
    relay, port = start_relay("--config", str(scratch / "relay.toml"), "--admin-socket", admin)
    base = ClientConfig(host="127.0.0.1", port=port, name="", sink=MediaSpec("null"))
    others: list[LocalClient] = []
    windows: list[MainWindow] = []

    def pump(secs: float, until: object = None) -> None:
        end = time.monotonic() + secs
        while time.monotonic() < end:
            app.processEvents()
            for other in others:
                other.pump(0.02)
            if callable(until) and until():
                return

    try:
        bob = LocalClient(replace(base, name="Bob", source=MediaSpec("speech"),
                                  loss_percent=5.0, seed=3)).start()  # fmt: skip
        others.append(bob)
        if everyone:
            carol = LocalClient(replace(base, name="Carol")).start()
            dave = LocalClient(replace(base, name="Dave", source=MediaSpec("speech"), seed=8))
            erin = LocalClient(replace(base, name="Erin", channel="Gaming"))
            others += [carol, dave.start(), erin.start()]
        alice = replace(
            base,
            name="Alice",
            source=MediaSpec("speech"),
            seed=5,
            talk="vad",
            input_processing=True,
            vad_threshold=10 ** (-36 / 20),  # as set on the meter: -36 dBFS
        )
        window = MainWindow(BusBridge(), ClientHost(alice), settings=settings)
        windows.append(window)
        window.show()
        assert window.host is not None
        window.host.start()
        for other in others:
            other.until(connected, 120, f"{other.sup.cfg.name} connected")  # 30 processes
        lines = [  # (when, who, text): a short exchange halfway through
            (seconds / 2, bob.bus.publish, "can you hear me? chaos is at 5 % on my side"),
            (seconds / 2 + 1.5, window.bridge.publish, "loud and clear, a few clicks"),
        ]
        if everyone:
            carol.command(ev.MuteCmd(True), lambda v: v.encode is not None and v.encode.muted)
            pump(60, lambda: "Dave" in [u.name for u in window.view.roster.users])
            dave_id = next(u.user_id for u in window.view.roster.users if u.name == "Dave")
            window.set_volume(dave_id, percent=40)
            pump(60, lambda: "Erin" in [u.name for u in window.view.roster.users])
            call(admin, ap.Mute("Erin"))
            lines.append((seconds / 2 + 3, carol.bus.publish, "notes: https://example.org/notes"))
        start = time.monotonic()
        while (elapsed := time.monotonic() - start) < seconds:
            pump(0.05)
            while lines and elapsed >= lines[0][0]:
                _when, publish, text = lines.pop(0)
                publish(ev.ChatCmd(text))
        window.toggle_overlay()
        pump(1.0)
        pump(10, lambda: window.audio.meter.transmitting)  # caught between her words
        window.grab().save(str(path))
        if not states:
            return
        window.toggle_overlay()
        stop_relay(relay)
        pump(30, lambda: window.connection.phase == cn.RECONNECTING)
        window.chat.input.setText("are you still there?")
        pump(1.0)
        window.grab().save(str(path.with_name(path.stem + "-disconnected.png")))
        lost = MainWindow(BusBridge(), ClientHost(alice), settings=settings)
        windows.append(lost)
        lost.resize(window.size())
        lost.show()
        lost.connect_to(ConnectInfo("127.0.0.1", port, "Alice"))  # the relay is gone
        pump(60, lambda: lost.connection.phase == cn.UNREACHABLE)
        pump(0.5)
        lost.grab().save(str(path.with_name(path.stem + "-never-connected.png")))
    finally:
        for w in windows:
            w.shutdown()
            w.close()
        for other in others:
            other.stop()
        stop_relay(relay)


if __name__ == "__main__":
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    if "--live" in sys.argv[1:]:  # the relay's identity and the clients' pins: not the user's
        import tempfile

        state = tempfile.mkdtemp(prefix="vc-shot-state-")
        os.environ["XDG_DATA_HOME"] = os.path.join(state, "data")
        os.environ["XDG_CONFIG_HOME"] = os.path.join(state, "config")
    args = [a for a in sys.argv[1:] if a != "--live"]
    target = Path(args[0]) if args else DEFAULT_PATH
    render_live(target) if "--live" in sys.argv[1:] else render(target)
