"""The asyncio TCP adapter around :class:`relay.session_table.SessionTable`.

One coroutine per connection reads bytes and splits them into messages with
:class:`relay.protocol.messages.MessageDecoder`; a ``ping`` is answered at once, and
every other message goes into one queue, in arrival order, which the loop works off
a few milliseconds per pass (``WORK_SLICE``): each message to the session table,
whose actions are carried out. So a storm of thousands of joins never holds the loop
for long, and the pings read in between are answered within a pass or two.
Everything hostile stops here: bad frames get an ``error`` (and the connection is
closed when the stream cannot be re-synchronised or a client keeps sending
garbage), a connection that never authenticates is timed out, and a client that
does not read its replies is dropped once its output buffer passes a bound
instead of growing memory. How much is too much is decided by
:class:`relay.limits.ConnectionPolicy` (per connection),
:class:`relay.limits.AddressPolicy` and :class:`relay.limits.AddressRates` (per
source address); this module reads the clock and carries out their verdicts.
Presence goes through :class:`relay.presence.PresenceFanout`, which batches it per
connection and gives a connection that falls behind a snapshot instead of its
backlog; while a storm is still being worked off, a round waits for it (up to
``PRESENCE_HOLD``). Loss
feedback goes through :class:`relay.feedback.LossFeedback`: listeners' ``reception``
reports in, a ``receiver_report`` to each speaker out, looked at once a second while
any report counts. Voice through the TCP tunnel (``voice``, ``tunnel``) goes through
:class:`relay.tunnel.TunnelIn` on the way in and a :class:`relay.voice_queue.VoiceQueue` per
connection on the way out; it is held to the session's voice limit, not to the
control messages' rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import itertools
import logging
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable

from relay import control_accept, feedback, tunnel, voice_queue
from relay.bans import Ban, BanList
from relay.cluster_core import SessionRecord
from relay.limits import (
    AddressPolicy,
    AddressRates,
    Admission,
    AuthGuard,
    ConnectionPolicy,
    ControlLimits,
    Verdict,
)
from relay.log_format import address
from relay.presence import PresenceFanout
from relay.protocol.errors import FramingError, ProtocolError
from relay.protocol.messages import (
    Auth,
    Bye,
    Chat,
    Error,
    Join,
    Message,
    MessageDecoder,
    Ping,
    Pong,
    Reception,
    Reconnect,
    SelfState,
    Tunnel,
    Voice,
    encode_message,
)
from relay.router import Dests
from relay.session_table import (
    SERVER_NAME,
    Action,
    Presence,
    Send,
    SendFrames,
    Session,
    SessionTable,
)

log = logging.getLogger("relay.control_server")


READ_CHUNK = 64 * 1024
SHUTDOWN_GRACE = 0.5  # seconds for clients to take their bye before connections are cut
WRITE_SLICE = 200  # presence writes per loop pass (each a send(): ~5-10 us)
# Seconds of queued control messages handled per loop pass. A join storm's thousands of
# joins then take many short passes instead of one long one, and the pings (and every
# connection's reads) in between are served within a pass or two.
WORK_SLICE = 0.005
# While queued messages are still being handled (a storm), presence waits up to this
# long for them: one round for the whole storm instead of a round (a write to every
# connection) every 50 ms while it lasts.
PRESENCE_HOLD = 0.5
# A round goes out this long after the first event that makes it due, not at once: what
# else happens meanwhile rides along, and a session that authenticates and leaves within
# it (a probe) is told to no one (relay/presence.py).
PRESENCE_GATHER = 0.05


def _source(writer: asyncio.StreamWriter) -> str:
    """The peer's address (no port): what the per-address limits count by. An IPv4 client
    of a dual-stack relay (``--host ::``) is its IPv4 address, not ``::ffff:a.b.c.d``."""
    peer = writer.get_extra_info("peername")
    if not isinstance(peer, tuple) or not peer:
        return "?"
    return str(peer[0]).removeprefix("::ffff:")


class _Conn:
    __slots__ = ("closing", "fd", "held", "id", "pending", "policy", "source", "timer", "voice",
                 "voice_timer", "writer")  # fmt: skip

    def __init__(
        self, conn_id: int, writer: asyncio.StreamWriter, policy: ConnectionPolicy, source: str
    ) -> None:
        self.id = conn_id
        self.policy = policy
        self.writer = writer
        self.source = source
        self.closing = False
        self.pending = 0  # its messages in the server's queue, not yet handled
        # While a reconnect is looked up in a cluster's directory: what it sent since.
        self.held: list[tuple[Message | ProtocolError, Verdict]] | None = None
        self.timer: asyncio.TimerHandle | None = None
        sock = writer.get_extra_info("socket")
        self.fd = sock.fileno() if sock is not None else -1
        self.voice: voice_queue.VoiceQueue | None = None  # tunnelled voice waiting to be written
        self.voice_timer: asyncio.TimerHandle | None = None

    def unsent(self) -> int:
        """Bytes written to this connection that its peer has not taken yet, as far as
        they can be seen: asyncio's buffers (TLS and TCP) and the kernel's send queue."""
        transport = self.writer.transport
        size = transport.get_write_buffer_size()
        inner = getattr(getattr(transport, "_ssl_protocol", None), "_transport", None)
        if inner is not None:  # under TLS, what the TCP transport holds is not in the above
            size += inner.get_write_buffer_size()
        if self.fd >= 0:
            size += voice_queue.kernel_unsent(self.fd)
        return size


class ControlServer:
    """Serves control connections; calls ``on_change`` after the routing view changed."""

    def __init__(
        self,
        sessions: SessionTable,
        on_change: Callable[[], None],
        limits: ControlLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        password: str | None = None,
    ) -> None:
        self.sessions = sessions
        self._password = None if password is None else password.encode()
        self.guard = AuthGuard()
        # Refused auths: a wrong password, and any auth from an address that guessed too often.
        self.auth_refused = {"bad_password": 0, "password_blocked": 0}
        self.on_change = on_change
        self.limits = limits or ControlLimits()
        self.clock = clock
        self.wall = wall
        self._conns: dict[int, _Conn] = {}
        self._ids = itertools.count(1)
        self._version = sessions.version
        self.addresses = AddressPolicy(self.limits)
        self.rates = AddressRates(self.limits)  # chats and joins per source address
        self.rate_limited = {"chat": 0, "join": 0}  # refused by the per-address rates
        self.fanout = PresenceFanout()
        self.feedback = feedback.LossFeedback(sessions.channel_of)
        self._feedback_timer: asyncio.TimerHandle | None = None
        self.refused: dict[str, int] = {a.value: 0 for a in Admission if a is not Admission.ADMIT}
        self.refused |= dict.fromkeys(control_accept.COUNTED, 0)  # before TLS, by verdict
        self._flush_timer: asyncio.TimerHandle | None = None
        self._routes_stale = False  # the router has not been told of a change yet
        self._writing = False  # a presence round is being written, a slice per loop pass
        self._after_round: list[Action] = []  # actions that wait for the logged presence
        # Messages read but not yet handled, of every connection, in arrival order.
        self._queue: deque[tuple[_Conn, Message | ProtocolError, Verdict]] = deque()
        self._working = False  # _work() is scheduled
        self._held_since: float | None = None  # when a due presence round was first held
        self.bans = BanList()
        self.welcome_text = ""  # a chat from the server after each new session's welcome
        self.messages: dict[str, int] = {}  # control messages received, by type
        self.auth_failures: dict[str, int] = {}  # auths and reconnects refused, by error code
        # The TCP tunnel (protocol 2 only): set by the relay, with how to send over UDP.
        self.tunnel_in: tunnel.TunnelIn | None = None
        self.udp_send: Callable[[bytes, Dests], None] | None = None
        self.tunnel_counts = {"voice_out": 0, "voice_dropped": 0}
        # A cluster (relay.cluster): called after every batch of actions (the session
        # table's outbox is then sent on), and asked for a token this relay does not hold.
        self.after_apply: Callable[[], None] | None = None
        self.resume: Callable[[int], Awaitable[SessionRecord | None]] | None = None
        self._resumes: set[asyncio.Task[None]] = set()  # lookups under way: held, and ended

    # --- per connection --------------------------------------------------------------

    def count_refused(self, reason: str) -> None:
        """A connection refused before TLS (relay.control_accept): counted by ``reason``."""
        self.refused[reason] = self.refused.get(reason, 0) + 1

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """The whole life of one control connection."""
        opened = self.clock()
        source = _source(writer)
        ban = self.bans.match(source, None, self.wall())
        if ban is not None:
            self._count_failure("banned")
            log.info(
                "refused a banned address",
                extra={"event": "auth_refused", "address": address(source), "code": "banned"},
            )
            writer.write(encode_message(_banned(ban)))
            writer.close()
            return
        admission = self.addresses.admit(source, opened)
        if admission is not Admission.ADMIT:
            self.refused[admission.value] += 1
            writer.write(encode_message(Error(code=admission.value, message=_REFUSALS[admission])))
            writer.close()
            return
        conn = _Conn(next(self._ids), writer, ConnectionPolicy(self.limits, opened), source)
        sock = writer.get_extra_info("socket")
        if sock is not None:  # notice dead peers eventually, even if they never write again
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        self._conns[conn.id] = conn
        loop = asyncio.get_running_loop()
        conn.timer = loop.call_later(conn.policy.auth_deadline - opened, self._auth_timeout, conn)
        decoder = MessageDecoder()
        log.info(
            "connection opened",
            extra={"event": "connect", "conn": conn.id, "address": address(source)},
        )
        try:
            while not conn.closing:
                try:
                    chunk = await reader.read(READ_CHUNK)
                except (ConnectionError, OSError):
                    break
                if not chunk:
                    break
                try:
                    items = decoder.feed(chunk)
                except FramingError as exc:
                    self._send(conn, Error(code=exc.code, message=str(exc)))
                    self._close(conn, "unframeable stream")
                    break
                now = self.clock()
                for item in items:
                    if conn.closing:
                        break
                    if isinstance(item, Voice):  # held to the voice limit, not the message rate
                        self._voice(conn, item.data)
                        continue
                    verdict = conn.policy.on_message(now)
                    if isinstance(item, Ping) and verdict is Verdict.ACCEPT and not conn.pending:
                        self._dispatch(conn, item)  # the pulse of the loop: answered at once
                    else:
                        self._enqueue(conn, item, verdict)
        finally:
            while conn.pending:  # what it sent before it went (a bye), in order
                self._take(*self._queue.popleft())
            if conn.timer is not None:
                conn.timer.cancel()
            session = self.sessions.by_conn(conn.id)
            log.info(
                "connection closed",
                extra={
                    "event": "disconnect",
                    "conn": conn.id,
                    "user_id": None if session is None else session.user_id,
                    "address": address(source),
                },
            )
            del self._conns[conn.id]
            if conn.voice_timer is not None:
                conn.voice_timer.cancel()
            if conn.voice is not None:  # what still waited is lost with the connection
                self.tunnel_counts["voice_dropped"] += len(conn.voice)
            self.addresses.release(conn.source)
            self.fanout.unsubscribe(conn.id)
            self._apply(self.sessions.drop(conn.id, self.clock()))
            if not writer.is_closing():
                writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    def _enqueue(self, conn: _Conn, item: Message | ProtocolError, verdict: Verdict) -> None:
        """Queue a message read from ``conn`` (with the rate verdict it got on arrival)."""
        conn.pending += 1
        self._queue.append((conn, item, verdict))
        if not self._working:
            self._working = True
            asyncio.get_running_loop().call_soon(self._work)

    def _work(self) -> None:
        """Handle queued messages for up to WORK_SLICE, then let the loop poll again."""
        deadline = time.perf_counter() + WORK_SLICE
        queue = self._queue
        while queue:
            self._take(*queue.popleft())
            if time.perf_counter() >= deadline:
                break
        if queue:
            asyncio.get_running_loop().call_soon(self._work)
        else:
            self._working = False

    def _take(self, conn: _Conn, item: Message | ProtocolError, verdict: Verdict) -> None:
        """Handle one queued message of ``conn``, as it was judged when it arrived."""
        conn.pending -= 1
        if conn.closing:
            return  # closed by an earlier message (or a refusal): the rest is not read
        if conn.held is not None:  # after a reconnect still being looked up: in order, later
            held = conn.held
            # Nothing after a message that closes the connection is handled: a flood
            # meanwhile holds at most the burst and the refusals before the close.
            if not held or held[-1][1] is not Verdict.CLOSE:
                held.append((item, verdict))
            return
        self._judge(conn, item, verdict)

    def _judge(self, conn: _Conn, item: Message | ProtocolError, verdict: Verdict) -> None:
        if verdict is not Verdict.ACCEPT:
            msg = f"more than {self.limits.rate:g} messages/s"
            self._refuse(conn, ProtocolError(msg, code="rate_limited"), verdict)
        elif isinstance(item, ProtocolError):
            self._refuse(conn, item, conn.policy.on_bad_frame())
        else:
            self._dispatch(conn, item)

    def _dispatch(self, conn: _Conn, msg: Message) -> None:
        s = self.sessions
        self.messages[msg.TYPE] = self.messages.get(msg.TYPE, 0) + 1
        if isinstance(msg, Auth):
            ban = self.bans.match(conn.source, msg.name, self.wall())
            if ban is not None:
                self._refuse_auth(conn, _banned(ban), msg.name)
                self._close(conn, "banned")
                return
            refusal = self._check_password(conn, msg.password)
            if refusal is not None:
                self._send(conn, refusal)
                return
            actions = s.auth(conn.id, msg.name, conn.source, msg.version)
            session = s.by_conn(conn.id)
            if session is not None:
                self._log_session(conn, session, "auth")
                if self.welcome_text:
                    text = Chat(self.welcome_text, 0, SERVER_NAME, session.channel, self.wall())
                    actions.append(Send(conn.id, text))
            else:
                self._refused_in(actions, conn, msg.name)
        elif isinstance(msg, Reconnect):
            if self.resume is not None and s.by_token(msg.token) is None and not s.by_conn(conn.id):
                conn.held = []  # the cluster's directory may hold it: look, then go on
                task = asyncio.get_running_loop().create_task(self._resume(conn, msg))
                self._resumes.add(task)
                task.add_done_callback(self._resumes.discard)
                return
            reconnected = self._reconnect(conn, msg)
            if reconnected is None:
                return
            actions = reconnected
        elif isinstance(msg, Join):
            if self._over_address_rate(conn, "join"):
                return
            actions = s.join(conn.id, msg.channel)
        elif isinstance(msg, Chat):
            if self._over_address_rate(conn, "chat"):
                return
            # After the presence told before it (a move into the channel, then a chat),
            # as on every other relay of a cluster.
            self.apply_after_presence(s.chat(conn.id, msg.text, self.wall()))
            return
        elif isinstance(msg, Ping):
            actions = [Send(conn.id, Pong(nonce=msg.nonce, t=msg.t))]
        elif isinstance(msg, Bye):
            actions = s.bye(conn.id)
        elif isinstance(msg, SelfState):
            actions = s.self_state(conn.id, msg.muted, msg.deafened)
        elif isinstance(msg, Reception):
            actions = self._reception(conn, msg)
        elif isinstance(msg, Tunnel):
            if self.tunnel_in is None:
                actions = [Send(conn.id, _NO_TUNNEL)]
            else:
                actions = s.tunnel(conn.id, msg.on)
                if not msg.on and conn.voice is not None:
                    conn.voice.clear()
        else:
            exc = ProtocolError(f"{msg.TYPE} is sent by the relay, not to it")
            self._refuse(conn, exc, conn.policy.on_bad_frame())
            return
        self._finish(conn, actions)

    def _finish(self, conn: _Conn, actions: list[Action]) -> None:
        """Carry out a message's actions; a connection that now has a session is
        subscribed to presence."""
        s = self.sessions
        has_session = s.by_conn(conn.id) is not None
        if conn.timer is not None and has_session:
            conn.timer.cancel()  # only a session stops the clock: failed reconnects do not
            conn.timer = None
        self._apply(actions)
        if has_session and not conn.closing:
            # After its welcome went out: presence from here on is news to it.
            self.fanout.subscribe(conn.id)

    def _reconnect(self, conn: _Conn, msg: Reconnect) -> list[Action] | None:
        """The table's answer to ``msg`` on ``conn``; None if the connection was closed
        for it (too many unknown tokens)."""
        s = self.sessions
        actions = s.reconnect(conn.id, msg.token, self.clock(), msg.version)
        session = s.by_conn(conn.id)
        if session is not None:
            self._log_session(conn, session, "reconnect")
            return actions
        self._refused_in(actions, conn, None)  # the table answered unknown_token
        if conn.policy.on_failed_reconnect() is Verdict.CLOSE:
            self._apply(actions)
            self._close(conn, "too many unknown tokens")
            return None
        return actions

    async def _resume(self, conn: _Conn, msg: Reconnect) -> None:
        """A reconnect with a token this relay does not hold: resume the session from the
        cluster's directory if it is there (failover), else answer as a relay alone would.
        What the connection sent meanwhile is handled afterwards, in order."""
        assert self.resume is not None
        try:
            record = await self.resume(msg.token)
        except Exception as exc:  # Redis away: the token cannot be checked
            log.warning("resume lookup failed: %s", exc)
            record = None
        if conn.closing or conn.id not in self._conns:
            return
        s = self.sessions
        if record is not None and s.by_conn(conn.id) is None:
            actions = s.adopt(conn.id, record, self.clock(), msg.version, conn.source)
            session = s.by_conn(conn.id)
            if session is not None:
                self._log_session(conn, session, "resume")
            self._finish(conn, actions)
        else:
            reconnected = self._reconnect(conn, msg)
            if reconnected is None:
                conn.held = None
                return
            self._finish(conn, reconnected)
        held, conn.held = conn.held or [], None
        for item, verdict in held:
            if conn.closing:
                break
            self._judge(conn, item, verdict)

    def _over_address_rate(self, conn: _Conn, kind: str) -> bool:
        """Whether a chat or join of ``conn`` is over its address's rate: then it is
        answered with an error (not a bad frame: a NAT's other users share the limit)."""
        if self.sessions.by_conn(conn.id) is None:
            return False  # the table answers not_authenticated; no address token is spent
        rates = self.rates
        allowed = rates.allow_chat if kind == "chat" else rates.allow_join
        if allowed(conn.source, self.clock()):
            return False
        self.rate_limited[kind] += 1
        lim = self.limits
        rate = lim.address_chat_rate if kind == "chat" else lim.address_join_rate
        msg = f"more than {rate:g} {kind}s/s from your address"
        self._send(conn, Error(code="address_rate_limited", message=msg))
        return True

    def _reception(self, conn: _Conn, msg: Reception) -> list[Action]:
        session = self.sessions.by_conn(conn.id)
        if session is None:
            return [Send(conn.id, Error(code="not_authenticated", message="send auth first"))]
        self.feedback.report(session.user_id, msg.reports, self.clock())
        if self._feedback_timer is None and self.feedback:
            loop = asyncio.get_running_loop()
            self._feedback_timer = loop.call_later(feedback.TICK, self._feedback_tick)
        return []

    # --- the TCP tunnel ----------------------------------------------------------------

    def _voice(self, conn: _Conn, data: bytes) -> None:
        """A voice datagram through the connection: checked and routed as from UDP."""
        self.messages[Voice.TYPE] = self.messages.get(Voice.TYPE, 0) + 1
        session = self.sessions.by_conn(conn.id)
        if self.tunnel_in is None or session is None:
            err = _NO_TUNNEL if session is not None else _NOT_AUTHENTICATED
            self._refuse(
                conn, ProtocolError(err.message, code=err.code), conn.policy.on_bad_frame()
            )
            return
        routed = self.tunnel_in.route(data, session.token)
        if routed is None:
            return
        if routed.dests and self.udp_send is not None:
            self.udp_send(routed.data, routed.dests)
        if routed.mesh_dests and self.udp_send is not None:  # a cluster's other relays
            self.udp_send(routed.mesh_data, routed.mesh_dests)
        if routed.tunnels:
            self.tunnel_out(routed.data, routed.tunnels)

    def tunnel_out(self, data: bytes, tokens: tuple[int, ...]) -> None:
        """Voice (as UDP listeners get it) for the sessions ``tokens``, through their
        connections; from the UDP thread by way of ``call_soon_threadsafe``."""
        frame = encode_message(Voice(data))
        now = self.clock()
        for token in tokens:
            session = self.sessions.by_token(token)
            target = (
                None if session is None or session.conn is None else self._conns.get(session.conn)
            )
            if target is None or target.closing:
                continue
            queue = target.voice
            if queue is None:
                queue = target.voice = voice_queue.VoiceQueue()
            before = queue.dropped
            for f in queue.offer(frame, target.unsent(), now):
                self._write(target, f)
                self.tunnel_counts["voice_out"] += 1
            self.tunnel_counts["voice_dropped"] += queue.dropped - before
            if len(queue) and target.voice_timer is None:
                loop = asyncio.get_running_loop()
                target.voice_timer = loop.call_later(voice_queue.RETRY, self._voice_retry, target)

    def _voice_retry(self, conn: _Conn) -> None:
        """Write what waits for ``conn`` as far as it takes it; look again soon if not all."""
        conn.voice_timer = None
        queue = conn.voice
        if queue is None or conn.closing:
            return
        before = queue.dropped
        for f in queue.take(conn.unsent(), self.clock()):
            self._write(conn, f)
            self.tunnel_counts["voice_out"] += 1
        self.tunnel_counts["voice_dropped"] += queue.dropped - before
        if len(queue):
            loop = asyncio.get_running_loop()
            conn.voice_timer = loop.call_later(voice_queue.RETRY, self._voice_retry, conn)

    def _feedback_tick(self) -> None:
        """Tell each speaker what its listeners report, if that is news; again in a second
        while any report counts."""
        self._feedback_timer = None
        for speaker, report in self.feedback.tick(self.clock()):
            session = self.sessions.by_user(speaker)
            target = (
                None if session is None or session.conn is None else self._conns.get(session.conn)
            )
            if target is not None:
                self._send(target, report)
        if self.feedback:
            loop = asyncio.get_running_loop()
            self._feedback_timer = loop.call_later(feedback.TICK, self._feedback_tick)

    def _check_password(self, conn: _Conn, given: str) -> Error | None:
        """None if this auth may go on; else the error to send. A reconnect needs no
        password: its token is the credential the password bought."""
        if self._password is None:
            return None
        now = self.clock()
        wait = self.guard.banned_for(conn.source, now)
        if wait > 0:
            self.auth_refused["password_blocked"] += 1
            msg = f"too many wrong passwords from your address; retry in {wait:.0f} s"
            return Error(code="too_many_attempts", message=msg)
        if hmac.compare_digest(given.encode(), self._password):
            return None
        self.auth_refused["bad_password"] += 1
        if self.guard.failed(conn.source, now):
            log.warning(
                "address banned after wrong passwords",
                extra={"event": "password_ban", "address": address(conn.source),
                       "seconds": self.guard.ban},
            )  # fmt: skip
        return Error(code="bad_password", message="wrong server password")

    def _log_session(self, conn: _Conn, session: Session, event: str) -> None:
        log.info(
            "session started" if event == "auth" else "session resumed",
            extra={
                "event": event,
                "conn": conn.id,
                "user_id": session.user_id,
                "user": session.name,
                "address": address(conn.source),
            },
        )

    def _count_failure(self, code: str) -> None:
        self.auth_failures[code] = self.auth_failures.get(code, 0) + 1

    def _refused_in(self, actions: list[Action], conn: _Conn, name: str | None) -> None:
        """Count and log the error the table answered an auth or reconnect with."""
        for a in actions:
            if isinstance(a, Send) and a.conn == conn.id and isinstance(a.message, Error):
                self._count_failure(a.message.code)
                self._log_refusal(conn, a.message.code, name)
                return

    def _refuse_auth(self, conn: _Conn, err: Error, name: str) -> None:
        self._count_failure(err.code)
        self._log_refusal(conn, err.code, name)
        self._send(conn, err)

    def _log_refusal(self, conn: _Conn, code: str, name: str | None) -> None:
        log.info(
            "auth refused",
            extra={
                "event": "auth_refused",
                "conn": conn.id,
                "code": code,
                "user": name or "",
                "address": address(conn.source),
            },
        )

    def apply(self, actions: list[Action]) -> None:
        """Carry out actions of the session table made outside a message (the operator's)."""
        self._apply(actions)

    def apply_after_presence(self, actions: list[Action]) -> None:
        """Carry out ``actions`` once the presence logged before them has been written (a
        chat after the move that brought its sender to the channel: presence goes out in
        rounds, a chat would overtake it). A cluster's relays all do so, so everyone sees
        a user's events in the order the user made them, whatever relay either is on."""
        if self.fanout.pending or self._writing or self._after_round:
            self._after_round += actions
            self._schedule_flush()
        else:
            self._apply(actions)

    def address_of(self, session: Session) -> str:
        """The address ``session`` came from (its auth's), as the log shows it."""
        return address(session.source)

    def _refuse(self, conn: _Conn, exc: ProtocolError, verdict: Verdict) -> None:
        """Answer bad input with an error; close the connection if the policy says so."""
        self._send(conn, Error(code=exc.code, message=str(exc)))
        if verdict is Verdict.CLOSE:
            self._close(conn, "too many bad frames")

    def _auth_timeout(self, conn: _Conn) -> None:
        conn.timer = None
        if conn.closing:
            return
        now = self.clock()
        authenticated = self.sessions.by_conn(conn.id) is not None
        if conn.policy.auth_overdue(now, authenticated):
            self._count_failure("auth_timeout")
            self._send(conn, Error(code="auth_timeout", message="no auth within the time limit"))
            self._close(conn, "auth timeout")
        elif not authenticated:
            # The loop may run a timer up to one clock tick early: wait out the rest.
            loop = asyncio.get_running_loop()
            conn.timer = loop.call_later(conn.policy.auth_deadline - now, self._auth_timeout, conn)

    # --- actions -------------------------------------------------------------------------

    def _apply(self, actions: list[Action]) -> None:
        """Tell the router if routing changed, then carry out the session table's actions.

        In that order: a client that reads its welcome may send voice at once.
        """
        if self.sessions.version != self._version:
            if any(isinstance(a, Send | SendFrames) for a in actions):
                self._sync_routes()  # e.g. a welcome: its session must be routed first
            else:
                # Presence alone (a join, a leave): the routes are rebuilt once, just
                # before the next presence flush, for every change since. A join
                # storm then costs one rebuild per flush, not one per join.
                self._routes_stale = True
                self._schedule_flush()
        if self._after_round and any(isinstance(a, Presence) for a in actions):
            # A chat waits for this round's presence: presence made since (the sender
            # leaving just after it) goes after the chat, not into the round it waits for,
            # or it would overtake the chat (a watcher saw a remote user leave, then speak).
            self._after_round += [a for a in actions if isinstance(a, Presence)]
            actions = [a for a in actions if not isinstance(a, Presence)]
        published = False
        for action in actions:
            if isinstance(action, Presence):
                self.fanout.publish(action.data, action.but, action.arrival, action.departure)
                published = True
            elif isinstance(action, SendFrames):
                for conn_id in action.conns:
                    target = self._conns.get(conn_id)
                    if target is not None:
                        self._write(target, action.data)
            else:
                target = self._conns.get(action.conn)
                if target is None:
                    continue
                if isinstance(action, Send):
                    self._send(target, action.message)
                else:
                    self._close(target, action.reason)
        if published:
            self._schedule_flush()
        if self.after_apply is not None:
            self.after_apply()

    def _sync_routes(self) -> None:
        self._version = self.sessions.version
        self._routes_stale = False
        self.on_change()

    def _send(self, conn: _Conn, msg: Message) -> None:
        try:
            frame = encode_message(msg)
        except ProtocolError as exc:  # a bug (a message we built is too large): never fatal
            log.error("conn %d: cannot send %s: %s", conn.id, msg.TYPE, exc)
            return
        self._write(conn, frame)

    def _write(self, conn: _Conn, data: bytes) -> None:
        transport = conn.writer.transport
        # A transport whose peer is gone logs a warning per write: never write to one.
        if conn.closing or transport.is_closing():
            return
        transport.write(data)
        if transport.get_write_buffer_size() > self.limits.max_output:
            log.warning("conn %d does not read its replies: dropped", conn.id)
            conn.closing = True
            transport.abort()

    def _close(self, conn: _Conn, reason: str) -> None:
        if conn.closing:
            return
        log.debug("closing conn %d: %s", conn.id, reason)
        conn.closing = True
        self.fanout.unsubscribe(conn.id)
        conn.writer.close()  # flushes what is queued, then closes; the reader then sees EOF

    # --- presence ------------------------------------------------------------------------

    def _schedule_flush(self) -> None:
        due = self.fanout.next_flush()
        if due is None and (self._routes_stale or self.sessions.rotation_due):
            due = self.clock()
        # One round at a time: a round still being written must finish first (order).
        if due is None or self._flush_timer is not None or self._writing:
            return
        now = self.clock()
        if self.fanout.pending:  # presence to tell: let what follows gather first
            due = max(due, now + PRESENCE_GATHER)
        loop = asyncio.get_running_loop()
        self._flush_timer = loop.call_later(max(0.0, due - now), self._flush)

    def _flush(self) -> None:
        self._flush_timer = None
        now = self.clock()
        if self._queue:  # more presence is being made: hold the round, for a while
            if self._held_since is None:
                self._held_since = now
            if now - self._held_since < PRESENCE_HOLD:
                loop = asyncio.get_running_loop()
                self._flush_timer = loop.call_later(self.fanout.interval, self._flush)
                return
        self._held_since = None
        # Channels a member left get a new key, once per round however many left.
        rotations = self.sessions.take_rotations() if self.sessions.rotation_due else []
        if self._routes_stale or self.sessions.version != self._version:
            self._sync_routes()  # before the presence that tells of the change
        self._apply(rotations)  # the new keys, to each channel's remaining members
        conns = self._conns

        def queued(conn_id: int) -> int:
            return conns[conn_id].writer.transport.get_write_buffer_size()

        writes = self.fanout.flush(self.clock(), queued, self.sessions.snapshot)
        self._writing = True
        self._write_round(writes, 0)

    def _write_round(self, writes: list[tuple[int, bytes]], start: int) -> None:
        """Write a presence round, WRITE_SLICE connections per loop pass, so that pings
        and auths are served in between even when a round reaches thousands."""
        end = min(len(writes), start + WRITE_SLICE)
        conns = self._conns
        for conn_id, data in writes[start:end]:
            target = conns.get(conn_id)
            if target is not None:
                self._write(target, data)
        if end < len(writes):
            asyncio.get_running_loop().call_soon(self._write_round, writes, end)
            return
        self._writing = False
        if self._after_round:
            held, self._after_round = self._after_round, []
            self._apply(held)
        self._schedule_flush()

    # --- whole server ----------------------------------------------------------------------

    def expire(self) -> None:
        """Remove sessions whose grace period is over (called by the server's timer)."""
        self._apply(self.sessions.expire(self.clock()))

    async def shutdown(self, timeout: float = SHUTDOWN_GRACE) -> None:
        """Tell every client ``bye`` and close every connection, within ``timeout`` in all.

        A client that does not take its bye in time (its queue is full: it does not
        read) is cut off, so a stop never waits on the slowest peer.
        """
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        if self._feedback_timer is not None:
            self._feedback_timer.cancel()
            self._feedback_timer = None
        for task in list(self._resumes):  # a cluster's lookups: their connections close now
            task.cancel()
        await asyncio.gather(*self._resumes, return_exceptions=True)
        conns = list(self._conns.values())
        for conn in conns:
            self._send(conn, Bye())
            self._close(conn, "relay shutting down")
        waits = [asyncio.ensure_future(c.writer.wait_closed()) for c in conns]
        if not waits:
            return
        await asyncio.wait(waits, timeout=timeout)
        for conn, wait in zip(conns, waits, strict=True):
            if not wait.done():
                conn.writer.transport.abort()  # connection_lost follows at once
        _done, pending = await asyncio.wait(waits, timeout=timeout)
        for wait in pending:
            wait.cancel()
        await asyncio.gather(*waits, return_exceptions=True)

    @property
    def connection_count(self) -> int:
        return len(self._conns)


def _banned(ban: Ban) -> Error:
    until = (
        "for ever"
        if ban.expires is None
        else time.strftime("until %Y-%m-%d %H:%M UTC", time.gmtime(ban.expires))
    )
    reason = f": {ban.reason}" if ban.reason else ""
    return Error(code="banned", message=f"you are banned from this relay {until}{reason}")


_NO_TUNNEL = Error(code="no_tunnel", message="this relay carries no voice over TCP")
_NOT_AUTHENTICATED = Error(code="not_authenticated", message="send auth first")

_REFUSALS = {
    Admission.SERVER_FULL: "too many connections",
    Admission.ADDRESS_FULL: "too many connections from your address",
    Admission.TOO_FAST: "too many new connections from your address; retry in a few seconds",
}
