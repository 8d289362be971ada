"""The client's side of the TCP control session, sans-I/O.

The adapter (pipeline/stages/control.py) owns the socket and the clock; it tells this
object what happened (connected, bytes received, dropped, time passed) and
carries out what it asks for: bytes to send, bus events to publish, connect
again at a given time, close the connection. Times are monotonic seconds.

Loss feedback (SPEC.md): the adapter hands in what the decode stage measures of
each speaker (:meth:`ControlSession.heard`); every RECEPTION_INTERVAL the session
sends it to the relay as ``reception``, and turns each ``receiver_report`` about
our own voice into a :class:`~pipeline.ipc.events.ListenerReport` for the encoder.

The TCP tunnel (SPEC.md): the network stage says which path voice takes
(:meth:`ControlSession.voice_path`); while it is the tunnel, the relay is asked with
``tunnel`` to send what we hear through this connection (again after every new
connection), and ``voice`` messages carry datagrams both ways
(:meth:`ControlSession.voice_frame`, :meth:`ControlSession.take_voice`).

Several relays (SPEC.md): the session holds a :class:`~pipeline.core.relays.RelayList`
(the configured relays and those a welcome named); ``host`` and ``port`` are always the
relay to connect to next, or the one connected. A lost connection is retried on the same
relay first, then on the others in turn, always with ``reconnect`` and the token first,
so a relay of the same cluster resumes the session. The fingerprints a welcome vouches
for wait in :meth:`ControlSession.take_vouched` for the adapter to pin.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import count

from pipeline.core.presence_news import PresenceNews, granted_name
from pipeline.core.relays import RECONNECT_DELAY as RECONNECT_DELAY  # between rounds (SPEC)
from pipeline.core.relays import Relay, RelayList, parse_relays, server_text
from pipeline.ipc import events as ev
from relay.protocol.errors import FramingError, ProtocolError
from relay.protocol.messages import (
    MAX_BURST,
    MAX_RECEPTION,
    MAX_TEXT,
    MAX_TUNNELLED,
    PROTOCOL,
    Auth,
    Bye,
    ChannelInfo,
    ChannelList,
    Chat,
    Error,
    Join,
    MediaKey,
    Message,
    MessageDecoder,
    Ping,
    Pong,
    ReceiverReport,
    Reception,
    Reconnect,
    SelfState,
    SpeakerReception,
    Tunnel,
    UserInfo,
    UserJoined,
    UserLeft,
    UserList,
    UserState,
    Voice,
    Welcome,
    encode_message,
)

PING_INTERVAL = 1.0  # seconds between TCP pings
DEAD_AFTER = 6.0  # seconds without a byte from the relay before the link counts as dead
RECEPTION_INTERVAL = 2.0  # seconds between two reception reports (SPEC)
RECEPTION_STALE = 3.0  # decode figures older than this are not reported (the stage died)
# Errors after which trying again cannot help: the client stops (state failed) and says why.
FATAL_ERRORS = ("bad_password", "bad_version", "too_many_attempts")
NO_ROOM_ERRORS = ("server_full", "too_many_sessions")  # another relay may have room


@dataclass(slots=True)
class _User:
    name: str
    channel: str
    muted: bool = False
    deafened: bool = False
    server_muted: bool = False  # by the relay's operator: none of their voice is forwarded

    @classmethod
    def of(cls, u: UserInfo) -> _User:
        return cls(u.name, u.channel, u.muted, u.deafened, u.server_muted)


@dataclass
class ControlSession:
    """Auth, reconnect with the session token, presence, chat and ping for one client."""

    name: str
    host: str  # the relay connected to, or to be tried next
    port: int
    wanted_channel: str = ""  # join this channel after the first welcome
    loss_feedback: bool = True  # report what we receive of each speaker to the relay
    password: str = ""  # the server's password, if it has one (sent over TLS only)
    state: str = ev.CONNECTING
    attempt: int = 0
    reason: str = ""
    token: int = 0
    user_id: int = 0
    udp_port: int = 0
    udp_host: str = ""  # what the relay advertises for UDP (its --public-host), if anything
    # The address the control connection reached: a name with A and AAAA records is
    # voice's too at that address, not at the name's first (the relay may bind one family).
    peer_host: str = ""
    channel: str = ""
    channels: list[str] = field(default_factory=list)
    infos: dict[str, ChannelInfo] = field(default_factory=dict)  # described or limited ones
    # Protocol 2's voice keys, from the welcome and media_key messages (never logged).
    udp_key: bytes = field(default=b"", repr=False)
    media_key_id: int = 0
    media_key: bytes = field(default=b"", repr=False)
    tcp_rtt: float | None = None
    quitting: bool = False
    # The user's own mute and deafen, sent to the relay for everyone's tree (SPEC.md).
    muted: bool = False
    deafened: bool = False
    news: PresenceNews = field(default_factory=PresenceNews)
    self_state_refused: bool = False  # the relay predates self_state: not sent again
    _granted: str = ""  # the name the relay gave us, once announced if it is not ours
    _asked: list[str] = field(default_factory=list)  # channels we sent a join for
    _welcoming: bool = False  # a welcome's user list is coming in pages
    _users: dict[int, _User] = field(default_factory=dict)
    _decoder: MessageDecoder = field(default_factory=MessageDecoder)
    _out: list[bytes] = field(default_factory=list)
    _events: list[ev.Event] = field(default_factory=list)
    _connect_at: float | None = 0.0  # connect now
    _last_rx: float = 0.0
    _next_ping: float = 0.0
    _pings: dict[int, float] = field(default_factory=dict)
    _nonces: count[int] = field(default_factory=lambda: count(1))
    _want_close: bool = False
    # A user list arriving in pages (a long welcome, or a snapshot): what came so far.
    _paging: dict[int, _User] | None = None
    _reception: list[SpeakerReception] = field(default_factory=list)  # the latest figures
    _reception_at: float = float("-inf")  # when the decode stage measured them
    _next_reception: float = 0.0
    _reception_refused: bool = False  # the relay does not know reception (older than it)
    tunnel_wanted: bool = False  # the network stage sends voice through us (UDP is dead)
    # The relay carries no voice over TCP: so until a new session (a relay that forgot
    # us restarted, perhaps upgraded). Not reset by a resume: an older relay closes a
    # connection after 16 frames it cannot parse, and voice sent before its refusal
    # came may be as many; asking again on each resumed connection would go round.
    tunnel_refused: bool = False
    _tunnel_told: bool = False  # what this connection's relay was last asked
    _voice: list[bytes] = field(default_factory=list)  # tunnelled voice for the network stage
    # More relays to try after (host, port), in order (SPEC.md, "Several relays").
    fallbacks: list[tuple[str, int]] = field(default_factory=list)
    relays: RelayList = field(init=False)
    _vouched: list[Relay] = field(default_factory=list)  # for the adapter to pin

    def __post_init__(self) -> None:
        first = Relay(self.host, self.port)
        rest = [Relay(h, p) for h, p in self.fallbacks if (h, p) != (self.host, self.port)]
        self.relays = RelayList([first, *rest])

    # --- what the adapter tells us ---------------------------------------------------

    def connect_due(self, now: float) -> bool:
        """Whether the adapter should open a TCP connection now."""
        return self._connect_at is not None and now >= self._connect_at and not self.quitting

    def connected(self, now: float, peer: str = "") -> None:
        """The TCP connection is open (to the address ``peer``, if known): authenticate,
        resuming the session if there is one."""
        self._connect_at = None
        self.peer_host = peer
        self._decoder = MessageDecoder()
        self._last_rx = now
        self._next_ping = now + PING_INTERVAL
        self._pings.clear()
        self._paging = None
        self._next_reception = now + RECEPTION_INTERVAL
        self._reception_refused = False
        self._tunnel_told = False  # a new connection starts on UDP
        self._send(Reconnect(self.token, PROTOCOL) if self.token else self._auth())

    def _auth(self) -> Auth:
        return Auth(self.name, PROTOCOL, self.password)

    def notice(self, text: str) -> None:
        """A line for the user from the adapter (e.g. a certificate pinned on first use)."""
        self._notice(text)

    def refused(self, reason: str) -> None:
        """The connection must not be used (the relay's certificate changed): stop, say why."""
        self._fail(reason)

    def connect_failed(self, now: float, reason: str) -> None:
        self._schedule_retry(now, reason)

    def received(self, data: bytes, now: float) -> None:
        """Bytes from the relay: decode frames and act on each message."""
        self._last_rx = now
        try:
            items = self._decoder.feed(data)
        except FramingError as exc:
            self._drop(now, f"relay sent a bad frame: {exc}")
            return
        for item in items:
            if isinstance(item, ProtocolError):
                self._notice(f"ignored a bad message from the relay: {item}")
            else:
                self._handle(item, now)

    def disconnected(self, now: float, reason: str) -> None:
        """The TCP connection is gone (EOF, reset, timeout)."""
        if self.quitting:
            self._set_state(ev.STOPPED, "quit")
            return
        self._schedule_retry(now, reason)

    def tick(self, now: float) -> None:
        """Time passed: send pings, notice a dead link (before or after the welcome)."""
        for line in self.news.due(now):
            self._notice(line)
        if self._awaiting_welcome():
            if now - self._last_rx > DEAD_AFTER:
                self._drop(now, f"no welcome from the relay within {DEAD_AFTER:.0f} s")
            return
        if self.state != ev.CONNECTED:
            return
        if now - self._last_rx > DEAD_AFTER:
            self._drop(now, f"no answer from the relay for {DEAD_AFTER:.0f} s")
            return
        if now >= self._next_ping:
            nonce = next(self._nonces)
            self._pings[nonce] = now
            if len(self._pings) > 16:  # unanswered pings: keep the newest only
                self._pings.pop(min(self._pings))
            self._send(Ping(nonce=nonce, t=now))
            self._next_ping = now + PING_INTERVAL
        if self._reports_reception() and now >= self._next_reception:
            self._next_reception = now + RECEPTION_INTERVAL
            if self._reception and now - self._reception_at <= RECEPTION_STALE:
                self._send(Reception(self._reception))

    def heard(self, stats: ev.DecodeStats, now: float) -> None:
        """What the decode stage measured of each speaker, at ``now``: the next reception."""
        self._reception = [
            SpeakerReception(
                s.user_id,
                min(100.0, max(0.0, s.loss_percent)),
                min(100.0, max(0.0, s.late_percent)),
                min(MAX_BURST, max(0.0, s.burst_mean)),
            )
            for s in stats.speakers[:MAX_RECEPTION]
            # 0 is never a session: it is the settings' microphone test, played here
            if s.user_id not in (0, self.user_id)
        ]
        self._reception_at = now

    def _reports_reception(self) -> bool:
        return self.loss_feedback and not self._reception_refused and self.state == ev.CONNECTED

    def next_deadline(self, now: float) -> float:
        """When tick() or a connection attempt is next due (monotonic seconds)."""
        news = self.news.deadline
        if news is not None:
            return min(news, self._next_deadline(now))
        return self._next_deadline(now)

    def _next_deadline(self, now: float) -> float:
        if self._connect_at is not None:
            return self._connect_at
        if self.state == ev.CONNECTED:
            due = min(self._next_ping, self._last_rx + DEAD_AFTER)
            return min(due, self._next_reception) if self._reports_reception() else due
        if self._awaiting_welcome():
            return self._last_rx + DEAD_AFTER
        return now + PING_INTERVAL

    def _awaiting_welcome(self) -> bool:
        """A connection is open (no retry scheduled) but the relay has not welcomed us yet."""
        return (
            self._connect_at is None
            and self.state not in (ev.CONNECTED, ev.STOPPED, ev.FAILED)
            and not self.quitting
        )

    # --- the TCP tunnel ---------------------------------------------------------------

    def voice_path(self, tcp: bool) -> None:
        """The network stage's path: ``tcp`` while UDP is dead. Tells the relay on a change."""
        self.tunnel_wanted = tcp
        self._tell_tunnel()

    def _tell_tunnel(self) -> None:
        told, wanted = self._tunnel_told, self.tunnel_wanted
        if self.state == ev.CONNECTED and not self.tunnel_refused and told != wanted:
            self._tunnel_told = wanted
            self._send(Tunnel(wanted))

    def voice_frame(self, datagram: bytes) -> bytes | None:
        """The ``voice`` frame carrying ``datagram`` to the relay, or None when it cannot go
        (not connected, a datagram no frame holds, or a relay without the tunnel)."""
        if self.state != ev.CONNECTED or self.tunnel_refused:
            return None
        if not 0 < len(datagram) <= MAX_TUNNELLED:  # encoding checks no field: we do
            return None
        return encode_message(Voice(datagram))

    def take_voice(self) -> list[bytes]:
        """Voice datagrams the relay sent through this connection, for the network stage."""
        out, self._voice = self._voice, []
        return out

    # --- commands --------------------------------------------------------------------

    def join(self, channel: str) -> None:
        """Move to ``channel``; while disconnected, once the next welcome arrives."""
        if self.state == ev.CONNECTED and channel != self.channel:
            self._ask_join(channel)
        self.wanted_channel = channel

    def set_self(self, muted: bool | None = None, deafened: bool | None = None) -> None:
        """The user muted or deafened themselves: the relay shows it to everyone."""
        before = (self.muted, self.deafened)
        if muted is not None:
            self.muted = muted
        if deafened is not None:
            self.deafened = deafened
        if (
            (self.muted, self.deafened) != before
            and self.state == ev.CONNECTED
            and not self.self_state_refused
        ):
            self._send(SelfState(self.muted, self.deafened))

    def chat(self, text: str) -> None:
        if self.state != ev.CONNECTED:
            self._notice("not connected: message not sent")
            return
        try:
            self._send(Chat(text=text[:MAX_TEXT]))
        except ProtocolError as exc:
            self._notice(f"message not sent: {exc}")

    def quit(self) -> None:
        self.quitting = True
        if self.state == ev.CONNECTED:
            self._send(Bye())
        self._want_close = True

    # --- what the adapter carries out ------------------------------------------------------

    def take_outgoing(self) -> bytes:
        data = b"".join(self._out)
        self._out.clear()
        return data

    def take_events(self) -> list[ev.Event]:
        out, self._events = self._events, []
        return out

    def take_close(self) -> bool:
        """Whether the adapter should close the connection now (after sending what is queued)."""
        close, self._want_close = self._want_close, False
        return close

    def snapshot(self) -> list[ev.Event]:
        """The full state as events, for subscribers that joined late."""
        out: list[ev.Event] = [self._state_event()]
        if self.state == ev.CONNECTED:
            out += [self._roster(), self._endpoint_event()]
        return out

    # --- inside ------------------------------------------------------------------------------

    def _handle(self, msg: Message, now: float) -> None:
        if isinstance(msg, Voice):  # first: the most frequent by far while tunnelled
            self._voice.append(msg.data)
        elif isinstance(msg, Welcome):
            if msg.version != PROTOCOL or msg.udp_key is None or msg.media_key is None:
                self._fail(f"the relay speaks protocol {msg.version}, this client {PROTOCOL}")
                return
            if msg.token != self.token:  # a new session: perhaps of an upgraded relay
                self.tunnel_refused = False
            self.token, self.user_id, self.udp_port = msg.token, msg.user_id, msg.udp_port
            self.udp_host = msg.udp_host
            self.udp_key, self.media_key_id, self.media_key = (
                msg.udp_key,
                msg.media_key_id,
                msg.media_key,
            )
            self.channel, self.channels = msg.channel, list(msg.channels)
            self.infos = {}  # a channel_list follows the welcome if the relay has any
            users = {u.user_id: _User.of(u) for u in msg.users}
            # A long list goes on in user_list pages: the roster is published once it is whole.
            self._paging = users if msg.more else None
            self._welcoming = msg.more
            self._users = users
            self.attempt = 0
            self.relays.welcomed()
            self._learn(msg.relays)
            self._asked.clear()
            if self.wanted_channel and self.wanted_channel not in self.channels:
                self._notice(
                    f"there is no channel {self.wanted_channel} any more; you are in {self.channel}"
                )
                self.wanted_channel = ""
            self._set_state(ev.CONNECTED, "")
            self._events.append(self._endpoint_event())
            if not msg.more:
                self._welcomed(now)
            # After any welcome (first, resumed, or a fresh session after a relay restart)
            # go back to where the user wants to be.
            if self.wanted_channel and self.wanted_channel != self.channel:
                self._ask_join(self.wanted_channel)
            elif not self.wanted_channel:
                self.wanted_channel = self.channel
            self._tell_tunnel()
        elif isinstance(msg, MediaKey):
            self.media_key_id, self.media_key = msg.key_id, msg.key
            self._events.append(self._endpoint_event())
        elif isinstance(msg, Error):
            if msg.code == "unknown_token":
                # The relay forgot us (restarted, or the grace period ran out): start afresh.
                self.token = 0
                self._send(self._auth())
            elif msg.code == "no_tunnel" or (
                msg.code == "unknown_type"
                and ("'tunnel'" in msg.message or "'voice'" in msg.message)
            ):
                if not self.tunnel_refused:  # a relay without it: voice stays on UDP
                    self.tunnel_refused = True
                    self._notice("the relay carries no voice over TCP: voice stays on UDP")
            elif msg.code == "unknown_type" and "'self_state'" in msg.message:
                if not self.self_state_refused:  # an older relay: our mute works, unseen
                    self.self_state_refused = True
                    self._notice("this server does not show others that you are muted")
            elif msg.code in FATAL_ERRORS:
                self._fail(f"relay: {msg.message} ({msg.code})")
            elif msg.code in NO_ROOM_ERRORS and self._awaiting_welcome():
                # This relay has no room for us: the next relay of the list at once (a
                # cluster's other relay may resume us), not after the welcome's timeout.
                self._drop(now, f"relay: {msg.message} ({msg.code})")
            elif msg.code == "unknown_type" and self._reports_reception():
                # Only an older relay does not know a type we send: reception. Stop
                # sending it here, or its bad-frame limit would close the connection.
                self._reception_refused = True
                self._notice("the relay takes no loss reports: FEC follows our own measures")
            else:
                self._notice(f"relay: {msg.message} ({msg.code})")
        elif isinstance(msg, UserJoined):
            known = self._users.get(msg.user_id)
            if known is None:
                self._users[msg.user_id] = _User(msg.name, msg.channel)
            else:  # a move: the user keeps their mute and deafen
                known.name, known.channel = msg.name, msg.channel
            if msg.user_id == self.user_id:
                self._moved(msg.channel)
            else:
                line = self.news.joined(msg.name, msg.channel)
                if line:
                    self._notice(line)
            self._events.append(self._roster())
        elif isinstance(msg, UserState):
            user = self._users.get(msg.user_id)
            if user is not None:
                user.muted, user.deafened = msg.muted, msg.deafened
                if user.server_muted != msg.server_muted:
                    user.server_muted = msg.server_muted
                    self._server_muted_news(msg.user_id, user)
                self._events.append(self._roster())
        elif isinstance(msg, UserLeft):
            user = self._users.get(msg.user_id)
            if user is not None and user.channel == msg.channel and msg.user_id != self.user_id:
                del self._users[msg.user_id]
                self._notice(f"{msg.name} left {msg.channel}")
                self._events.append(self._roster())
        elif isinstance(msg, UserList):
            self._user_list(msg, now)
        elif isinstance(msg, ChannelList):
            # The operator changed the channels (or they carry descriptions): a new tree.
            self.channels = [c.name for c in msg.channels]
            self.infos = {c.name: c for c in msg.channels if c.description or c.max_users}
            self._events.append(self._roster())
        elif isinstance(msg, Chat):
            self._events.append(ev.ChatLine(msg.user_id, msg.name, msg.channel, msg.text, msg.ts))
        elif isinstance(msg, Pong):
            sent = self._pings.pop(msg.nonce, None)
            if sent is not None:
                self.tcp_rtt = now - sent
                self._events.append(
                    ev.ControlStats(
                        tcp_rtt_ms=self.tcp_rtt * 1000, muted=self.muted, deafened=self.deafened
                    )
                )
        elif isinstance(msg, Ping):
            self._send(Pong(nonce=msg.nonce, t=msg.t))
        elif isinstance(msg, ReceiverReport):
            self._events.append(
                ev.ListenerReport(msg.loss_percent, msg.late_percent, msg.listeners, msg.burst_mean)
            )
        # bye and anything else from the relay needs no action: a close follows.

    def _user_list(self, msg: UserList, now: float) -> None:
        """A page of the user list: a welcome's continuation, or a snapshot (``first``) that
        replaces what we hold because we fell behind on presence."""
        if msg.first:
            self._paging = {}
        elif self._paging is None:
            self._notice("ignored a user list page that continues nothing")
            return
        self._paging.update((u.user_id, _User.of(u)) for u in msg.users)
        if msg.last:
            self._users, self._paging = self._paging, None
            if self._welcoming:
                self._welcoming = False
                self._welcomed(now)
                return
            me = self._users.get(self.user_id)
            if me is not None and me.channel != self.channel:
                self.channel = me.channel
                self._set_state(ev.CONNECTED, "")
            self._events.append(self._roster())

    def _welcomed(self, now: float) -> None:
        """A welcome's user list is whole: publish it, say only what is news, and make
        the relay show our mute and deafen if it does not (a fresh session)."""
        others = [(u.name, u.channel) for uid, u in self._users.items() if uid != self.user_id]
        for line in self.news.welcome(others, now):
            self._notice(line)
        me = self._users.get(self.user_id)
        if me is not None:
            if me.name != self.name and me.name != self._granted:
                self._notice(granted_name(me.name, self.name))
            self._granted = me.name
            shown = (self.muted or self.deafened, self.deafened)
            if (me.muted, me.deafened) != shown and not self.self_state_refused:
                self._send(SelfState(self.muted, self.deafened))
        self._events.append(self._roster())

    def _server_muted_news(self, user_id: int, user: _User) -> None:
        """Say in the chat that the operator muted or unmuted us, or someone in our channel."""
        if user_id == self.user_id:
            self._notice(
                "the server muted you: nobody hears you until it unmutes you"
                if user.server_muted
                else "the server unmuted you: you are heard again"
            )
        elif user.channel == self.channel:
            done = "muted" if user.server_muted else "unmuted"
            self._notice(f"{user.name} was {done} by the server")

    def _moved(self, channel: str) -> None:
        """We are now in ``channel``: by our own join, or moved by the relay."""
        self.channel = channel
        if channel in self._asked:
            del self._asked[: self._asked.index(channel) + 1]
        elif channel != self.wanted_channel:
            self._notice(f"you were moved to {channel}")
        self.wanted_channel = channel
        self._set_state(ev.CONNECTED, "")

    def _ask_join(self, channel: str) -> None:
        self._asked.append(channel)
        del self._asked[:-8]  # joins the relay refused are never answered
        self._send(Join(channel))

    def _fail(self, reason: str) -> None:
        """Close and stay closed: no retry can succeed (state failed, with the reason)."""
        self._want_close = True
        self._connect_at = None
        self._set_state(ev.FAILED, reason)

    def _drop(self, now: float, reason: str) -> None:
        self._want_close = True
        self._schedule_retry(now, reason)

    def _schedule_retry(self, now: float, reason: str) -> None:
        """Connect again: to the relay just lost after RECONNECT_DELAY, or after a failed
        attempt to the next relay of the list (at once, unless all were tried)."""
        if self.state == ev.CONNECTED:
            self.news.link_lost(
                (u.name, u.channel) for uid, u in self._users.items() if uid != self.user_id
            )
            delay = self.relays.lost()
        else:
            delay = self.relays.failed()
        self.host, self.port = self.relays.current.host, self.relays.current.port
        self.attempt += 1
        self._connect_at = now + delay
        self._set_state(ev.RECONNECTING, reason)

    def _learn(self, relays: object) -> None:
        """A welcome's ``relays``: the good entries join the list, the bad are told once."""
        if relays == []:
            return  # a standalone relay (or one of an older version)
        entries, dropped = parse_relays(relays)
        if dropped:
            more = f" (and {len(dropped) - 1} more)" if len(dropped) > 1 else ""
            self._notice(f"ignored a relay the server named: {dropped[0]}{more}")
        self._vouched += self.relays.learn(entries)

    @property
    def target(self) -> Relay:
        """The relay to connect to next (or connected), with the fingerprint vouched for it."""
        return self.relays.current

    def take_vouched(self) -> list[Relay]:
        """Relays a welcome vouched for, with their fingerprints: for the adapter to pin."""
        out, self._vouched = self._vouched, []
        return out

    def _set_state(self, state: str, reason: str) -> None:
        self.state, self.reason = state, reason
        self._events.append(self._state_event())

    def _state_event(self) -> ev.ConnectionState:
        return ev.ConnectionState(
            state=self.state,
            server=server_text(self.host, self.port),
            attempt=self.attempt,
            relays=len(self.relays.relays),
            reason=self.reason,
            user_id=self.user_id,
            name=self._users[self.user_id].name if self.user_id in self._users else self.name,
            channel=self.channel,
        )

    def _endpoint_event(self) -> ev.VoiceEndpoint:
        return ev.VoiceEndpoint(
            self.token,
            self.user_id,
            self.udp_host or self.peer_host or self.host,
            self.udp_port,
            udp_key=self.udp_key,
            media_key_id=self.media_key_id,
            media_key=self.media_key,
        )

    def _roster(self) -> ev.Roster:
        channels = list(self.channels)
        for u in self._users.values():
            if u.channel not in channels:
                channels.append(u.channel)
        users = [
            UserInfo(uid, u.name, u.channel, u.muted, u.deafened, u.server_muted)
            for uid, u in sorted(self._users.items())
        ]
        infos = [self.infos[c] for c in channels if c in self.infos]
        return ev.Roster(self.user_id, self.channel, channels, users, infos)

    def _notice(self, text: str) -> None:
        self._events.append(ev.Notice(text))

    def _send(self, msg: Message) -> None:
        self._out.append(encode_message(msg))
