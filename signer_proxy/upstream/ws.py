"""The node's WebSocket for one client connection: opened on first use, requests relayed with
ids of our own, replies matched back and given the client's ids, and every other message the
node sends (subscription notifications) handed to that client as the node's bytes.

One node connection per client connection (docs/design.md, "WebSocket"): a notification can
only belong to the client whose connection it arrived on, and a client that stops reading
stalls only its own node connection.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from aiohttp import WSMsgType
from aiohttp._websocket.reader import WebSocketDataQueue, WebSocketReader
from aiohttp.helpers import DEFAULT_CHUNK_SIZE

from signer_proxy.deadline import expire
from signer_proxy.errors import (
    UpstreamBadResponse,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from signer_proxy.jsonrpc import dumps, loads
from signer_proxy.upstream.base import node_error, redact_url

log = logging.getLogger(__name__)

# Seconds between pings to the node: a connection that stops answering is found and reported.
PING_INTERVAL = 30.0
# Seconds to wait for the node to answer our close frame when the client has gone.
CLOSE_TIMEOUT = 2.0

# How nodes (geth, reth, anvil, erigon, besu) write a reply and a notification: the id or the
# method comes first. Matching the head routes a message without decoding the rest of it; any
# other shape is decoded.
_HEAD = 96
_REPLY_HEAD = re.compile(rb'\s*\{\s*"jsonrpc"\s*:\s*"2\.0"\s*,\s*"id"\s*:\s*(\d+)\s*[,}]')
_NOTIFICATION_HEAD = re.compile(rb'\s*\{\s*"jsonrpc"\s*:\s*"2\.0"\s*,\s*"method"\s*:')


class CoarseHeartbeat:
    """aiohttp's WebSocket heartbeat, pushed back by a flag instead of a callback per message.

    On every chunk it receives, aiohttp schedules a callback that moves the next ping one
    interval on: ~2 µs per message on each side of a relayed call (0.94x the CPU per call with
    both heartbeats off, interleaved A/B). Mixed in first, this makes a chunk only set a flag;
    the heartbeat timer, when it fires, moves itself one interval on if anything came since.
    So a ping goes out after one to two quiet intervals instead of one. Once a ping is out,
    the next chunk (its pong, or anything) takes aiohttp's own path, which stands the pong's
    timeout down and sets the next heartbeat. This leans on aiohttp's private heartbeat
    methods and attributes, as aiohttp 3.14 has them (pinned in constraints.txt);
    tests/integration/test_ws.py checks on both sides that a peer which stops answering pings
    is still found, and that one which answers is kept.
    """

    _data_seen = False
    _heartbeat_cb: asyncio.TimerHandle | None
    _pong_response_cb: asyncio.TimerHandle | None

    def _on_data_received(self) -> None:
        self._data_seen = True
        if self._heartbeat_cb is None or self._pong_response_cb is not None:
            super()._on_data_received()  # type: ignore[misc]

    def _send_heartbeat(self) -> None:
        if self._data_seen:
            self._data_seen = False
            self._heartbeat_cb = None
            self._reset_heartbeat()
            return
        super()._send_heartbeat()  # type: ignore[misc]

    def _reset_heartbeat(self) -> None:
        super()._reset_heartbeat()  # type: ignore[misc]


class TakingQueue(WebSocketDataQueue):
    """aiohttp's queue of received messages, which offers each text message to `take` first.

    aiohttp's parser puts every message in this queue and a reader task takes it out: a task
    wake-up and aiohttp's `receive()` per message before anything is done with it. `take`
    handles the message right here instead, in the connection's data callback, and returns
    True; or returns False, and the message is queued for the reader as before. A message is
    offered only while the queue is empty, so nothing overtakes one still waiting in it (the
    taker also refuses while its reader is busy with an earlier one). The node's socket
    offers replies (UpstreamSocket._take_reply), a client's socket its calls
    (transport.ws.ClientConnection._take_now). The parser calls `feed_data` (a Cython cpdef
    method, which honours this override) for each whole message; connections are made with
    `decode_text=False`, so a text message's data is bytes.
    """

    take: Callable[[bytes], bool] | None = None

    def feed_data(self, data: Any, size: int) -> None:
        take = self.take
        if take is None or self._buffer or data.type is not WSMsgType.TEXT or not take(data.data):
            super().feed_data(data, size)


class NodeSocket(CoarseHeartbeat, aiohttp.ClientWebSocketResponse[Literal[False]]):
    """A connection to the node's WebSocket (the session's `ws_response_class`)."""

    def offer_replies(self, take: Callable[[bytes], bool]) -> bool:
        """Have each text message offered to `take` before it is queued for `receive()`
        (TakingQueue). Call right after `ws_connect` returned, before anything is sent;
        False (and nothing changed) when the node had already sent something.

        aiohttp builds the queue and its parser inside `ws_connect`; this puts a new pair in
        their place, as `ws_connect` wires them (aiohttp 3.14, pinned in constraints.txt).
        Connections are made with `decode_text=False`, `max_msg_size=0` and no compression.
        """
        old: Any = self._reader
        protocol = self._conn.protocol if self._conn is not None else None
        if protocol is None or old._buffer or old.is_eof():
            return False
        queue = TakingQueue(protocol, DEFAULT_CHUNK_SIZE, loop=self._loop)
        queue.take = take
        parser = WebSocketReader(queue, 0, compress=False, decode_text=False)
        self._reader = queue
        self._parser = parser
        received = None if self._heartbeat is None else self._on_data_received
        protocol.set_parser(parser, queue, data_received_cb=received)
        return True


def derive_ws_url(http_url: str) -> str:
    """The WebSocket URL of a node serving both on one port: http→ws, https→wss, rest kept."""
    parts = urlsplit(http_url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    return urlunsplit(parts._replace(scheme=scheme))


def lost_reason(code: int | None) -> str:
    """The reason a client's socket is closed with when its node connection ended."""
    how = "was lost" if code is None else f"closed (code {code})"
    return f"the node's WebSocket {how}; subscriptions ended: reconnect and subscribe again"


