"""Desktop client: ``python -m ui`` (or ``voicechat-ui``).

Shows the main window and connects to ``--server`` as ``--name``, or opens the
connect dialog (server, name, favourites) over it; the client's processes run
under a Supervisor owned by this process. With
``--attach PUB SUB`` it shows a window for a client already running elsewhere
(e.g. ``python -m pipeline``) instead, talking to it over its bus.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from PyQt6.QtCore import QSettings, QTimer
from PyQt6.QtWidgets import QApplication

from pipeline.ipc import events as ev
from pipeline.ipc.bus import BusAddress
from ui.busbridge import BusBridge
from ui.connect import validate
from ui.connection import plain_media_error
from ui.main_thread_gc import MainThreadCollector
from ui.window import BITRATE_KEY, INPUT_KEY, OUTPUT_KEY, MainWindow, remembered_talk

if TYPE_CHECKING:
    from pipeline.media.sources import MediaSpec


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="voicechat-ui", description="Voice chat desktop client")
    ap.add_argument(
        "--server",
        metavar="HOST:PORT[,HOST:PORT...]",
        help="skip the dialog's server field; several servers are tried in turn",
    )
    ap.add_argument("--name", help="with --server: connect at once, without the dialog")
    ap.add_argument("--channel", default="", help="join this channel after connecting")
    ap.add_argument("--password", default="", help="the server's password, if it has one")
    ap.add_argument("--input", help="device[:NAME], FILE.wav, tone[:HZ], speech[:SEED], silence")
    ap.add_argument("--output", help="device[:NAME], FILE.wav, null")
    ap.add_argument(
        "--attach",
        nargs=2,
        metavar=("PUB", "SUB"),
        help="show a running client's bus (its broker's ipc:// endpoints) instead of starting one",
    )
    ap.add_argument("--log-level", default="WARNING")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    app = QApplication(sys.argv[:1])
    app.setOrganizationName("voicechat")
    app.setApplicationName("voicechat-ui")
    # Qt's loop would swallow Ctrl-C; let Python see it every 200 ms and quit cleanly.
    # exit(), not quit(): quit() asks the windows first, and one blocked by an open dialog
    # would keep the app (and its client) running.
    signal.signal(signal.SIGINT, lambda *_: app.exit(0))
    signal.signal(signal.SIGTERM, lambda *_: app.exit(0))
    tick = QTimer()
    tick.timeout.connect(lambda: None)
    tick.start(200)
    # Garbage is collected on this thread only: the Supervisor's bus broker is a second one.
    collector = MainThreadCollector(app)
    collector.start()

    bridge = BusBridge()
    if args.attach:
        window = MainWindow(bridge)
        bridge.attach(BusAddress(publish=args.attach[0], subscribe=args.attach[1]))
        window.show()
        try:
            return app.exec()
        finally:
            window.shutdown()

    # Imported here: the client's stages (and the core they need) load only when we own one.
    from pipeline.client.config import PRIORITY_DEFAULT, TALK_DEFAULT
    from pipeline.media.sound_device import usable_devices
    from ui.host import ClientConfig, ClientHost, MediaError, parse_media

    notices: list[str] = []
    settings = QSettings()
    try:
        source = _media(args.input, "input", "silence", notices, parse_media, settings)
        sink = _media(args.output, "output", "null", notices, parse_media, settings)
    except MediaError as exc:
        print(f"voicechat-ui: {exc}", file=sys.stderr)
        return 2
    bitrate = settings.value(BITRATE_KEY, 48000)
    # Voice activation unless another mode was chosen, as a user expects (Mumble's default).
    talk, threshold = remembered_talk(settings, TALK_DEFAULT)
    # No server yet: the window connects once one is chosen (here or in its Server menu).
    cfg = ClientConfig(
        host="",
        port=0,
        name="",
        channel=args.channel,
        source=source,
        sink=sink,
        bitrate=int(bitrate) if str(bitrate).isdigit() else 48000,
        talk=talk,
        vad_threshold=threshold,
        input_processing=True,
        priority=PRIORITY_DEFAULT,
    )
    host = ClientHost(cfg)
    window = MainWindow(bridge, host, usable_devices())
    app.aboutToQuit.connect(window.shutdown)
    for text in notices:
        window.chat.add(ev.Notice(plain_media_error(text)))
    window.show()
    # From inside the loop: a signal that comes once we have printed anything is handled.
    QTimer.singleShot(0, lambda: first_connect(window, args))
    try:
        return app.exec()
    finally:
        window.shutdown()


def first_connect(window: MainWindow, args: argparse.Namespace) -> None:
    """Connect at once with a valid ``--server`` and ``--name``; otherwise open the connect
    dialog over the window, filled in from them, with what is wrong shown in it (and on
    stderr, for whoever started us from a terminal)."""
    error = ""
    if args.server and args.name:
        try:
            info = validate(args.server, args.name, args.password)
        except ValueError as exc:
            error = str(exc)
            print(f"voicechat-ui: {exc}", file=sys.stderr)
        else:
            window.connect_to(info, channel=args.channel)
            return
    dialog = window.servers.open_dialog(error=error, server=args.server or "", name=args.name or "")
    if args.password:
        dialog.password.setText(args.password)


def _media(
    text: str | None,
    kind: str,
    fallback: str,
    notices: list[str],
    parse: Callable[[str, str], MediaSpec],
    settings: QSettings | None = None,
) -> MediaSpec:
    """The chosen source/sink; without a choice, the one chosen last time in the window,
    else the sound device, or ``fallback`` if that fails."""
    if text:
        return parse(text, kind)
    remembered = settings.value(INPUT_KEY if kind == "input" else OUTPUT_KEY) if settings else None
    if remembered:
        try:
            return parse(str(remembered), kind)
        except ValueError as exc:
            notices.append(f"the {kind} chosen last time cannot be used ({exc})")
    try:
        return parse("device", kind)
    except ValueError as exc:
        notices.append(f"no {kind} device ({exc}); using {fallback} until you pick one")
        return parse(fallback, kind)


if __name__ == "__main__":
    sys.exit(main())
