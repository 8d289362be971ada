"""The push-to-talk key held while another program has the focus: a global hotkey.

Where a platform allows it:

* **X11** (Qt's ``xcb`` platform): the key is grabbed on the root window through
  Xlib (``XGrabKey``, any modifiers), on a display connection of our own whose socket
  the Qt event loop watches (a QSocketNotifier: no thread, no polling). While it is
  grabbed the X server gives that key to us only, in every program: it is taken from
  them, as with any global shortcut. Detectable auto-repeat is asked for, so a held
  key is one press and one release.
* **Wayland**: not possible. A Wayland compositor gives keys to the focused window
  alone and has no grab for other clients; under XWayland an X grab sees only keys
  typed into other X (XWayland) windows. The key works while our window has focus.
* **Windows and macOS**: not built (``RegisterHotKey``, or a ``CGEventTap`` with the
  accessibility permission, would do it); the key works while our window has focus.

Widget-free: ``changed`` says the key went down (True) or up (False).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

from PyQt6.QtCore import QObject, QSocketNotifier, Qt, pyqtSignal
from PyQt6.QtGui import QGuiApplication

KEY_PRESS, KEY_RELEASE = 2, 3  # X event types
ANY_MODIFIER = 1 << 15
GRAB_MODE_ASYNC = 1
BAD_ACCESS = 10  # X error: the key is grabbed by another client already

# Qt keys that are not a Latin-1 character, by X keysym (X11/keysymdef.h).
_KEYSYMS: dict[int, int] = {
    Qt.Key.Key_Pause.value: 0xFF13,
    Qt.Key.Key_ScrollLock.value: 0xFF14,
    Qt.Key.Key_Print.value: 0xFF61,
    Qt.Key.Key_Insert.value: 0xFF63,
    Qt.Key.Key_Delete.value: 0xFFFF,
    Qt.Key.Key_Home.value: 0xFF50,
    Qt.Key.Key_End.value: 0xFF57,
    Qt.Key.Key_PageUp.value: 0xFF55,
    Qt.Key.Key_PageDown.value: 0xFF56,
    Qt.Key.Key_Menu.value: 0xFF67,
}

FOCUS_ONLY = "push-to-talk works while this window has the focus"
WAYLAND = f"Wayland gives keys only to the window in front, so {FOCUS_ONLY}"
NOT_BUILT = f"a global key is not built for this platform: {FOCUS_ONLY}"
NO_DISPLAY = f"no window system here: {FOCUS_ONLY}"


def unavailable(platform: str) -> str:
    """Why Qt's ``platform`` has no global hotkey here ("" where it has one)."""
    if platform == "xcb":
        return ""
    if platform.startswith("wayland"):
        return WAYLAND
    if platform in ("offscreen", "minimal", "vnc", "eglfs"):
        return NO_DISPLAY
    return NOT_BUILT


def keysym_of(key: int) -> int:
    """The X keysym of a Qt key (0: none we know)."""
    if Qt.Key.Key_F1.value <= key <= Qt.Key.Key_F35.value:
        return 0xFFBE + key - Qt.Key.Key_F1.value
    if 0x20 <= key <= 0x7E:
        return ord(chr(key).lower())  # Latin-1 keysyms are the lower-case character
    return _KEYSYMS.get(key, 0)


class _KeyEvent(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("serial", ctypes.c_ulong),
        ("send_event", ctypes.c_int),
        ("display", ctypes.c_void_p),
        ("window", ctypes.c_ulong),
        ("root", ctypes.c_ulong),
        ("subwindow", ctypes.c_ulong),
        ("time", ctypes.c_ulong),
        ("x", ctypes.c_int),
        ("y", ctypes.c_int),
        ("x_root", ctypes.c_int),
        ("y_root", ctypes.c_int),
        ("state", ctypes.c_uint),
        ("keycode", ctypes.c_uint),
        ("same_screen", ctypes.c_int),
    ]


class _Event(ctypes.Union):
    _fields_ = [("type", ctypes.c_int), ("key", _KeyEvent), ("pad", ctypes.c_long * 24)]


class _ErrorEvent(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("display", ctypes.c_void_p),
        ("resourceid", ctypes.c_ulong),
        ("serial", ctypes.c_ulong),
        ("error_code", ctypes.c_ubyte),
        ("request_code", ctypes.c_ubyte),
        ("minor_code", ctypes.c_ubyte),
    ]


_ERROR_HANDLER = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(_ErrorEvent))


