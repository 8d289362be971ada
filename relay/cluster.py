"""The asyncio adapter between a relay and its cluster's Redis (``--cluster``; docs/cluster.md).

Thin by design: what the events and the registry mean is decided by
:class:`relay.cluster_core.ClusterView` and the session table; this module moves
bytes between them and Redis (:mod:`redis.asyncio`, imported only here, and this
module only with ``--cluster``):

* at start: a mesh number, the cluster-wide media keys of the channels, a first
  block of user ids, the registration and its heartbeat, the registry and the
  directory, the subscription to the event stream;
* while serving: each local change the session table queued in its outbox goes
  out as one transaction (the directory's write and the event's ``PUBLISH``, so
  the two never disagree); events of the others come in and are carried out;
  the registry is read once a heartbeat, which tells who died;
* a reconnect with an unknown token is looked up in the directory (failover);
* when Redis goes away the relay serves on with what it knows (its own sessions,
  the last view of the others, the mesh as it was), retries every
  ``RETRY`` seconds, and when Redis is back re-registers itself and every one of
  its sessions, and announces them (a :class:`~relay.cluster_core.Synced` event).

Thread ownership: everything here runs on the relay's event loop; the router's
``mesh`` and ``local`` tables are replaced whole (the UDP thread only reads them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from relay import cluster_core as cc
from relay.cluster_router import ClusterRouter, MeshTable
from relay.control_server import ControlServer
from relay.protocol.errors import ProtocolError
from relay.protocol.mesh_datagram import mesh_key
from relay.protocol.messages import RelayEntry
from relay.protocol.voice_crypto import new_media_key
from relay.session_table import Action, Outgoing, SessionTable

log = logging.getLogger("relay.cluster")

RETRY = 0.5  # seconds between two attempts to reach Redis again
USER_ID_BLOCK = 256  # user ids taken from Redis at a time; the next block is asked at half
OP_TIMEOUT = 2.0  # seconds one Redis command may take before Redis counts as away
BATCH = 64  # outgoing changes per transaction at most

# Give out the media key of a channel: the one there is, or a new one with the next id.
_MEDIA_SCRIPT = """
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v then return v end
local id = redis.call('INCR', KEYS[2])
if id > 255 then return redis.error_reply('no media key id left (255 channels)') end
v = id .. ':' .. ARGV[2]
redis.call('HSET', KEYS[1], ARGV[1], v)
return v
"""
# A counter at least ARGV[1] (after Redis came back empty: never give out an id twice).
_AT_LEAST_SCRIPT = """
local v = tonumber(redis.call('GET', KEYS[1]) or '0')
if v < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
return 1
"""
# Put a media key back as it was (after Redis came back empty), if no other relay did.
_MEDIA_BACK_SCRIPT = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  local id = tonumber(ARGV[3])
  local top = tonumber(redis.call('GET', KEYS[2]) or '0')
  if top < id then redis.call('SET', KEYS[2], id) end
end
return 1
"""


@dataclass(slots=True)
class ClusterConfig:
    url: str  # redis://HOST:PORT/DB (or rediss:// for TLS)
    secret: bytes  # the cluster secret: relays' mesh datagrams are tagged with it
    relay_id: str
    tcp: str  # host:port clients reach this relay at
    udp: str  # host:port other relays send it voice at
    fingerprint: str = ""
    grace: float = 30.0


@dataclass(slots=True)
class ClusterCounts:
    """What the adapter counted: Redis commands sent, events in and out, refusals."""

    commands: int = 0  # Redis commands sent (each in a pipeline counts once)
    published: int = 0
    received: int = 0
    bad_events: int = 0  # events or records that did not parse: dropped
    redis_lost: int = 0  # times Redis went away
    resumed: int = 0  # sessions of another relay resumed here
    resume_misses: int = 0  # reconnects whose token the directory did not hold

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in self.__slots__}


