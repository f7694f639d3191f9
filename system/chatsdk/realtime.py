"""GET /v1/realtime: the WebSocket endpoint, and the per-worker hub that feeds it.

- Handshake: a present Origin must be in CHATSDK_ALLOWED_ORIGINS (no Origin, i.e. a server-side
  client, is allowed); then the first frame must be `{"type": "auth", "token": ...}` within 5 s.
- Every socket has one sender task that works through its queue in order: the backfill of a new
  subscription (from PostgreSQL, in pages), then live events from the pub/sub listener. Per
  channel it remembers the last `message.new` seq delivered: an older or equal seq is a
  duplicate and dropped, a seq beyond the next one is preceded by the missing range read from
  PostgreSQL (gap fill). Live events that arrive during a backfill wait in the queue and are
  then dropped or delivered by that rule, so a subscriber sees every message once, in order.
- When the pub/sub subscription comes back after a Redis outage, every socket re-checks its
  token version and memberships and fills the gap of each subscription from PostgreSQL.
- Abuse: frames are limited to 64 KB (1009), binary frames are refused (1003), an unmasked
  client frame closes the socket with 1002 (RFC 6455 5.1, wsframes.py), a socket that
  sends more than 50 frames/s sustained or keeps sending malformed frames is closed (1008), and a
  socket that cannot keep up with its events is closed (1013) rather than buffered forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from typing import Any

import asyncpg
from aiohttp import WSCloseCode, WSMsgType, web

from chatsdk import db, drainer, faults
from chatsdk.auth import User, decode_guarded, token_version, user_from_token
from chatsdk.background import stop_task
from chatsdk.errors import ApiError
from chatsdk.keys import METRICS, SETTINGS, WEBSOCKETS
from chatsdk.membership import is_member
from chatsdk.messages import MESSAGE_COLUMNS, messages_json
from chatsdk.wsframes import StrictWebSocketResponse

log = logging.getLogger("chatsdk.realtime")

routes = web.RouteTableDef()

MAX_MSG_SIZE = 64 * 1024
# aiohttp's own limit is higher: it refuses a frame from its header, before reading the rest,
# so its close frame races the unread bytes (the peer often sees a reset, not 1009). Frames up
# to this size are read whole and refused cleanly with 1009 by the handler.
PARSER_MAX_MSG_SIZE = 256 * 1024
HEARTBEAT = 20.0  # aiohttp pings every 20 s and closes a socket whose pong does not come back
AUTH_TIMEOUT = 5.0
SEND_TIMEOUT = 10.0
ACQUIRE_TIMEOUT = 3.0
DB_RETRY_FOR = 10.0  # a PostgreSQL outage shorter than this closes no socket
DB_RETRY_DELAY = 0.5
CLOSE_TIMEOUT = 2.0
MAX_QUEUE = 5000  # events waiting for one socket before it counts as too slow
MAX_SUBSCRIPTIONS = 200
BACKFILL_PAGE = 200
FRAME_RATE, FRAME_BURST = 50.0, 100.0  # per socket: more than 50 frames/s sustained is a flood
UNLIMITED = float("inf")  # a bucket of this rate lets everything through
TYPING_RATE, TYPING_BURST = 1.0, 3.0  # per socket; excess typing frames are dropped silently
MAX_BAD_FRAMES = 5
MAX_PINGS_BEFORE_AUTH = 10
MAX_ID_LENGTH = 128
MAX_SEQ = 2**62
TYPING_PUBLISH_TIMEOUT = 1.0

CLOSE_UNAUTHORIZED = 4401
CLOSE_THROTTLED = 4429  # too many failed authentication attempts (chatsdk/auththrottle.py)
# Events after which the subscription of the user named in `data.user_id` ends.
LEAVING_EVENTS = frozenset({"member.left", "member.removed"})
ENDING_EVENTS = frozenset({"channel.deleted"})

# MESSAGE_COLUMNS is a constant list of columns, not input.
BACKFILL_SQL = (
    f"SELECT {MESSAGE_COLUMNS} FROM messages "  # noqa: S608
    "WHERE app_id = $1 AND channel_id = $2 AND seq > $3 AND seq <= $4 ORDER BY seq LIMIT $5"
)
LAST_SEQ_SQL = "SELECT last_seq FROM channels WHERE app_id = $1 AND id = $2"


def _too_big(text: str) -> bool:
    # Characters first: only a long frame pays for the UTF-8 length.
    return len(text) * 4 > MAX_MSG_SIZE and len(text.encode()) > MAX_MSG_SIZE


def dumps(frame: dict[str, Any]) -> str:
    return json.dumps(frame, separators=(",", ":"), default=str)


class TokenBucket:
    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens = burst
        self.at = time.monotonic()

    def take(self) -> bool:
        if self.rate == UNLIMITED:
            return True
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


# -- what a socket's sender task works through -----------------------------------------------


@dataclass(eq=False)
class Subscription:
    channel_id: str
    after_seq: int | None  # as asked; None: only what comes after the subscription
    last_seq: int = -1  # the last message.new seq delivered; -1 until the backfill started


@dataclass(frozen=True)
class Backfill:
    sub: Subscription


@dataclass(frozen=True)
class Resync:
    pass


@dataclass(frozen=True)
class Deliver:
    channel_id: str
    type: str
    seq: int | None
    frame: str
    ends_for: str | None  # a user whose subscription ends with this event; "*" for everyone


QueueItem = Backfill | Resync | Deliver


def _valid_id(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_ID_LENGTH


class PeerGone(Exception):
    """The socket is closed: nothing more can be sent."""


class SlowPeer(Exception):
    """The client did not take a frame within SEND_TIMEOUT."""


class Session:
    """One authenticated socket."""

    def __init__(self, hub: Hub, ws: web.WebSocketResponse, user: User, version: int) -> None:
        self.hub = hub
        self.app = hub.app
        self.ws = ws
        self.user = user
        self.version = version
        self.subs: dict[str, Subscription] = {}
        self.queue: asyncio.Queue[QueueItem] = asyncio.Queue()
        self.closing = False
        self.resync_pending = False
        unlimited = faults.injected(faults.NO_WS_FRAME_LIMIT)  # test-only (chatsdk/faults.py)
        self.frames = TokenBucket(UNLIMITED if unlimited else FRAME_RATE, FRAME_BURST)
        self.typing = TokenBucket(TYPING_RATE, TYPING_BURST)
        self.bad_frames = 0

    # -- called from other tasks (the listener) ---------------------------------------------

    def push(self, item: QueueItem) -> None:
        if self.closing:
            return
        if self.queue.qsize() >= MAX_QUEUE:
            self.close_soon(WSCloseCode.TRY_AGAIN_LATER, "too slow; reconnect with your last seq")
            return
        self.queue.put_nowait(item)

    def close_soon(self, code: int, reason: str) -> None:
        if not self.closing:
            self.closing = True
            self.hub.spawn(self.close(code, reason))

    async def close(self, code: int, reason: str) -> None:
        self.closing = True
        with contextlib.suppress(Exception):
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self.ws.close(code=code, message=reason.encode())

    # -- the socket's two tasks: the reader (the handler) and the sender ---------------------

    async def serve(self) -> None:
        sender = asyncio.create_task(self.send_loop(), name="chatsdk-ws-sender")
        try:
            while not self.closing:
                msg = await self.ws.receive()
                if msg.type is WSMsgType.TEXT:
                    if _too_big(msg.data):
                        await self.close(WSCloseCode.MESSAGE_TOO_BIG, "frame too large")
                        break
                    if not self.frames.take():
                        await self.close(WSCloseCode.POLICY_VIOLATION, "too many frames")
                        break
                    try:
                        await self.on_text(msg.data)
                    except PeerGone:
                        break
                    except SlowPeer:
                        await self.close(WSCloseCode.TRY_AGAIN_LATER, "too slow")
                        break
                elif msg.type is WSMsgType.BINARY:
                    await self.close(WSCloseCode.UNSUPPORTED_DATA, "binary frames not supported")
                    break
                elif msg.type in (WSMsgType.PING, WSMsgType.PONG):
                    # Control frames count too: a ping flood is a flood.
                    if not self.frames.take():
                        await self.close(WSCloseCode.POLICY_VIOLATION, "too many frames")
                        break
                    if msg.type is WSMsgType.PING:
                        with contextlib.suppress(ConnectionError):
                            await self.ws.pong(msg.data)
                else:  # closed, closing, or a protocol error aiohttp already answered
                    break
        finally:
            self.closing = True
            self.hub.remove(self)
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender

    async def send_loop(self) -> None:
        try:
            while not self.closing:
                await self.process(await self.queue.get())
        except asyncio.CancelledError:
            raise
        except PeerGone:
            # Closed for sure, so the reader stops waiting too, even when what failed was only
            # this write and the peer would still be listening.
            await self.close(WSCloseCode.GOING_AWAY, "send failed; reconnect with your last seq")
        except SlowPeer:
            await self.close(WSCloseCode.TRY_AGAIN_LATER, "too slow; reconnect with your last seq")
        except Exception as exc:
            # PostgreSQL still unavailable after the retries: the client reconnects with its
            # last seq and misses nothing.
            if not _is_dependency_error(exc):
                log.exception("realtime sender failed")
            await self.close(WSCloseCode.TRY_AGAIN_LATER, "temporarily unavailable; reconnect")

    async def process(self, item: QueueItem) -> None:
        """One queue item; work that needs PostgreSQL is retried through a short outage (every
        step resumes from the last seq delivered, so a retry repeats nothing)."""
        give_up_at: float | None = None
        while True:
            try:
                if isinstance(item, Deliver):
                    await self.deliver(item)
                elif isinstance(item, Backfill):
                    await self.start(item.sub)
                else:
                    self.resync_pending = False
                    await self.resync()
                return
            except (PeerGone, SlowPeer):
                raise
            except Exception as exc:
                now = asyncio.get_running_loop().time()
                give_up_at = give_up_at or now + DB_RETRY_FOR
                if not _is_dependency_error(exc) or now >= give_up_at or self.closing:
                    raise
                log.debug("realtime sender retrying after %s", type(exc).__name__)
            await asyncio.sleep(DB_RETRY_DELAY)

    async def send(self, frame: str) -> None:
        try:
            async with asyncio.timeout(SEND_TIMEOUT):
                await self.ws.send_str(frame)
        except TimeoutError:
            raise SlowPeer from None
        except ConnectionError:
            raise PeerGone from None

    async def error(self, code: str, message: str, channel_id: str | None = None) -> None:
        frame: dict[str, Any] = {"type": "error", "code": code, "message": message}
        if channel_id is not None:
            frame["channel_id"] = channel_id
        with contextlib.suppress(PeerGone, SlowPeer):
            await self.send(dumps(frame))

    # -- the sender's work -------------------------------------------------------------------

    async def start(self, sub: Subscription) -> None:
        if self.subs.get(sub.channel_id) is not sub:
            return
        if sub.after_seq is None:
            last = await db.pool(self.app).fetchval(LAST_SEQ_SQL, self.user.app_id, sub.channel_id)
            sub.last_seq = int(last or 0)
        else:
            sub.last_seq = sub.after_seq
        await self.backfill(sub, None)
        if self.subs.get(sub.channel_id) is sub:
            await self.send(
                dumps({"type": "subscribed", "channel_id": sub.channel_id, "seq": sub.last_seq})
            )

    async def backfill(self, sub: Subscription, up_to: int | None) -> None:
        """Deliver messages after sub.last_seq (up to `up_to`) from PostgreSQL, in pages."""
        limit = MAX_SEQ if up_to is None else up_to
        metrics = self.app[METRICS]
        while sub.last_seq < limit:
            async with db.pool(self.app).acquire(timeout=ACQUIRE_TIMEOUT) as conn:
                rows = await conn.fetch(
                    BACKFILL_SQL,
                    self.user.app_id,
                    sub.channel_id,
                    sub.last_seq,
                    limit,
                    BACKFILL_PAGE,
                )
                page = await messages_json(conn, rows)
            for row, data in zip(rows, page, strict=True):
                if self.subs.get(sub.channel_id) is not sub:
                    return
                await self.send(
                    dumps(
                        {
                            "type": "message.new",
                            "channel_id": sub.channel_id,
                            "seq": row["seq"],
                            "data": data,
                        }
                    )
                )
                sub.last_seq = int(row["seq"])
                metrics.messages_received.inc()
            if len(rows) < BACKFILL_PAGE:
                return

    async def deliver(self, item: Deliver) -> None:
        sub = self.subs.get(item.channel_id)
        if sub is None or sub.last_seq < 0:
            return  # not subscribed, or its backfill (queued behind) will cover it
        if item.type == "message.new" and item.seq is not None:
            if item.seq <= sub.last_seq:
                return  # a duplicate, or already delivered by a backfill
            if item.seq > sub.last_seq + 1:
                await self.backfill(sub, item.seq - 1)  # the gap, from PostgreSQL
                if self.subs.get(item.channel_id) is not sub or item.seq <= sub.last_seq:
                    return
            await self.send(item.frame)
            sub.last_seq = item.seq
            self.app[METRICS].messages_received.inc()
        else:
            await self.send(item.frame)
        if item.ends_for in ("*", self.user.user_id):
            self.drop(item.channel_id)

    async def resync(self) -> None:
        """After the pub/sub subscription came back: what happened while it was down."""
        pool = db.pool(self.app)
        version = await token_version(pool, self.user.app_id, self.user.user_id)
        if version != self.version:
            await self.close(CLOSE_UNAUTHORIZED, "token revoked")
            return
        for channel_id, sub in list(self.subs.items()):
            if sub.last_seq < 0 or self.subs.get(channel_id) is not sub:
                continue
            if not await is_member(self.app, self.user.app_id, channel_id, self.user.user_id):
                self.drop(channel_id)
                await self.send(
                    dumps(
                        {"type": "unsubscribed", "channel_id": channel_id, "reason": "not_member"}
                    )
                )
                continue
            await self.backfill(sub, None)

    def drop(self, channel_id: str) -> None:
        self.subs.pop(channel_id, None)
        self.hub.unsubscribe(self, channel_id)

    # -- client frames -----------------------------------------------------------------------

    async def on_text(self, data: str) -> None:
        try:
            frame = json.loads(data)
        except ValueError:
            frame = None
        if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
            self.bad_frames += 1
            if self.bad_frames >= MAX_BAD_FRAMES:
                await self.close(WSCloseCode.POLICY_VIOLATION, "too many malformed frames")
                return
            await self.error("invalid_frame", "A frame is a JSON object with a string type.")
            return
        kind = frame["type"]
        if kind == "ping":
            await self.send(dumps({"type": "pong"}))
        elif kind == "subscribe":
            await self.subscribe(frame)
        elif kind == "unsubscribe":
            await self.unsubscribe(frame)
        elif kind == "typing":
            await self.on_typing(frame)
        elif kind == "auth":
            await self.error("already_authenticated", "This socket is already authenticated.")
        else:
            await self.error(
                "unknown_type",
                "The frame type is not one of: subscribe, unsubscribe, typing, ping.",
            )

    async def subscribe(self, frame: dict[str, Any]) -> None:
        channel_id = frame.get("channel_id")
        after_seq = frame.get("after_seq")
        if not _valid_id(channel_id):
            await self.error("invalid_input", "channel_id must be a channel id.")
            return
        assert isinstance(channel_id, str)
        if after_seq is not None and (
            not isinstance(after_seq, int)
            or isinstance(after_seq, bool)
            or not 0 <= after_seq < MAX_SEQ
        ):
            await self.error(
                "invalid_input", "after_seq must be a non-negative integer.", channel_id
            )
            return
        if channel_id not in self.subs and len(self.subs) >= MAX_SUBSCRIPTIONS:
            await self.error(
                "too_many_subscriptions",
                f"A socket may subscribe to at most {MAX_SUBSCRIPTIONS} channels.",
                channel_id,
            )
            return
        if not await self.member_of(channel_id):
            return
        sub = Subscription(channel_id, after_seq)
        self.subs[channel_id] = sub
        # Registered before the backfill reads PostgreSQL: nothing published from now on is
        # missed, and what the backfill also delivers is dropped as a duplicate.
        self.hub.subscribe(self, channel_id)
        self.push(Backfill(sub))

    async def unsubscribe(self, frame: dict[str, Any]) -> None:
        channel_id = frame.get("channel_id")
        if not _valid_id(channel_id):
            await self.error("invalid_input", "channel_id must be a channel id.")
            return
        assert isinstance(channel_id, str)
        self.drop(channel_id)
        await self.send(dumps({"type": "unsubscribed", "channel_id": channel_id}))

    async def on_typing(self, frame: dict[str, Any]) -> None:
        channel_id = frame.get("channel_id")
        if not _valid_id(channel_id):
            await self.error("invalid_input", "channel_id must be a channel id.")
            return
        assert isinstance(channel_id, str)
        if not self.typing.take():
            return  # ephemeral: excess typing frames are dropped, not answered
        if channel_id not in self.subs and not await self.member_of(channel_id):
            return
        user_id = self.user.user_id
        payload = dumps(
            {
                "type": "typing",
                "app_id": self.user.app_id,
                "channel_id": channel_id,
                "user_id": user_id,
                "data": {"user_id": user_id},
            }
        )
        self.hub.spawn(self.hub.publish_typing(payload))

    async def member_of(self, channel_id: str) -> bool:
        """Membership, answering the client itself when it is not a member. PostgreSQL failing
        is retried through a short outage, then the socket is closed with 1013: a client never
        holds an open socket on which a subscription it asked for silently does not exist."""
        give_up_at = asyncio.get_running_loop().time() + DB_RETRY_FOR
        while True:
            try:
                member = await is_member(self.app, self.user.app_id, channel_id, self.user.user_id)
                break
            except Exception as exc:
                if not _is_dependency_error(exc):
                    raise
                if self.closing or asyncio.get_running_loop().time() >= give_up_at:
                    self.close_soon(
                        WSCloseCode.TRY_AGAIN_LATER, "temporarily unavailable; reconnect"
                    )
                    return False
            await asyncio.sleep(DB_RETRY_DELAY)
        if not member:
            await self.error("not_found", "No channel with this id is visible to you.", channel_id)
        return member


def _is_dependency_error(exc: BaseException) -> bool:
    """PostgreSQL (or the pool) failing, as opposed to a bug."""
    if isinstance(exc, ApiError):
        return exc.status == 503
    return isinstance(
        exc,
        OSError
        | TimeoutError
        | asyncpg.PostgresError
        | asyncpg.InterfaceError
        | asyncpg.InternalClientError,  # a pooled connection the server terminated (a restart)
    )


# -- the hub: this worker's sockets, by channel and by user -----------------------------------


class Hub:
    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.sessions: set[Session] = set()
        self.channels: dict[str, set[Session]] = {}
        self.users: dict[tuple[str, str], set[Session]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def add(self, session: Session) -> None:
        self.sessions.add(session)
        key = (session.user.app_id, session.user.user_id)
        self.users.setdefault(key, set()).add(session)

    def remove(self, session: Session) -> None:
        self.sessions.discard(session)
        key = (session.user.app_id, session.user.user_id)
        _discard(self.users, key, session)
        for channel_id in list(session.subs):
            _discard(self.channels, channel_id, session)
        session.subs.clear()

    def subscribe(self, session: Session, channel_id: str) -> None:
        self.channels.setdefault(channel_id, set()).add(session)

    def unsubscribe(self, session: Session, channel_id: str) -> None:
        _discard(self.channels, channel_id, session)

    def on_subscribed(self) -> None:
        for session in list(self.sessions):
            if not session.resync_pending:
                session.resync_pending = True
                session.push(Resync())

    def on_event(self, raw: bytes) -> None:
        try:
            event = json.loads(raw)
            kind, app_id = event["type"], event["app_id"]
        except (ValueError, KeyError, TypeError):
            log.warning("dropped a malformed event from the pub/sub channel")
            return
        if kind == "user.revoked":
            for session in list(self.users.get((app_id, event.get("user_id")), ())):
                session.close_soon(CLOSE_UNAUTHORIZED, "token revoked")
            return
        channel_id = event.get("channel_id")
        sessions = self.channels.get(channel_id) if isinstance(channel_id, str) else None
        if not sessions:
            return
        assert isinstance(channel_id, str)
        seq = event.get("seq")
        data = event.get("data")
        frame: dict[str, Any] = {"type": kind, "channel_id": channel_id}
        if seq is not None:
            frame["seq"] = seq
        frame["data"] = data
        ends_for: str | None = None
        if kind in ENDING_EVENTS:
            ends_for = "*"
        elif kind in LEAVING_EVENTS and isinstance(data, dict):
            leaving = data.get("user_id")
            ends_for = leaving if isinstance(leaving, str) else None
        item = Deliver(
            channel_id, kind, seq if isinstance(seq, int) else None, dumps(frame), ends_for
        )
        actor = event.get("user_id")
        for session in list(sessions):
            if session.user.app_id != app_id:
                continue
            if kind == "typing" and session.user.user_id == actor:
                continue  # nobody needs their own typing indicator
            session.push(item)

    async def publish_typing(self, payload: str) -> None:
        try:
            async with asyncio.timeout(TYPING_PUBLISH_TIMEOUT):
                await drainer.publish(self.app, payload)
        except Exception as exc:  # ephemeral: lost while Redis is down, by design
            log.debug("typing event not published: %s", type(exc).__name__)

    async def close(self) -> None:
        await asyncio.gather(*(stop_task(task) for task in list(self._tasks)))


def _discard(index: dict[Any, set[Session]], key: Any, session: Session) -> None:
    sessions = index.get(key)
    if sessions is not None:
        sessions.discard(session)
        if not sessions:
            del index[key]


HUB = web.AppKey("realtime_hub", Hub)


async def hub_context(app: web.Application) -> AsyncIterator[None]:
    hub = Hub(app)
    app[HUB] = hub
    listener = asyncio.create_task(
        drainer.listen(app, hub.on_event, hub.on_subscribed), name="chatsdk-pubsub-listener"
    )
    yield
    await stop_task(listener)
    await hub.close()


cleanup_contexts = [drainer.outbox_drainer_context, hub_context]


# -- the endpoint -----------------------------------------------------------------------------


def _origin_allowed(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    if origin is None:
        return True  # not a browser: a server-side client holds its own credentials
    allowed = {o.lower() for o in request.app[SETTINGS].allowed_origins}
    return origin.strip().rstrip("/").lower() in allowed


@routes.get("/v1/realtime")
async def realtime(request: web.Request) -> web.StreamResponse:
    if not _origin_allowed(request):
        raise ApiError(403, "origin_not_allowed", "This Origin may not open a realtime connection.")
    # autoping off: the handler answers pings itself, so they count against the flood limit
    # and cannot keep an unauthenticated socket open; aiohttp still sends the heartbeat pings
    # and closes a socket that has sent nothing (no pong either) for half a heartbeat after one.
    # Strict: a client frame without a mask is closed with 1002 (RFC 6455 5.1; wsframes.py).
    ws = StrictWebSocketResponse(
        max_msg_size=PARSER_MAX_MSG_SIZE, heartbeat=HEARTBEAT, autoping=False, compress=False
    )
    if not ws.can_prepare(request).ok:
        raise ApiError(
            426,
            "upgrade_required",
            "GET /v1/realtime is a WebSocket endpoint.",
            {"Upgrade": "websocket", "Connection": "Upgrade"},
        )
    await ws.prepare(request)
    sockets = request.app[WEBSOCKETS]
    sockets.add(ws)
    metrics = request.app[METRICS]
    try:
        session = await authenticate(request, ws)
        if session is not None:
            metrics.active_websockets.inc()
            try:
                await session.serve()
            finally:
                metrics.active_websockets.dec()
    except Exception:
        log.exception("realtime socket failed")
        with contextlib.suppress(Exception):
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await ws.close(code=WSCloseCode.INTERNAL_ERROR, message=b"internal error")
    finally:
        sockets.discard(ws)
        if not ws.closed:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await ws.close()
    return ws


async def _refuse(ws: web.WebSocketResponse, code: int, reason: str) -> None:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await ws.close(code=code, message=reason.encode())


class Refused(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


async def _first_data_frame(ws: web.WebSocketResponse) -> str:
    """The first text frame, within AUTH_TIMEOUT; pings before it do not extend the wait."""
    try:
        async with asyncio.timeout(AUTH_TIMEOUT):
            msg = await ws.receive()
            pings = 0
            while msg.type in (WSMsgType.PING, WSMsgType.PONG):
                pings += 1
                if pings > MAX_PINGS_BEFORE_AUTH:
                    raise Refused(WSCloseCode.POLICY_VIOLATION, "too many frames")
                if msg.type is WSMsgType.PING:
                    with contextlib.suppress(ConnectionError):
                        await ws.pong(msg.data)
                msg = await ws.receive()
    except TimeoutError:
        raise Refused(CLOSE_UNAUTHORIZED, "auth frame expected within 5 s") from None
    if msg.type is not WSMsgType.TEXT:
        raise Refused(CLOSE_UNAUTHORIZED, "auth frame expected")
    return str(msg.data)


def _token_of(data: str) -> str:
    try:
        frame = json.loads(data)
    except ValueError:
        frame = None
    token = frame.get("token") if isinstance(frame, dict) and frame.get("type") == "auth" else None
    if not isinstance(token, str) or not token or len(token) > 4096:
        raise Refused(CLOSE_UNAUTHORIZED, "auth frame expected")
    return token


def _refusal_of(error: ApiError) -> Refused:
    """The close code and reason for a token the auth step refused."""
    if error.status == 429:
        wait = error.headers.get("Retry-After", "1")
        return Refused(CLOSE_THROTTLED, f"too many failed authentications; retry in {wait} s")
    return Refused(CLOSE_UNAUTHORIZED, "invalid token")


async def authenticate(request: web.Request, ws: web.WebSocketResponse) -> Session | None:
    app = request.app
    try:
        token = _token_of(await _first_data_frame(ws))
        try:
            claims = await decode_guarded(request, token, "access")
        except ApiError as error:
            raise _refusal_of(error) from None
    except Refused as refused:
        if not ws.closed:
            await _refuse(ws, refused.code, refused.reason)
        return None
    hub = app[HUB]
    session = Session(hub, ws, User(claims["app"], claims["sub"]), claims["ver"])
    # Registered before the revocation check: a revocation committed after the check reaches
    # this session through pub/sub; one committed before it fails the check.
    hub.add(session)
    try:
        await user_from_token(app, token)
    except Exception as exc:
        hub.remove(session)
        if isinstance(exc, ApiError) and exc.status == 401:
            await _refuse(ws, CLOSE_UNAUTHORIZED, "token revoked")
        elif isinstance(exc, ApiError) or _is_dependency_error(exc):
            await _refuse(ws, WSCloseCode.TRY_AGAIN_LATER, "temporarily unavailable")
        else:
            raise
        return None
    with contextlib.suppress(PeerGone, SlowPeer):  # the reader then sees the socket closed
        await session.send(
            dumps(
                {
                    "type": "authenticated",
                    "app_id": session.user.app_id,
                    "user_id": session.user.user_id,
                }
            )
        )
    return session
