"""JSON-RPC over WebSocket on GET /: every message goes through the router an HTTP body goes
through (local methods, batches, metrics, the caller's CallContext); what the router forwards
goes over this client's own connection to the node's WebSocket, and the node's notifications
come back on this socket.

Per connection: a message rate limit, at most MAX_PENDING messages handled at once (reading
pauses beyond), a send queue bounded in bytes (a slow reader pauses its own relay from the
node, and is disconnected when one message waits longer than --ws-send-timeout), an idle
timeout and pings. Every close the proxy makes carries a code and a reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import WSCloseCode, WSMsgType, web
from aiohttp._websocket.reader import WebSocketReader
from aiohttp.helpers import DEFAULT_CHUNK_SIZE

from signer_proxy.access.auth import Identity
from signer_proxy.access.ratelimit import TokenBucket
from signer_proxy.config import Settings
from signer_proxy.errors import RateLimited, ResourceUnavailable, SignerProxyError
from signer_proxy.jsonrpc import Body, Call, CallContext, dumps, error_response, parse_body
from signer_proxy.ops.logs import REQUEST_ID, REQUEST_ID_HEADER
from signer_proxy.ops.metrics import METRICS, Metrics, method_family, outcome_of_code
from signer_proxy.ops.shutdown import IN_FLIGHT, InFlight
from signer_proxy.router import Router
from signer_proxy.slots import Slots
from signer_proxy.transport.chains import ROUTES, ChainRoute
from signer_proxy.transport.door import admit, call_context, charge
from signer_proxy.transport.http import refusal_response
from signer_proxy.upstream.credentials import upstream_auth
from signer_proxy.upstream.ws import (
    PING_INTERVAL,
    CoarseHeartbeat,
    NodeSocket,
    TakingQueue,
    UpstreamSocket,
    derive_ws_url,
)

log = logging.getLogger(__name__)

# Messages of one connection handled at once; past it the proxy stops reading that socket
# until one finishes, so a client cannot queue unbounded work (TCP pushes back on it).
MAX_PENDING = 100
# Seconds to wait for the client's answer to our close frame.
CLOSE_TIMEOUT = 2.0
# Seconds a shutdown waits for queued replies to reach a client before closing it anyway,
# then for the close frame to be written.
SHUTDOWN_FLUSH = 1.0
SHUTDOWN_ANSWER = 0.1
GOING_AWAY = WSCloseCode.GOING_AWAY
# RFC 6455: a close frame's reason is at most 123 bytes of UTF-8.
MAX_CLOSE_REASON = 123

SHUTDOWN_REASON = "signer-proxy is shutting down; reconnect (to another instance) and retry"


_SUBSCRIPTION_METHODS = ("eth_subscribe", "eth_unsubscribe")


def close_reason(text: str) -> bytes:
    """`text` as a close frame's reason: UTF-8, cut to 123 bytes on a character boundary."""
    return text.encode()[:MAX_CLOSE_REASON].decode(errors="ignore").encode()


# The reasons the proxy closes a client's socket with (each within 123 bytes; tested).


def idle_reason(seconds: float) -> str:
    return f"idle for {seconds:g} s with no call and no subscription; reconnect when needed"


def slow_reader_reason(seconds: float) -> str:
    return f"the client read too slowly: a message waited over {seconds:g} s to be sent"


def too_big_reason(limit: int) -> str:
    return f"a message was over the limit of {limit} bytes (--max-body-bytes); send smaller ones"


def full_reason(limit: int) -> str:
    return f"signer-proxy has its maximum of {limit} WebSocket connections; try again later"


class ClientGone(Exception):
    """The client connection is closed: nothing more can be queued for it."""