@dataclass(frozen=True, slots=True)
class NodeMessage:
    """What a message from the node is: a reply (to our id), a batch reply, a notification
    (anything without an id: subscription data), or unknown (not JSON-RPC)."""

    kind: str
    reply_id: int | None = None
    decoded: Any = None


def read_node_message(raw: bytes) -> NodeMessage:
    """Classify one message from the node, decoding it only when its head is not the usual."""
    head = raw[:_HEAD]
    match = _REPLY_HEAD.match(head)
    if match:
        return NodeMessage("reply", int(match.group(1)))
    if _NOTIFICATION_HEAD.match(head):
        return NodeMessage("notification")
    try:
        decoded = loads(raw)
    except (ValueError, UnicodeDecodeError):
        return NodeMessage("unknown")
    if isinstance(decoded, list):
        return NodeMessage("batch", decoded=decoded)
    if isinstance(decoded, dict):
        reply_id = decoded.get("id")
        if isinstance(reply_id, int) and not isinstance(reply_id, bool):
            return NodeMessage("reply", reply_id, decoded)
        if "method" in decoded and "id" not in decoded:
            return NodeMessage("notification", decoded=decoded)
    return NodeMessage("unknown", decoded=decoded)


def with_client_id(raw: bytes, ours: int, theirs: Any) -> bytes:
    """The node's reply with our id replaced by the client's; the node's other bytes are kept
    unless the id is not where nodes write it (then the reply is re-encoded)."""
    match = _REPLY_HEAD.match(raw[:_HEAD])
    if match and int(match.group(1)) == ours:
        start, end = match.span(1)
        return raw[:start] + dumps(theirs) + raw[end:]
    decoded = loads(raw)
    decoded["id"] = theirs
    return dumps(decoded)


@dataclass(eq=False)
class _Pending:
    """One request sent to the node (a call or a batch), waiting for its reply."""

    future: asyncio.Future[Any]
    ids: dict[int, Any]  # our id → the id the caller gave
    # eth_subscribe / eth_unsubscribe calls by our id, with the subscription id unsubscribed
    subscriptions: dict[int, tuple[str, Any]] = field(default_factory=dict)
    # set once the caller has queued the reply for its client (see `forward`)
    delivered: asyncio.Event | None = None


