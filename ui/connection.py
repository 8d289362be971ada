"""The connection as the window shows it: a state machine apart from any widget.

The control process only knows "connecting" and "reconnecting" (it tries every
2 s, for ever). A desktop user needs more: a client that never got through is
not "reconnecting" (it was never connected; the address is likely wrong), and
after a few failed first attempts it is better to stop and say why, with a
Retry, than to count attempts for ever. So the window folds the bus's
ConnectionState events (and what the user and the ClientHost did) into one of
these phases, and renders only the phase. The reasons are put in words a
desktop user understands (not socket errno text or command-line flags).
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.ipc import events as ev

NOT_CONNECTED = "not_connected"  # no client: before the first connect, or after Disconnect
CONNECTING = "connecting"  # first attempts, never connected yet
CONNECTED = "connected"
RECONNECTING = "reconnecting"  # was connected, lost the link, trying again
UNREACHABLE = "unreachable"  # never connected and stopped trying: says why, offers Retry
FAILED = "failed"  # cannot go on (wrong password, changed certificate, a stage kept dying)

MAX_FIRST_ATTEMPTS = 3  # failed first connection attempts before the window stops trying
STOPPED_PHASES = (NOT_CONNECTED, UNREACHABLE, FAILED)  # no client runs: Retry is offered


@dataclass
class ConnectionModel:
    """What the window shows about the connection. Events in, a phase and words out."""

    max_first_attempts: int = MAX_FIRST_ATTEMPTS
    phase: str = NOT_CONNECTED
    server: str = ""
    reason: str = ""  # why not connected, in a desktop user's words
    attempt: int = 0
    name: str = ""
    channel: str = ""
    ever_connected: bool = False  # since the last start(): tells reconnecting from connecting
    servers: str = ""  # what the client was started towards: one server or several

    def start(self, server: str) -> None:
        """The client is being started towards ``server`` (connect, retry, new server):
        one HOST:PORT or several, comma-separated; the events then name the one in use."""
        self.phase, self.server, self.reason, self.attempt = CONNECTING, server, "", 0
        self.servers = server
        self.ever_connected = False

    def apply(self, state: ev.ConnectionState) -> bool:
        """Fold one state event in; True when the window should stop the client because
        the first attempts failed (the phase is then UNREACHABLE)."""
        if self.phase in STOPPED_PHASES:
            return False  # a late event from a client already stopped
        self.server = state.server or self.server
        if state.state == ev.CONNECTED:
            self.phase, self.reason, self.attempt = CONNECTED, "", 0
            self.ever_connected = True
            self.name, self.channel = state.name, state.channel
        elif state.state == ev.RECONNECTING:
            self.attempt = state.attempt
            self.reason = plain_reason(state.reason)
            if self.ever_connected:
                self.phase = RECONNECTING
            elif state.attempt >= self.max_first_attempts * max(1, state.relays):
                # Every relay of the list had its first attempts: stop, say why.
                self.server = self.servers or self.server
                self.phase = UNREACHABLE
                return True
            else:
                self.phase = CONNECTING
        elif state.state == ev.FAILED:
            self.phase, self.reason = FAILED, plain_reason(state.reason)
        return False

    def client_failed(self, reason: str) -> None:
        """The client stopped for good (a stage kept dying, or it did not start)."""
        self.phase, self.reason = FAILED, plain_reason(reason)

    def disconnected(self) -> None:
        """The user chose Disconnect."""
        self.phase, self.reason = NOT_CONNECTED, ""

    @property
    def online(self) -> bool:
        return self.phase == CONNECTED

    @property
    def can_retry(self) -> bool:
        return self.phase in STOPPED_PHASES and bool(self.server)

    def title(self) -> str:
        """The banner's first line: what happened, without the why."""
        to = f" to {self.server}" if self.server else ""
        if self.phase == UNREACHABLE:
            return f"Could not connect{to}"
        if self.phase == FAILED:
            return "Stopped"
        return f"Disconnected from {self.server}" if self.server else "Not connected"

    def headline(self) -> str:
        """The status bar's line."""
        to = f" to {self.server}" if self.server else ""
        if self.phase == CONNECTED:
            where = f" in {self.channel}" if self.channel else ""
            return f"Connected{to} as {self.name}{where}"
        if self.phase == CONNECTING:
            tried = f" (attempt {self.attempt + 1})" if self.attempt else ""
            why = f": {self.reason}" if self.reason else ""
            return f"Connecting{to}…{tried}{why}"
        if self.phase == RECONNECTING:
            why = f": {self.reason}" if self.reason else ""
            return f"Connection lost; reconnecting{to} (attempt {self.attempt}){why}"
        if self.phase == UNREACHABLE:
            return f"Could not connect{to}: {self.reason}"
        if self.phase == FAILED:
            return f"Stopped: {self.reason or 'unknown reason'}"
        return f"Disconnected from {self.server}" if self.server else "Not connected"


# --- words ------------------------------------------------------------------------------

# (what the control process or the OS says, what a desktop user is told)
_REASONS = (
    (
        "Connection refused",
        "nothing answers there: is the server running, and is the port right?",
    ),
    ("Name or service not known", "there is no server named {host}: check the spelling"),
    ("nodename nor servname", "there is no server named {host}: check the spelling"),
    ("No address associated", "there is no server named {host}: check the spelling"),
    (
        "Temporary failure in name resolution",
        "the name {host} cannot be looked up: are you online?",
    ),
    ("timed out", "no answer: check the address (or a firewall is in the way)"),
    ("Network is unreachable", "there is no network route to {host}: are you online?"),
    ("No route to host", "there is no network route to {host}: are you online?"),
    ("TLS handshake", "something answered, but not a voice chat server this app can use"),
    ("bad_password", "the server's password is wrong (Server → Connect… to enter it)"),
    ("too_many_attempts", "too many wrong passwords: the server refuses this computer for a while"),
    ("bad_version", "the server runs another version of the voice chat: one of you must update"),
)


def plain_reason(reason: str) -> str:
    """``reason`` from the client in words a desktop user understands."""
    server = host = ""
    if reason.startswith(("cannot reach ", "TLS handshake with ")):
        rest = reason.removeprefix("cannot reach ").removeprefix("TLS handshake with ")
        server = rest.split(" ", 1)[0].rstrip(":")
        host = server.rpartition(":")[0] or server
    for needle, words in _REASONS:
        if needle in reason:
            return words.format(server=server or "the server", host=host or "given")
    return reason.replace("the relay", "the server").replace("relay: ", "the server says: ")


def plain_media_error(text: str) -> str:
    """A sound source or sink error without the command line's flag help."""
    for marker in ("; use --input", "; use --output", "; use one of"):
        text = text.split(marker, 1)[0]
    return text + "; pick another one in the Audio settings"