class Cluster:
    """One relay's membership of a cluster: :meth:`start`, then :meth:`close`."""

    def __init__(
        self,
        config: ClusterConfig,
        sessions: SessionTable,
        control: ControlServer,
        routers: list[ClusterRouter],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.sessions = sessions
        self.control = control
        self.routers = routers  # the UDP loop's, and the TCP tunnel's: one mesh table
        self.clock = clock
        self.view = cc.ClusterView(config.relay_id, config.grace)
        self.counts = ClusterCounts()
        self.online = False
        self.num = 0
        self._key = mesh_key(config.secret)
        self._redis: Any = aioredis.from_url(
            config.url, socket_timeout=OP_TIMEOUT, socket_connect_timeout=OP_TIMEOUT
        )
        self._uids: deque[int] = deque()
        self._uid_top = 0  # the highest user id this relay was given
        self._refilling = False
        self._queue: deque[Outgoing] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._mesh_version = -1
        self._closed = False
        sessions.relay_id = config.relay_id
        # The channel keys are the cluster's (Redis), made once per channel: a key made
        # on one relay when a member leaves would not open for the others' listeners.
        sessions.rotate_on_leave = False
        sessions.outbox = []
        sessions.allocate_user_id = self._allocate
        control.after_apply = self._take_outbox
        control.resume = self.lookup

    # --- life ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Join the cluster; raises RedisError/OSError if Redis cannot be reached. Once
        this returns, every local change reaches the others."""
        r = self._redis
        self.num = int(await r.incr(cc.RELAY_NUM_KEY))
        await self._media_keys()
        await self._refill()
        pubsub = await self._connect(first=True)
        self._task = asyncio.get_running_loop().create_task(self._run(pubsub))

    async def close(self) -> None:
        """Leave: the heartbeat goes at once (the others stop sending), the sessions stay
        in the directory for the grace period (their clients may resume elsewhere)."""
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        with contextlib.suppress(RedisError, OSError, asyncio.TimeoutError):
            await asyncio.wait_for(self._redis.delete(cc.ALIVE_KEY + self.config.relay_id), 1.0)
        with contextlib.suppress(RedisError, OSError, asyncio.TimeoutError):
            await asyncio.wait_for(self._redis.aclose(), 1.0)

    async def _run(self, pubsub: Any) -> None:
        """Serve; when Redis fails, retry every RETRY seconds until it is back."""
        while True:
            try:
                if pubsub is None:
                    pubsub = await self._connect(first=False)
                    log.info("the cluster's Redis is back: re-registered %d sessions",
                             len(self.sessions))  # fmt: skip
                await self._serve(pubsub)
            except asyncio.CancelledError:
                raise
            except (TimeoutError, RedisError, OSError, ProtocolError) as exc:
                if self.online:
                    self.counts.redis_lost += 1
                    log.warning("lost the cluster's Redis (%s); serving on, retrying", exc)
                self.online = False
                self._queue.clear()  # what it said is re-said whole when Redis is back
                await asyncio.sleep(RETRY)
            finally:
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()
                pubsub = None

    async def _connect(self, first: bool) -> Any:
        """Subscribe, (re)register with every local session, read the directory and the
        registry; the subscription. Local changes queue from the subscription on, so
        none falls between the registration's list and the events that follow it."""
        pubsub = self._redis.pubsub()
        try:
            await pubsub.subscribe(cc.EVENTS)
            self.online = True
            if not first:
                await self._rejoin()
            await self._drop_stale()
            await self._register()
            await self._read_registry()  # first: whose directory entries are complete
            self._carry(self.view.load(await self._directory()))
        except BaseException:
            self.online = False
            with contextlib.suppress(Exception):
                await pubsub.aclose()
            raise
        self._wake.set()
        return pubsub

    async def _serve(self, pubsub: Any) -> None:
        """Heartbeat, events in, changes out, until one of them fails (an exception)."""
        tasks = [
            asyncio.ensure_future(self._heartbeat()),
            asyncio.ensure_future(self._listen(pubsub)),
            asyncio.ensure_future(self._publisher()),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for t in done:
            exc = t.exception()
            if exc is not None:
                raise exc

    # --- start and rejoin ----------------------------------------------------------------

    async def _media_keys(self) -> None:
        """Every channel's media key, cluster-wide: the same bytes on every relay, so a
        datagram sealed on one relay opens for listeners on any other."""
        s = self.sessions
        if not s.sealed:
            return
        keys: dict[str, tuple[int, bytes]] = {}
        for channel in s.channels:
            value = await self._redis.eval(
                _MEDIA_SCRIPT, 2, cc.MEDIA_KEY, cc.MEDIA_NEXT_KEY, channel, new_media_key().hex()
            )
            self.counts.commands += 1
            keys[channel] = cc.parse_media_value(value)
        s.media_keys.clear()
        s.media_keys.update(keys)
        s.media_by_id.clear()  # shared with the routers: changed in place, before serving
        s.media_by_id.update({kid: key for kid, key in keys.values()})

    async def _rejoin(self) -> None:
        """Redis is back (perhaps empty, after a restart): never give out an id twice, put
        back the media keys."""
        r = self._redis
        pipe = r.pipeline(transaction=False)
        pipe.eval(_AT_LEAST_SCRIPT, 1, cc.USER_ID_KEY, self._uid_top)
        pipe.eval(_AT_LEAST_SCRIPT, 1, cc.RELAY_NUM_KEY, self.num)
        for channel, (kid, key) in self.sessions.media_keys.items():
            pipe.eval(_MEDIA_BACK_SCRIPT, 2, cc.MEDIA_KEY, cc.MEDIA_NEXT_KEY, channel,
                      cc.media_value(kid, key), kid)  # fmt: skip
        await pipe.execute()
        self.counts.commands += 2 + len(self.sessions.media_keys)

    async def _drop_stale(self) -> None:
        """Take out of the directory the sessions homed here that this relay does not hold:
        those that ended while Redis was away, or, at start, those of an earlier run under
        the same ``--relay-id`` (no relay would ever expire them: their home beats again)."""
        mine = {r.token for r in self.sessions.records()}
        stale = [rec for t, rec in (await self._raw_directory()).items()
                 if rec.user.relay == self.config.relay_id and t not in mine]  # fmt: skip
        if stale:
            pipe = self._redis.pipeline(transaction=True)
            pipe.hdel(cc.SESSIONS_KEY, *[str(rec.token) for rec in stale])
            for rec in stale:
                pipe.srem(cc.MEMBERS_KEY + rec.user.channel, rec.user.user_id)
            await pipe.execute()
            self.counts.commands += 1 + len(stale)

    async def _register(self) -> None:
        """This relay's record, heartbeat, and every local session in the directory; then
        a Synced event with them all (the others replace what they knew of us)."""
        cfg = self.config
        rec = cc.RelayRecord(cfg.relay_id, self.num, cfg.tcp, cfg.udp, cfg.fingerprint)
        records = self.sessions.records()
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(cc.RELAYS_KEY, cfg.relay_id, bytes(rec))
        pipe.set(cc.ALIVE_KEY + cfg.relay_id, str(len(self.sessions)), px=int(cc.ALIVE_TTL * 1e3))
        for srec in records:
            pipe.hset(cc.SESSIONS_KEY, str(srec.token), bytes(srec))
            pipe.sadd(cc.MEMBERS_KEY + srec.user.channel, srec.user.user_id)
        pipe.publish(
            cc.EVENTS, cc.encode_event(cc.Synced(cfg.relay_id, tuple(r.user for r in records)))
        )
        await pipe.execute()
        self.counts.commands += 3 + 2 * len(records)
        self.counts.published += 1

    async def _raw_directory(self) -> dict[int, cc.SessionRecord]:
        raw = await self._redis.hgetall(cc.SESSIONS_KEY)
        self.counts.commands += 1
        out: dict[int, cc.SessionRecord] = {}
        for value in raw.values():
            try:
                rec = cc.SessionRecord.parse(value)
            except ProtocolError:
                self.counts.bad_events += 1
                continue
            out[rec.token] = rec
        return out

    async def _directory(self) -> list[cc.SessionRecord]:
        return list((await self._raw_directory()).values())

    # --- user ids ------------------------------------------------------------------------

    def _allocate(self) -> int:
        """The next user id of this relay's block (asks for the next block at half)."""
        if len(self._uids) < USER_ID_BLOCK // 2 and not self._refilling:
            self._refilling = True
            asyncio.get_running_loop().create_task(self._refill_quietly())
        if not self._uids:
            raise LookupError("the cluster's Redis is away and this relay has no user id left")
        return self._uids.popleft()

    async def _refill(self) -> None:
        top = int(await self._redis.incrby(cc.USER_ID_KEY, USER_ID_BLOCK))
        self.counts.commands += 1
        self._uids.extend(range(top - USER_ID_BLOCK + 1, top + 1))
        self._uid_top = max(self._uid_top, top)

    async def _refill_quietly(self) -> None:
        try:
            await self._refill()
        except (TimeoutError, RedisError, OSError) as exc:
            log.warning("no user ids from Redis: %s", exc)
        finally:
            self._refilling = False

    # --- serving -------------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        """Keep the registration alive, read the registry, expire dead relays' sessions."""
        r = self._redis
        key = cc.ALIVE_KEY + self.config.relay_id
        while True:
            await r.set(key, str(len(self.sessions)), px=int(cc.ALIVE_TTL * 1e3))
            self.counts.commands += 1
            await self._read_registry()
            await self._expire()
            await asyncio.sleep(cc.HEARTBEAT)

    async def _read_registry(self) -> None:
        r = self._redis
        raw = await r.hgetall(cc.RELAYS_KEY)
        records = []
        for value in raw.values():
            try:
                records.append(cc.RelayRecord.parse(value))
            except ProtocolError:
                self.counts.bad_events += 1
        ids = [rec.id for rec in records]
        beats = await r.mget([cc.ALIVE_KEY + i for i in ids]) if ids else []
        self.counts.commands += 2 if ids else 1
        alive = [i for i, b in zip(ids, beats, strict=True) if b is not None]
        self.view.registry(records, alive, self.clock())
        self._update_mesh()

    async def _expire(self) -> None:
        changes, dead = self.view.expire(self.clock())
        self._carry(changes)
        if not dead:
            return
        # Any relay may clean up: deleting what is gone twice does no harm.
        r = self._redis
        directory = await self._raw_directory()
        pipe = r.pipeline(transaction=True)
        for token, rec in directory.items():
            if rec.user.relay in dead:
                pipe.hdel(cc.SESSIONS_KEY, str(token))
                pipe.srem(cc.MEMBERS_KEY + rec.user.channel, rec.user.user_id)
        pipe.hdel(cc.RELAYS_KEY, *dead)
        self.counts.commands += len(pipe)
        await pipe.execute()
        log.info("relays %s gone for the grace period: their sessions ended", sorted(dead))

    async def _listen(self, pubsub: Any) -> None:
        while True:
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if msg is None or msg.get("type") != "message":
                continue
            self.counts.received += 1
            try:
                event = cc.parse_event(msg["data"])
            except ProtocolError as exc:
                self.counts.bad_events += 1
                log.warning("bad cluster event dropped: %s", exc)
                continue
            origin = event.user.relay if isinstance(event, cc.Joined | cc.Resumed) else event.relay
            if origin != self.config.relay_id and origin not in self.view.alive:
                await self._read_registry()  # a relay that just came: where to send it voice
            self._carry(self.view.apply(event, self.sessions.user_ids))

    def _take_outbox(self) -> None:
        """After the control side's actions: what the session table queued for the others."""
        outbox = self.sessions.outbox
        if outbox:
            for event, _record in outbox:
                if isinstance(event, cc.Resumed):  # ours now: no longer another relay's
                    self.view.forget(event.user.user_id)
            if self.online:
                self._queue.extend(outbox)
                self._wake.set()
            outbox.clear()  # offline: the re-sync when Redis is back says it all

    async def _publisher(self) -> None:
        """Each queued change as one transaction: the directory's write, then the event."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                pipe = self._redis.pipeline(transaction=True)
                n = 0
                while self._queue and n < BATCH:
                    event, record = self._queue.popleft()
                    n += self._write(pipe, event, record)
                    pipe.publish(cc.EVENTS, cc.encode_event(event))
                    n += 1
                    self.counts.published += 1
                await pipe.execute()
                self.counts.commands += n

    def _write(self, pipe: Any, event: cc.Event, record: cc.SessionRecord | None) -> int:
        """The directory's side of ``event`` into ``pipe``; how many commands."""
        if record is None:
            return 0
        token, uid = str(record.token), record.user.user_id
        if isinstance(event, cc.Left):
            pipe.hdel(cc.SESSIONS_KEY, token)
            pipe.srem(cc.MEMBERS_KEY + record.user.channel, uid)
            return 2
        pipe.hset(cc.SESSIONS_KEY, token, bytes(record))
        if isinstance(event, cc.Moved):
            for channel in self.sessions.channels:  # the old one is not in the record
                if channel != record.user.channel:
                    pipe.srem(cc.MEMBERS_KEY + channel, uid)
            pipe.sadd(cc.MEMBERS_KEY + record.user.channel, uid)
            return 2 + len(self.sessions.channels) - 1
        if isinstance(event, cc.Joined | cc.Resumed):
            pipe.sadd(cc.MEMBERS_KEY + record.user.channel, uid)
            return 2
        return 1

    async def lookup(self, token: int) -> cc.SessionRecord | None:
        """The directory's record of ``token`` (a failover's reconnect), or None."""
        value = await asyncio.wait_for(self._redis.hget(cc.SESSIONS_KEY, str(token)), OP_TIMEOUT)
        self.counts.commands += 1
        if value is None:
            self.counts.resume_misses += 1
            return None
        try:
            rec = cc.SessionRecord.parse(value)
        except ProtocolError:
            self.counts.bad_events += 1
            return None
        if rec.token != token or rec.user.relay == self.config.relay_id:
            self.counts.resume_misses += 1
            return None  # ours and gone from the table: it ended
        self.counts.resumed += 1
        return rec

    # --- carrying out --------------------------------------------------------------------

    def _carry(self, changes: list[cc.Change]) -> None:
        s = self.sessions
        actions: list[Action] = []
        chats: list[Action] = []  # after the presence told before them (the stream's order)
        for ch in changes:
            if isinstance(ch, cc.UserCame):
                actions += s.remote_join(ch.user)
            elif isinstance(ch, cc.UserWent):
                actions += s.remote_leave(ch.user.user_id)
            elif isinstance(ch, cc.UserChanged):
                actions += s.remote_change(ch.user)
            elif isinstance(ch, cc.Release):
                actions += s.release(ch.token, ch.user)
            else:
                chats += s.remote_chat(ch.said)
        if actions:
            self.control.apply(actions)
        if chats:
            self.control.apply_after_presence(chats)
        self._update_mesh()

    def _update_mesh(self) -> None:
        """The router's mesh table and the welcome's relay list, if the view changed."""
        view = self.view
        if view.version == self._mesh_version:
            return
        self._mesh_version = view.version
        key_ids = {ch: kid for ch, (kid, _key) in self.sessions.media_keys.items()}
        by_key = {key_ids[ch]: dests for ch, dests in view.channel_relays().items()
                  if ch in key_ids}  # fmt: skip
        mesh = MeshTable(
            self.num, self._key, by_key, view.user_relays(), frozenset(view.relay_nums())
        )
        for router in self.routers:
            router.mesh = mesh
        # welcome.relays: the other relays alive, where a client may fail over.
        self.sessions.relays = [RelayEntry(tcp, fp) for tcp, fp in view.relay_list()]

    def line(self) -> dict[str, int]:
        """Counters for the relay's log line and metrics."""
        out = self.counts.as_dict()
        out["online"] = int(self.online)
        out["remote_users"] = len(self.view.users)
        out["relays_alive"] = len(self.view.alive)
        return out