def _xlib() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("X11")
    if name is None:
        return None
    lib = ctypes.CDLL(name)
    lib.XOpenDisplay.restype = ctypes.c_void_p
    lib.XOpenDisplay.argtypes = [ctypes.c_char_p]
    lib.XDefaultRootWindow.restype = ctypes.c_ulong
    lib.XDefaultRootWindow.argtypes = [ctypes.c_void_p]
    lib.XKeysymToKeycode.restype = ctypes.c_ubyte
    lib.XKeysymToKeycode.argtypes = [ctypes.c_void_p, ctypes.c_ulong]
    lib.XGrabKey.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint, ctypes.c_ulong]
    lib.XGrabKey.argtypes += [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.XUngrabKey.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint, ctypes.c_ulong]
    lib.XSync.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.XPending.argtypes = [ctypes.c_void_p]
    lib.XNextEvent.argtypes = [ctypes.c_void_p, ctypes.POINTER(_Event)]
    lib.XConnectionNumber.argtypes = [ctypes.c_void_p]
    lib.XCloseDisplay.argtypes = [ctypes.c_void_p]
    lib.XSetErrorHandler.restype = ctypes.c_void_p
    lib.XSetErrorHandler.argtypes = [ctypes.c_void_p]
    lib.XkbSetDetectableAutoRepeat.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
    return lib


class GlobalHotkey(QObject):
    """One key grabbed on an X display for the whole desktop (module docstring)."""

    changed = pyqtSignal(bool)  # the key went down (True) or up (False)

    def __init__(self, display: str | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._display_name = display
        self._x: ctypes.CDLL | None = None
        self._dpy: int | None = None
        self._notifier: QSocketNotifier | None = None
        self._keycode = 0
        self._root = 0
        self.down = False

    @property
    def grabbed(self) -> bool:
        return self._keycode != 0

    def grab(self, key: int) -> str:
        """Take ``key`` (a Qt.Key) from every program; "" or why it could not be. Without
        a ``display`` given, on the display of Qt's platform, where that is X11."""
        self.ungrab()
        if self._display_name is None and (why := unavailable(QGuiApplication.platformName())):
            return why  # no display named: Qt's own, if that is X11
        name = self._display_name or os.environ.get("DISPLAY", "")
        if not name:
            return NO_DISPLAY
        if self._dpy is None and (error := self._open(name)):
            return error
        x, dpy = self._x, self._dpy
        assert x is not None and dpy is not None
        keysym = keysym_of(key)
        keycode = x.XKeysymToKeycode(dpy, keysym) if keysym else 0
        if not keycode:
            return "that key cannot be a global key here: pick another (F1-F12 work everywhere)"
        errors: list[int] = []

        def record(_dpy: int, event: ctypes._Pointer[_ErrorEvent]) -> int:
            errors.append(event.contents.error_code)
            return 0

        handler = _ERROR_HANDLER(record)
        previous = x.XSetErrorHandler(handler)
        try:
            x.XGrabKey(dpy, keycode, ANY_MODIFIER, self._root, 0, GRAB_MODE_ASYNC, GRAB_MODE_ASYNC)
            x.XSync(dpy, 0)
        finally:
            x.XSetErrorHandler(previous)
        if errors:
            return (
                "another program already uses that key for itself: pick another"
                if BAD_ACCESS in errors
                else "the window system refused that key"
            )
        self._keycode = keycode
        self._drain()
        return ""

    def ungrab(self) -> None:
        """Give the key back to the other programs (a held key counts as let go)."""
        if self._keycode and self._x is not None and self._dpy is not None:
            self._x.XUngrabKey(self._dpy, self._keycode, ANY_MODIFIER, self._root)
            self._x.XSync(self._dpy, 0)
        self._keycode = 0
        if self.down:
            self.down = False
            self.changed.emit(False)

    def close(self) -> None:
        """Ungrab and close the display connection (idempotent)."""
        self.ungrab()
        if self._notifier is not None:
            self._notifier.setEnabled(False)
            self._notifier.deleteLater()
            self._notifier = None
        if self._x is not None and self._dpy is not None:
            self._x.XCloseDisplay(self._dpy)
        self._dpy = None

    def _open(self, name: str) -> str:
        x = self._x or _xlib()
        if x is None:
            return (
                "Xlib is not installed (libX11): push-to-talk works while this window has the focus"
            )
        dpy = x.XOpenDisplay(name.encode())
        if not dpy:
            return f"cannot reach the X display {name}"
        self._x, self._dpy = x, dpy
        self._root = x.XDefaultRootWindow(dpy)
        x.XkbSetDetectableAutoRepeat(dpy, 1, None)  # a held key: no release-press pairs
        self._notifier = QSocketNotifier(x.XConnectionNumber(dpy), QSocketNotifier.Type.Read)
        self._notifier.activated.connect(lambda *_: self._drain())
        return ""

    def _drain(self) -> None:
        """Every event Xlib has (read from the socket or queued by an earlier call)."""
        x, dpy = self._x, self._dpy
        if x is None or dpy is None:
            return
        event = _Event()
        while x.XPending(dpy):
            x.XNextEvent(dpy, ctypes.byref(event))
            if event.type not in (KEY_PRESS, KEY_RELEASE) or event.key.keycode != self._keycode:
                continue
            down = event.type == KEY_PRESS
            if down != self.down:
                self.down = down
                self.changed.emit(down)
