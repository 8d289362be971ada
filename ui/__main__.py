"""Desktop client: ``python -m ui`` (or ``voicechat-ui``).

Asks for the server and a name (remembered), starts the client's processes
under a Supervisor owned by this process, and shows the main window. With
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
from PyQt6.QtWidgets import QApplication, QDialog

from pipeline.ipc import events as ev
from pipeline.ipc.bus import BusAddress
from ui.busbridge import BusBridge
from ui.connect import ConnectDialog, ConnectInfo, validate
from ui.window import MainWindow

if TYPE_CHECKING:
    from pipeline.media.sources import MediaSpec


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="voicechat-ui", description="Voice chat desktop client")
    ap.add_argument("--server", metavar="HOST:PORT", help="skip the dialog's server field")
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
    signal.signal(signal.SIGINT, lambda *_: app.quit())
    signal.signal(signal.SIGTERM, lambda *_: app.quit())
    tick = QTimer()
    tick.timeout.connect(lambda: None)
    tick.start(200)

    bridge = BusBridge()
    if args.attach:
        window = MainWindow(bridge)
        bridge.attach(BusAddress(publish=args.attach[0], subscribe=args.attach[1]))
        window.show()
        try:
            return app.exec()
        finally:
            window.shutdown()

    info = _ask(args, QSettings())
    if info is None:
        return 1
    # Imported here: the client's stages (and the core they need) load only when we own one.
    from pipeline.client.config import TALK_DEFAULT
    from pipeline.media.sound_device import list_devices
    from ui.host import ClientConfig, ClientHost, MediaError, parse_media

    notices: list[str] = []
    try:
        source = _media(args.input, "input", "silence", notices, parse_media)
        sink = _media(args.output, "output", "null", notices, parse_media)
    except MediaError as exc:
        print(f"voicechat-ui: {exc}", file=sys.stderr)
        return 2
    cfg = ClientConfig(
        host=info.host,
        port=info.port,
        name=info.name,
        channel=args.channel,
        source=source,
        sink=sink,
        password=info.password,
        talk=TALK_DEFAULT,  # voice activation, as a user expects (Mumble's default)
        input_processing=True,
    )
    host = ClientHost(cfg)
    window = MainWindow(bridge, host, list_devices())
    app.aboutToQuit.connect(window.shutdown)
    for text in notices:
        window.chat.add(ev.Notice(text))
    window.show()
    try:
        host.start()
        return app.exec()
    finally:
        window.shutdown()


def _ask(args: argparse.Namespace, settings: QSettings) -> ConnectInfo | None:
    if args.server and args.name:
        try:
            return validate(args.server, args.name, args.password)
        except ValueError as exc:
            print(f"voicechat-ui: {exc}", file=sys.stderr)
            return None
    dialog = ConnectDialog(settings)
    if args.server:
        dialog.server.setText(args.server)
    if args.name:
        dialog.name.setText(args.name)
    if args.password:
        dialog.password.setText(args.password)
    if dialog.exec() != QDialog.DialogCode.Accepted:
        return None
    return dialog.info


def _media(
    text: str | None,
    kind: str,
    fallback: str,
    notices: list[str],
    parse: Callable[[str, str], MediaSpec],
) -> MediaSpec:
    """The chosen source/sink; without a choice, the sound device, or ``fallback`` if it fails."""
    if text:
        return parse(text, kind)
    try:
        return parse("device", kind)
    except ValueError as exc:
        notices.append(f"no {kind} device ({exc}); using {fallback} until you pick one")
        return parse(fallback, kind)


if __name__ == "__main__":
    sys.exit(main())