Deliver = Callable[[bytes], Awaitable[None]]
_NodeSocket = aiohttp.ClientWebSocketResponse[Literal[False]]  # what ws_connect is typed to return


class UpstreamSocket:
    """One client connection's WebSocket to the node, opened by the first call that needs it.

    `deliver` receives each notification (awaited: a slow client slows this connection's
    reading from the node, nothing else). `on_lost` is told, with a reason, when the node's
    connection ends while the client holds subscriptions: they are gone, and the client must be
    told. Without subscriptions nothing is lost; the next call connects again.
    """

    def __init__(
        self,
        url: str,
        session: aiohttp.ClientSession,
        timeout: float,
        deliver: Deliver,
        on_lost: Callable[[str], None],
        upgrade_headers: Callable[[], Mapping[str, str]] | None = None,
    ) -> None:
        self._url = url
        self._upgrade_headers = upgrade_headers  # credentials (headers, SigV4), fresh each time
        self._session = session
        self._timeout = timeout
        self._deliver = deliver
        self._on_lost = on_lost
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._ws: _NodeSocket | None = None
        self._reader: asyncio.Task[None] | None = None
        self._connect_lock = asyncio.Lock()
        self._closed = False
        self._dispatching = False  # the reader is handling a message (see _take_reply)
        self.subscriptions: set[str] = set()
        self.display_url = redact_url(url)

    @property
    def connected(self) -> bool:
        return self._ws is not None and not self._ws.closed

    async def _socket(self) -> _NodeSocket:
        ws = self._ws
        if ws is not None and not ws.closed:
            return ws
        async with self._connect_lock:
            if self._ws is not None and not self._ws.closed:
                return self._ws
            if self._closed:
                raise UpstreamUnavailable("the WebSocket connection is closing; reconnect")
            try:
                headers = None if self._upgrade_headers is None else self._upgrade_headers()
                ws = await self._session.ws_connect(
                    self._url,
                    headers=headers,
                    heartbeat=PING_INTERVAL,
                    max_msg_size=0,  # as over HTTP: the node's replies are not size-limited
                    decode_text=False,
                    timeout=aiohttp.ClientWSTimeout(ws_close=CLOSE_TIMEOUT),
                )
            except aiohttp.WSServerHandshakeError as exc:
                if exc.status in (401, 403):
                    raise UpstreamUnavailable(
                        f"the node at {self.display_url} refused the proxy's credentials on the "
                        f"WebSocket upgrade (HTTP {exc.status}); check this upstream's headers, "
                        "URL userinfo or SigV4 settings"
                    ) from exc
                raise UpstreamUnavailable(
                    f"the node at {self.display_url} refused a WebSocket connection (HTTP "
                    f"{exc.status}); set --upstream-ws to the node's WebSocket URL"
                ) from exc
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                raise UpstreamUnavailable(
                    f"the node's WebSocket at {self.display_url} could not be reached "
                    f"({type(exc).__name__}); check that the node serves WebSocket there, "
                    "or set --upstream-ws"
                ) from exc
            if self._closed:
                # The client left while the upgrade was under way: close() found no socket
                # to close, so this one would outlive it (its heartbeat keeps it open).
                await ws.close()
                raise UpstreamUnavailable("the WebSocket connection is closing; reconnect")
            if isinstance(ws, NodeSocket):
                ws.offer_replies(self._take_reply)
            self._ws = ws
            self._reader = asyncio.create_task(self._read(ws))
            return ws

    def _take_reply(self, raw: bytes) -> bool:
        """Resolve the waiting call with `raw` at once if it is a plain reply to one (not to a
        subscription call, not a batch) and the reader is not busy with an earlier message;
        else False: the reader dispatches it in order (TakingQueue)."""
        if self._dispatching:
            return False
        match = _REPLY_HEAD.match(raw[:_HEAD])
        if match is None:
            return False
        pending = self._pending.get(int(match.group(1)))
        if pending is None or pending.subscriptions:
            return False
        for ours in pending.ids:
            self._pending.pop(ours, None)
        if not pending.future.done():
            pending.future.set_result(raw)
        return True

    def for_message(self, delivered: asyncio.Event | None) -> MessageUpstream:
        """An Upstream for client messages; `delivered`, when given, is set once the one
        message's reply is queued (a subscription's reply, which its notifications follow)."""
        return MessageUpstream(self, delivered)

    async def forward(self, body: bytes, delivered: asyncio.Event | None = None) -> bytes:
        """Relay a JSON-RPC body (a call or a batch) and return the node's reply with the
        body's own ids; b"" when the body held only notifications."""
        request = loads(body)
        items = request if isinstance(request, list) else [request]
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        pending = _Pending(future, {}, delivered=delivered)
        outgoing = []
        for item in items:
            if not isinstance(item, dict) or "id" not in item:
                outgoing.append(item)
                continue
            ours = next(self._ids)
            pending.ids[ours] = item["id"]
            if item.get("method") in ("eth_subscribe", "eth_unsubscribe"):
                params = item.get("params")
                target = params[0] if isinstance(params, list) and params else None
                pending.subscriptions[ours] = (item["method"], target)
            outgoing.append({**item, "id": ours})
        payload = dumps(outgoing if isinstance(request, list) else outgoing[0])
        ws = await self._socket()
        if not pending.ids:
            await self._send(ws, payload)
            return b""
        for ours in pending.ids:
            self._pending[ours] = pending
        try:
            await self._send(ws, payload)
            if self._ws is not ws and not future.done():  # it ended before we were waiting
                raise self._lost_error()
            # A timer on the future, not asyncio.timeout (a task-cancelling scope per call).
            timer = loop.call_later(self._timeout, expire, future)
            try:
                answer = await future
            finally:
                timer.cancel()
        except TimeoutError:
            raise UpstreamTimeout(
                f"the node at {self.display_url} did not answer within {self._timeout:g} s over "
                "WebSocket; check the node or raise --upstream-timeout"
            ) from None
        finally:
            for ours in pending.ids:
                self._pending.pop(ours, None)
        if not isinstance(request, list):
            ((ours, theirs),) = pending.ids.items()
            return with_client_id(answer, ours, theirs)
        if isinstance(answer, bytes):  # one error for a whole batch (no batch support)
            return dumps({**loads(answer), "id": None})
        for reply in answer:  # every member of a batch gets back the id it was sent with
            if (
                isinstance(reply, dict)
                and type(reply.get("id")) is int
                and reply["id"] in pending.ids
            ):
                reply["id"] = pending.ids[reply["id"]]
        return dumps(answer)

    async def _send(self, ws: _NodeSocket, payload: bytes) -> None:
        try:
            await ws.send_frame(payload, WSMsgType.TEXT)
        except (ConnectionError, RuntimeError) as exc:
            raise UpstreamUnavailable(
                f"the WebSocket connection to the node at {self.display_url} closed before the "
                "request was sent; retry"
            ) from exc

    async def call(self, method: str, params: Any) -> Any:
        """The `result` of one call over this connection; NodeRejected on the node's error."""
        body = dumps({"jsonrpc": "2.0", "id": 0, "method": method, "params": params})
        response = loads(await self.forward(body))
        if not isinstance(response, dict) or ("result" not in response and "error" not in response):
            raise UpstreamBadResponse(
                f"the node at {self.display_url} answered {method} with no JSON-RPC response"
            )
        error = response.get("error")
        if error is not None:
            raise node_error(error)
        return response["result"]

    async def _read(self, ws: _NodeSocket) -> None:
        try:
            async for message in ws:
                if message.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    data = message.data
                    self._dispatching = True  # no reply may overtake this message
                    try:
                        await self._dispatch(data if isinstance(data, bytes) else data.encode())
                    finally:
                        self._dispatching = False
                elif message.type == WSMsgType.ERROR:
                    log.warning("node WebSocket %s: %s", self.display_url, ws.exception())
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("reading the node's WebSocket %s failed", self.display_url)
            await ws.close()
        finally:
            self._connection_ended(ws)

    async def _dispatch(self, raw: bytes) -> None:
        message = read_node_message(raw)
        if message.kind == "notification":
            await self._deliver(raw)
            return
        if message.kind == "batch":
            pending = next(
                (
                    self._pending[item["id"]]
                    for item in message.decoded
                    # our ids are ints; a node's id of another type (a list: unhashable)
                    # is no reply of ours, and must not end the reader
                    if isinstance(item, dict)
                    and type(item.get("id")) is int
                    and item["id"] in self._pending
                ),
                None,
            )
            if pending is not None:
                await self._resolve(pending, message.decoded)
                return
        elif message.kind == "reply":
            pending = self._pending.get(message.reply_id)  # type: ignore[arg-type]
            if pending is not None:
                await self._resolve(pending, raw)
                return
        elif isinstance(message.decoded, dict):
            # An error with a null id ("parse error", "batch not supported"): with one request
            # waiting it can only be that one's.
            waiting = {id(p): p for p in self._pending.values()}
            if len(waiting) == 1:
                ((ours, pending), *_) = self._pending.items()
                await self._resolve(pending, dumps({**message.decoded, "id": ours}))
                return
        log.warning("node WebSocket %s sent a message matching no request", self.display_url)

    async def _resolve(self, pending: _Pending, answer: bytes | list[Any]) -> None:
        for ours in pending.ids:
            self._pending.pop(ours, None)
        if not pending.subscriptions:
            if not pending.future.done():
                pending.future.set_result(answer)
                # The caller's task was woken first: one turn of the loop lets it queue this
                # reply for its client before the reader reads on (a notification the node
                # sent after the reply then follows it). Only replies the reader dispatches
                # pay this; those taken in the data callback never wait behind another.
                await asyncio.sleep(0)
            return
        replies = answer if isinstance(answer, list) else [loads(answer)]
        for reply in replies:
            if (
                not isinstance(reply, dict)
                or type(reply.get("id")) is not int
                or reply["id"] not in pending.subscriptions
            ):
                continue
            method, target = pending.subscriptions[reply["id"]]
            result = reply.get("result")
            if method == "eth_subscribe" and isinstance(result, str):
                self.subscriptions.add(result)
            elif method == "eth_unsubscribe" and result is True:
                self.subscriptions.discard(target)
        if not pending.future.done():
            pending.future.set_result(answer)
            if pending.delivered is not None:
                # The node sends a subscription's first notification right after its id; the
                # client must have the id first (geth's order), so read on only once the reply
                # is queued for the client.
                await pending.delivered.wait()

    def _connection_ended(self, ws: _NodeSocket) -> None:
        if self._ws is ws:
            self._ws = None
        code = ws.close_code
        lost = self._lost_error()
        for pending in {id(p): p for p in self._pending.values()}.values():
            if not pending.future.done():
                pending.future.set_exception(lost)
        self._pending.clear()
        had_subscriptions = bool(self.subscriptions)
        self.subscriptions.clear()
        if had_subscriptions and not self._closed:
            self._on_lost(lost_reason(code))

    def _lost_error(self) -> UpstreamTimeout:
        return UpstreamTimeout(
            f"the WebSocket connection to the node at {self.display_url} closed before it "
            "answered; the call may have reached the node: check before repeating it"
        )

    async def close(self) -> None:
        """Close the node connection (the client has gone); pending calls fail at once."""
        self._closed = True
        ws, reader = self._ws, self._reader
        if ws is not None:
            await ws.close()
        if reader is not None:
            if not reader.done():
                reader.cancel()
            await asyncio.wait([reader])


class MessageUpstream:
    """The Upstream seam over a client's node connection, for one client message."""

    def __init__(self, socket: UpstreamSocket, delivered: asyncio.Event | None) -> None:
        self._socket = socket
        self._delivered = delivered
        self.display_url = socket.display_url

    async def forward(self, body: bytes) -> bytes:
        return await self._socket.forward(body, self._delivered)

    async def call(self, method: str, params: Any) -> Any:
        return await self._socket.call(method, params)