class SendQueue:
    """Messages waiting for one client, bounded in bytes: `put` waits for room (backpressure
    on whoever produces them); a message larger than the bound passes when the queue is empty.

    Every change wakes whoever waits, and each rechecks what it waits for. One event loop
    thread runs all of it, and nothing awaits between a check and its change, so no lock is
    needed. An asyncio.Condition took its lock three times per message.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._items: deque[bytes] = deque()
        self._bytes = 0
        self._unsent = 0  # queued, or taken by the writer and not yet sent
        self._closed = False
        self._waiters: list[asyncio.Future[None]] = []
        self.high_water = 0

    @property
    def queued_bytes(self) -> int:
        return self._bytes

    def _changed(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():  # a cancelled waiter is skipped
                waiter.set_result(None)

    async def _until(self, ready: Callable[[], bool]) -> None:
        while not ready():
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter

    def _room_for(self, size: int) -> bool:
        return self._closed or not self._items or self._bytes + size <= self._limit

    async def put(self, data: bytes) -> None:
        if not self._room_for(len(data)):
            await self._until(lambda: self._room_for(len(data)))
        if self._closed:
            raise ClientGone
        self._items.append(data)
        self._bytes += len(data)
        self._unsent += 1
        self.high_water = max(self.high_water, self._bytes)
        if self._waiters:
            self._changed()

    async def get(self) -> bytes:
        if not (self._closed or self._items):
            await self._until(lambda: self._closed or bool(self._items))
        if self._closed:
            raise ClientGone
        data = self._items.popleft()
        self._bytes -= len(data)
        if self._waiters:
            self._changed()
        return data

    async def sent(self) -> None:
        """The writer has sent (or given up on) a message it took."""
        self._unsent -= 1
        if self._waiters:
            self._changed()

    async def flushed(self) -> None:
        """Wait until every queued message has been sent (or the queue is closed)."""
        await self._until(lambda: self._closed or self._unsent == 0)

    async def close(self) -> None:
        """Drop what is queued; every waiting and later put or get raises ClientGone."""
        self._closed = True
        self._items.clear()
        self._bytes = 0
        self._changed()


@dataclass(frozen=True, slots=True)
class Limits:
    """The per-connection limits, from the settings."""

    max_connections: int
    max_message_bytes: int
    max_batch: int
    messages_per_second: float
    idle_timeout: float
    send_queue_bytes: int
    send_timeout: float

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            max_connections=settings.ws_max_connections,
            max_message_bytes=settings.max_body_bytes,
            max_batch=settings.max_batch,
            messages_per_second=settings.ws_messages_per_second,
            idle_timeout=settings.ws_idle_timeout,
            send_queue_bytes=settings.ws_send_queue_bytes,
            send_timeout=settings.ws_send_timeout,
        )


class ClientSocket(CoarseHeartbeat, web.WebSocketResponse):
    """aiohttp's server socket, with a reason on the 1009 close it sends for a large message
    and a heartbeat that costs nothing per message (CoarseHeartbeat)."""

    too_big_reason = b""
    last_ping = 0.0  # the loop's clock at the client's last ping

    def _post_start(self, request: Any, protocol: str | None, writer: Any) -> None:
        # aiohttp's own (3.14, pinned), with a TakingQueue where it makes its queue: the
        # connection offers each call to ClientConnection._take_now as its last byte arrives.
        self._ws_protocol = protocol
        self._writer = writer
        self._reset_heartbeat()
        assert self._loop is not None
        self._reader = TakingQueue(request._protocol, DEFAULT_CHUNK_SIZE, loop=self._loop)
        self._parser = WebSocketReader(
            self._reader,
            self._max_msg_size,
            compress=bool(self._compress),
            decode_text=self._decode_text,
        )
        received = None if self._heartbeat is None else self._on_data_received
        request.protocol.set_parser(self._parser, data_received_cb=received)
        request.protocol.keep_alive(False)  # as aiohttp: no HTTP keep-alive after an upgrade

    def offer(self, take: Callable[[bytes], bool] | None) -> None:
        """Offer each text message to `take` before it is queued for `receive()`; None: no
        more offers."""
        reader = self._reader
        if isinstance(reader, TakingQueue):
            reader.take = take

    async def pong(self, message: bytes = b"") -> None:
        # receive() answers a client's ping here and reads on without returning it; a ping is
        # a message from the client all the same, and the idle watchdog counts it.
        self.last_ping = asyncio.get_running_loop().time()
        await super().pong(message)

    async def close(
        self, *, code: int = WSCloseCode.OK, message: bytes = b"", drain: bool = True
    ) -> bool:
        if code == WSCloseCode.MESSAGE_TOO_BIG and not message:
            message = self.too_big_reason
        return await super().close(code=code, message=message, drain=drain)


class ClientConnection:
    """One client's WebSocket: reads and routes its messages, writes replies and notifications
    through a bounded queue, and owns its connection to the node."""

    def __init__(
        self,
        socket: ClientSocket,
        transport: asyncio.BaseTransport | None,
        router: Router,
        context: CallContext,
        node: WebSockets,
        in_flight: InFlight,
        metrics: Metrics,
        app: web.Application,
        identity: Identity,
        route: ChainRoute | None = None,
    ) -> None:
        self._app = app
        self._identity = identity
        self._socket = socket
        self._transport = transport
        self._router = router
        self._context = context
        self._in_flight = in_flight
        self._metrics = metrics
        self._node = node
        self._limits = limits = node.limits
        self._queue = SendQueue(limits.send_queue_bytes)
        rate = limits.messages_per_second
        # Bursts of up to one second's worth of messages (at least one message).
        self._bucket = TokenBucket(rate, max(rate, 1.0), time.monotonic()) if rate > 0 else None
        self._slots = Slots(MAX_PENDING)
        self._loop = asyncio.get_running_loop()
        self._reading = False  # the read loop is taking a message (see _take_now)
        self._tasks: set[asyncio.Task[None]] = set()
        self._background: set[asyncio.Task[None]] = set()
        self._closing = False
        self._close_at_start: tuple[int, str] | None = None
        assert node.session is not None, "the WebSocket session starts with the app"
        self.upstream = UpstreamSocket(
            node.url if route is None else route.ws_url,
            node.session,
            node.timeout,
            self._notify,
            self._upstream_lost,
            node.upgrade_headers if route is None else route.ws_upgrade_headers,
        )
        # Most messages need nothing of their own from the node connection: they share one
        # router over it, made here. A subscription call gets its own (see `_handle`).
        self._shared_router = router.with_upstream(
            metrics.upstream(self.upstream.for_message(None), context.chain)
        )
        self._last_read = 0.0  # the loop's clock when the last message arrived
        self._watchdog: asyncio.TimerHandle | None = None

    @property
    def queue(self) -> SendQueue:
        return self._queue

    async def run(self) -> None:
        """Serve the connection until either side closes it; then release everything, even
        when cancelled (aiohttp may cancel a handler whose client has gone)."""
        writer = asyncio.create_task(self._write())
        try:
            if self._close_at_start is not None:
                code, reason = self._close_at_start
                await self._socket.close(code=code, message=close_reason(reason))
            await self._read()
        finally:
            await asyncio.shield(asyncio.create_task(self._release(writer)))

    async def _release(self, writer: asyncio.Task[None]) -> None:
        try:
            self._closing = True
            await self._queue.close()
            await self.upstream.close()
            if self._tasks:  # local calls (a signature, a send) finish; their replies are dropped
                await asyncio.wait(list(self._tasks))
            writer.cancel()
            await asyncio.wait([writer, *self._background])
        finally:
            self._node.discard(self)

    async def close(
        self, code: int, reason: str, wait: float | None = None, answer: float = CLOSE_TIMEOUT
    ) -> None:
        """Take no new calls, let those in progress answer and the queue be sent (within
        `wait` seconds, default --ws-send-timeout), then close with `code` and `reason`,
        waiting up to `answer` seconds for the client's close frame."""
        if self._closing:
            return
        self._closing = True
        if not self._socket.prepared:  # still in its handshake: run() closes it at once
            self._close_at_start = (code, reason)
            return
        wait = self._limits.send_timeout if wait is None else wait
        deadline = time.monotonic() + wait
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=wait)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(deadline - time.monotonic(), 0.0)):
                await self._queue.flushed()
        log.info("closing WebSocket (%d): %s", code, reason)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(answer):
                await self._socket.close(code=code, message=close_reason(reason))

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        self._last_read = loop.time()
        if self._limits.idle_timeout:
            self._watchdog = loop.call_later(self._limits.idle_timeout, self._idle_check)
        try:
            await self._read_messages(loop)
        finally:
            if self._watchdog is not None:
                self._watchdog.cancel()

    def _idle_check(self) -> None:
        """The idle watchdog: close a connection with no message for --ws-idle-timeout, no
        call in progress and no subscription. One timer per connection, not a timeout scope
        around every receive (which cost a Timeout object and a timer per message)."""
        idle = self._limits.idle_timeout
        loop = asyncio.get_running_loop()
        quiet = loop.time() - max(self._last_read, self._socket.last_ping)
        if quiet < idle:
            self._watchdog = loop.call_later(idle - quiet, self._idle_check)
            return
        if self._tasks or self.upstream.subscriptions or self._closing:
            self._watchdog = loop.call_later(idle, self._idle_check)
            return
        self._watchdog = None
        # close() ends the receive under way in _read, which then returns.
        self._in_background(self.close(WSCloseCode.OK, idle_reason(idle)))

    async def _read_messages(self, loop: asyncio.AbstractEventLoop) -> None:
        self._socket.offer(self._take_now)
        try:
            await self._read_loop(loop)
        finally:
            self._socket.offer(None)

    def _take_now(self, raw: bytes) -> bool:
        """Start on a call as its last byte arrives, in the connection's data callback
        (TakingQueue), instead of waking the read loop for it. Only when that loop is idle
        (nothing overtakes an earlier message) and the call needs no waiting: a slot is free,
        the rate limits let it through, it parses. Anything else (a refusal to queue, an
        error reply, a full connection) returns False, before anything is spent, and the read
        loop takes the message in order, as every message used to be taken."""
        if self._reading or self._closing or self._in_flight.draining or not self._slots.free:
            return False
        try:
            body = parse_body(raw, self._limits.max_batch)
        except Exception:  # nothing may raise into aiohttp's parser
            return False  # its error reply is the read loop's to queue
        bucket = self._bucket
        if bucket is not None and bucket.take(1.0, time.monotonic()):
            return False  # over the message rate: nothing was spent; the loop refuses it
        try:
            charge(self._app, self._identity, len(body.calls))
        except RateLimited:
            if bucket is not None:
                bucket.give_back(1.0)  # the read loop takes it again, and refuses it
            return False
        self._slots.try_take()  # free: checked above, and nothing since could take it
        self._last_read = self._loop.time()
        task = self._loop.create_task(self._handle(body, raw))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _read_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            message = await self._socket.receive()
            self._last_read = loop.time()
            if message.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                data = message.data
                self._reading = True  # no call may start ahead of this one (_take_now)
                try:
                    await self._take(data if isinstance(data, bytes) else data.encode())
                except ClientGone:
                    return
                finally:
                    self._reading = False
            elif message.type == WSMsgType.ERROR:
                log.debug("WebSocket client error: %s", self._socket.exception())
            elif message.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                return

    async def _take(self, raw: bytes) -> None:
        """Route one message from the client, or answer it with why it was refused."""
        refusal: SignerProxyError | None = None
        wait = 0.0 if self._bucket is None else self._bucket.take(1.0, time.monotonic())
        if wait:
            refusal = RateLimited(
                f"over the limit of {self._limits.messages_per_second:g} messages per second on "
                "this WebSocket; slow down, or raise --ws-messages-per-second",
                retry_after=wait,
            )
        elif self._in_flight.draining:
            refusal = ResourceUnavailable(
                "signer-proxy is shutting down and takes no new calls; retry on a new connection"
            )
        elif self._closing:
            refusal = ResourceUnavailable(
                "this WebSocket is closing and takes no new calls; retry on a new connection"
            )
        try:
            body = parse_body(raw, self._limits.max_batch)
            if refusal is None:  # the client's own rate limit, one token per call as on HTTP
                charge(self._app, self._identity, len(body.calls))
        except RateLimited as exc:
            body, refusal = parse_body(raw, self._limits.max_batch), exc
        except SignerProxyError as exc:
            self._metrics.count_rejected_body(exc)
            await self._queue.put(dumps(error_response(None, exc)))
            return
        if refusal is not None:
            await self._refuse(body, refusal)
            return
        await self._slots.take()
        task = asyncio.create_task(self._handle(body, raw))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _refuse(self, body: Body, error: SignerProxyError) -> None:
        replies = []
        outcome = outcome_of_code(error.error_code())
        for call in body.calls:
            if isinstance(call, Call):
                family = method_family(call.method, self._router.is_local(call.method))
                self._metrics.count_call(family, outcome, self._context.chain)
                if call.is_notification:
                    continue
            else:
                self._metrics.count_call("invalid", outcome, self._context.chain)
            replies.append(error_response(call.id, error))
        if replies:
            await self._queue.put(dumps(replies if body.is_batch else replies[0]))

    async def _handle(self, body: Body, raw: bytes) -> None:
        router = self._shared_router
        delivered: asyncio.Event | None = None
        if any(
            isinstance(call, Call) and call.method in _SUBSCRIPTION_METHODS for call in body.calls
        ):
            # The node's reader waits for this reply to be queued before it reads on, so the
            # subscription's id reaches the client before its first notification.
            delivered = asyncio.Event()
            upstream = self.upstream.for_message(delivered)
            router = self._router.with_upstream(
                self._metrics.upstream(upstream, self._context.chain)
            )
        in_flight = self._in_flight
        in_flight.enter()
        try:
            reply = await router.handle(body, raw, self._context)
            if reply is not None:
                payload = reply if isinstance(reply, bytes) else dumps(reply)
                await self._queue.put(payload)
        except ClientGone:
            pass
        except Exception:
            log.exception("a WebSocket message could not be handled")
        finally:
            in_flight.leave()
            if delivered is not None:
                delivered.set()
            self._slots.release()

    async def _write(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                data = await self._queue.get()
                # A timer, not a timeout: cancelling a send would cancel aiohttp's drain waiter,
                # which the protocol shares with every later send (the close frame's included).
                stalled = loop.call_later(self._limits.send_timeout, self._stalled)
                try:
                    await self._socket.send_frame(data, WSMsgType.TEXT)
                finally:
                    stalled.cancel()
                    await self._queue.sent()
        except (ClientGone, ConnectionError):
            return

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` as a task this connection keeps until it ends (`_release` waits for it)."""
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _stalled(self) -> None:
        """A message has waited --ws-send-timeout for the client to read: disconnect it."""
        self._in_background(self._close_slow_client())

    async def _close_slow_client(self) -> None:
        self._closing = True
        await self._queue.close()  # nobody waits for room that will not come
        reason = slow_reader_reason(self._limits.send_timeout)
        log.warning("closing WebSocket (1008): %s", reason)
        # The close frame may be stuck behind what the client does not read: if it is not
        # through in time, drop the connection (which also ends the stuck send).
        abort = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, self._abort)
        try:
            await self._socket.close(
                code=WSCloseCode.POLICY_VIOLATION, message=close_reason(reason)
            )
        finally:
            abort.cancel()
        self._abort()  # a plain close of the transport would wait for its buffer to drain

    def _abort(self) -> None:
        if isinstance(self._transport, asyncio.WriteTransport):
            self._transport.abort()

    async def _notify(self, raw: bytes) -> None:
        """A notification from the node (subscription data), as the node sent it."""
        with contextlib.suppress(ClientGone):
            await self._queue.put(raw)

    def _upstream_lost(self, reason: str) -> None:
        self._in_background(self.close(WSCloseCode.BAD_GATEWAY, reason))


class WebSockets:
    """The app's WebSocket side: the limits, the node's WebSocket URL, the client session for
    node connections (its own: they are long-lived and must not take the HTTP pool's slots),
    and the open client connections."""

    def __init__(self, settings: Settings) -> None:
        self.limits = Limits.from_settings(settings)
        # The default chain's node (each chain's route carries its own: transport/chains.py).
        self.url, self.upgrade_headers = node_socket(settings)
        self.timeout = settings.upstream_timeout
        self.connect_timeout = settings.upstream_connect_timeout
        self.session: aiohttp.ClientSession | None = None
        self.open: set[ClientConnection] = set()
        self.none_open = asyncio.Event()
        self.none_open.set()

    def add(self, connection: ClientConnection) -> None:
        self.open.add(connection)
        self.none_open.clear()

    def discard(self, connection: ClientConnection) -> None:
        self.open.discard(connection)
        if not self.open:
            self.none_open.set()


WEBSOCKETS = web.AppKey("websockets", WebSockets)


def node_socket(settings: Settings) -> tuple[str, Callable[[], Mapping[str, str]] | None]:
    """The node's WebSocket URL for `settings`' chain and the credentials its upgrade carries."""
    if not (settings.upstream_ws or settings.upstream):
        return "", None  # several chains: no top-level node
    url = settings.upstream_ws or derive_ws_url(settings.upstream)
    auth = upstream_auth(url, settings)
    return url, None if auth is None else auth.upgrade_headers


async def handle_websocket(request: web.Request) -> web.StreamResponse:
    """GET /: upgrade to a JSON-RPC WebSocket (a plain GET is told to POST or upgrade)."""
    app = request.app
    node = app[WEBSOCKETS]
    socket = ClientSocket(
        max_msg_size=node.limits.max_message_bytes,
        heartbeat=PING_INTERVAL,
        timeout=CLOSE_TIMEOUT,
        decode_text=False,
    )
    socket.too_big_reason = close_reason(too_big_reason(node.limits.max_message_bytes))
    # The HTTP door first, before aiohttp looks at the upgrade (it logs the subprotocols a
    # client offers, where browsers put API keys): a refusal is a plain 401/403.
    try:
        identity = admit(request)
    except SignerProxyError as exc:
        return refusal_response(request, exc)
    if not socket.can_prepare(request).ok:
        return web.Response(
            status=400, text="signer-proxy: POST JSON-RPC to this URL, or open a WebSocket on it\n"
        )
    try:
        route = app[ROUTES].for_path(request.path)
    except SignerProxyError as exc:
        return refusal_response(request, exc)
    context = call_context(identity, "ws", chain=route.name)
    socket.headers[REQUEST_ID_HEADER] = REQUEST_ID.get()
    in_flight = app[IN_FLIGHT]
    if len(node.open) >= node.limits.max_connections or in_flight.draining:
        await socket.prepare(request)
        if in_flight.draining:
            await socket.close(code=WSCloseCode.GOING_AWAY, message=close_reason(SHUTDOWN_REASON))
        else:
            await socket.close(
                code=WSCloseCode.TRY_AGAIN_LATER,
                message=close_reason(full_reason(node.limits.max_connections)),
            )
        return socket
    connection = ClientConnection(
        socket,
        request.transport,
        route.router,
        context,
        node,
        in_flight,
        app[METRICS],
        app,
        identity,
        route,
    )
    node.add(connection)  # before any await: the limit cannot be overrun by a race
    try:
        await socket.prepare(request)
    except BaseException:
        node.discard(connection)
        raise
    in_flight.long_lived.add(request.protocol)
    try:
        await connection.run()  # which leaves `node.open` once its node connection is closed
    finally:
        in_flight.long_lived.discard(request.protocol)
    return socket


def setup_websocket(app: web.Application, settings: Settings) -> None:
    """Serve WebSocket upgrades on GET /; close every client with 1001 at shutdown (after the
    drain), and keep the connection gauge."""
    node = app[WEBSOCKETS] = WebSockets(settings)
    app[METRICS].websocket_connections.set_function(lambda: len(node.open))

    async def session(_app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),  # bounded by --ws-max-connections
            # typed for decode_text=True; ws_connect is called with False, as NodeSocket is
            ws_response_class=NodeSocket,  # type: ignore[arg-type]
            timeout=aiohttp.ClientTimeout(total=node.timeout, sock_connect=node.connect_timeout),
        ) as node.session:
            yield
            # aiohttp stops waiting for a handler once its client has gone; ours may still be
            # closing its node connection, which must end before the session does.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_TIMEOUT * 2 + 1):
                    await node.none_open.wait()

    async def close_all(_app: web.Application) -> None:
        # aiohttp no longer reads these sockets (its pre_shutdown ran): the clients' close
        # frames will not be seen, so do not wait for them.
        await asyncio.gather(
            *(
                c.close(GOING_AWAY, SHUTDOWN_REASON, wait=SHUTDOWN_FLUSH, answer=SHUTDOWN_ANSWER)
                for c in list(node.open)
            )
        )

    app.cleanup_ctx.append(session)
    app.on_shutdown.append(close_all)
    app.router.add_get("/", handle_websocket)
    app.router.add_get("/chain/{chain}", handle_websocket)
