"""The fast lane: JSON-RPC POSTs over HTTP/1.1 answered without aiohttp's request machinery.

aiohttp builds a request object, a router match, a middleware chain and a response object for
every call; on a pass-through call that was the largest share of the proxy's CPU. This
protocol parses the common request itself — `POST /` over HTTP/1.1 with a Content-Length
body — and answers it through the same `RpcEndpoint` as aiohttp's handler. A request that is
anything else (a WebSocket upgrade, /health, OPTIONS, a chunked body, HTTP/1.0, Expect, a
head we would have to be lenient about ...) hands the connection, with every byte read so
far, to aiohttp's protocol, which serves it from then on. Anything unusual is aiohttp's to
judge, with its full parser.

Heads are read by llhttp (httptools), the parser aiohttp itself uses. The door (Host, Origin,
credentials) is checked on the head, before the body is read. Requests on one connection are
answered one at a time, in order (HTTP/1.1 pipelining); reading pauses while the client does
not read its replies, and while a request is answered once READ_AHEAD bytes wait. A head must
arrive within --head-timeout and its body within --body-timeout, else 408 and close.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl

import httptools
from aiohttp import web

from signer_proxy.access.auth import Identity
from signer_proxy.errors import INTERNAL_ERROR_MESSAGE, RequestTimeout, SignerProxyError
from signer_proxy.jsonrpc import dumps, error_response
from signer_proxy.ops.shutdown import InFlight
from signer_proxy.transport.door import Caller
from signer_proxy.transport.exchange import open_request, reply_header_lines
from signer_proxy.transport.http import ENDPOINT, HttpAnswer, RpcEndpoint

log = logging.getLogger(__name__)

# A longer head, or one with more header lines, goes to aiohttp, which refuses lines over
# 8190 bytes and more than 128 headers: a head the lane answers is one aiohttp would accept.
MAX_HEAD_BYTES = 8190
MAX_HEADERS = 128
KEEPALIVE_SECONDS = 75.0  # as aiohttp: an idle keep-alive connection is closed after this
SWEEP_SECONDS = 15.0
SHUTDOWN_GRACE = 1.0  # after drain(): how long requests still running get before cancellation

# While a request is answered, pipelined bytes past this are left in the kernel (reading
# paused); so are all bytes while the client does not read its replies (writing paused).
READ_AHEAD = 64 * 1024
# A request refused on its head (401/403/400) whose body has more than this still to come
# gets its reply and the connection closed: the body is never read.
DISCARD_LIMIT = 64 * 1024
_OUR_START = b"POST /"  # how every request line the lane answers begins
# Present these and the request is aiohttp's: framing or semantics this lane does not do.
_NOT_OURS = frozenset({"transfer-encoding", "upgrade", "expect"})
# Repeated, these are ambiguous (which Content-Length? which Host?): aiohttp decides.
_SINGLE_VALUED = frozenset(
    {"content-length", "host", "authorization", "origin", "x-request-id", "connection"}
)


@dataclass(frozen=True, slots=True)
class Head:
    """What the lane needs of a request head: lower-case header names, one value each."""

    headers: dict[str, str]
    query: str
    content_length: int
    close: bool  # the client asked to close the connection after this reply
    path: str = "/"  # / or /chain/… (transport/chains.py picks the chain)

    @property
    def query_key(self) -> str | None:
        """The first ?key= value, as aiohttp's request.query.get("key") reads it (API keys in
        the URL, when allowed)."""
        if not self.query:
            return None
        pairs = parse_qsl(self.query, keep_blank_values=True)  # "?key=" is a key, and empty
        return next((value for name, value in pairs if name == "key"), None)


def parse_head(head: bytes) -> Head | None:
    """The head of a `POST /` HTTP/1.1 request with a Content-Length body, ending in CRLF CRLF;
    None for any other request (it is handed to aiohttp)."""
    if not head.startswith(_OUR_START):
        return None
    # llhttp (httptools) reads the request line and the header lines, strictly: a CR or LF
    # outside a CRLF, a control character, a name that is not a token, a folded line, two
    # Content-Lengths, Content-Length beside Transfer-Encoding ... are refused, so handed to
    # aiohttp, whose parser is llhttp too and answers 400.
    collected = _HeadCollector()
    parser = httptools.HttpRequestParser(collected)
    try:
        parser.feed_data(head)  # the head only: the parser then waits for a body, never fed
    except (httptools.HttpParserError, httptools.HttpParserUpgrade):
        return None
    if not collected.done or collected.ambiguous or collected.fields > MAX_HEADERS:
        return None
    if parser.get_method() != b"POST" or parser.get_http_version() != "1.1":
        return None
    path, _, query = collected.url.partition("?")
    if path != "/" and not path.startswith("/chain/"):
        return None
    headers = collected.headers
    if not _NOT_OURS.isdisjoint(headers):
        return None
    length = headers.get("content-length")
    if length is None or not (length.isascii() and length.isdigit()):
        return None
    close = False
    connection = headers.get("connection")
    if connection:
        tokens = {token.strip().lower() for token in connection.split(",")}
        if "upgrade" in tokens:
            return None
        close = "close" in tokens
    return Head(headers, query, int(length), close, path)


class _HeadCollector:
    """httptools' callbacks for one request head: lower-case names, repeated values joined
    with ", " (a repeated single-valued header makes the head ambiguous: aiohttp's)."""

    __slots__ = ("ambiguous", "done", "fields", "headers", "url")

    def __init__(self) -> None:
        self.url = ""
        self.headers: dict[str, str] = {}
        self.fields = 0
        self.done = False
        self.ambiguous = False

    def on_url(self, url: bytes) -> None:
        self.url += url.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.fields += 1
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1").strip(" \t")
        headers = self.headers
        if key in headers:
            if key in _SINGLE_VALUED:
                self.ambiguous = True
            headers[key] = f"{headers[key]}, {text}"
        else:
            headers[key] = text

    def on_headers_complete(self) -> None:
        self.done = True


_STATUS_LINES: dict[int, bytes] = {}


def status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Unknown"
        line = _STATUS_LINES[status] = f"HTTP/1.1 {status} {phrase}\r\n".encode("latin-1")
    return line


_NO_HEAD = Head({}, "", 0, True)  # for a reply to a request whose head never came whole
_METHOD = re.compile(rb"[A-Z]+(?: |$)")  # the start of a request line: wait for its head

_INTERNAL_ERROR = HttpAnswer(
    500, dumps(error_response(None, SignerProxyError(INTERNAL_ERROR_MESSAGE)))
)


class FastLane:
    """The app's fast-lane connections, and what they answer with."""

    def __init__(
        self,
        in_flight: InFlight,
        max_body: int,
        app: web.Application,
        head_timeout: float = 60.0,
        body_timeout: float = 60.0,
    ) -> None:
        self.in_flight = in_flight
        self.max_body = max_body
        self.head_timeout = head_timeout
        self.body_timeout = body_timeout
        self.connections: set[FastLaneProtocol] = set()
        self._app = app
        self._endpoint: RpcEndpoint | None = None
        self._date = b""
        self._date_second = -1
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def endpoint(self) -> RpcEndpoint:
        # Built when the app has started (its router exists only then); looked up once.
        if self._endpoint is None:
            self._endpoint = self._app[ENDPOINT]
        return self._endpoint

    def date_header(self) -> bytes:
        now = int(time.time())
        if now != self._date_second:
            self._date_second = now
            self._date = f"Date: {formatdate(now, usegmt=True)}\r\n".encode("latin-1")
        return self._date

    def start(self) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def _sweep(self) -> None:
        """Close keep-alive connections idle longer than KEEPALIVE_SECONDS."""
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            limit = time.monotonic() - KEEPALIVE_SECONDS
            for connection in list(self.connections):
                if not connection.busy and connection.last_active < limit:
                    connection.close()

    def close_idle(self) -> None:
        """Drain: idle connections close now, busy ones after their reply."""
        for connection in list(self.connections):
            connection.close_when_idle()

    async def on_shutdown(self, _app: web.Application) -> None:
        """Cancel what still runs after the drain (a short grace first); close everything."""
        if self._sweeper is not None:
            self._sweeper.cancel()
        self.close_idle()
        running = [c.task for c in self.connections if c.task is not None and not c.task.done()]
        if running:
            _, pending = await asyncio.wait(running, timeout=SHUTDOWN_GRACE)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=SHUTDOWN_GRACE)
        for connection in list(self.connections):
            connection.close()


FAST_LANE = web.AppKey("fast_lane", FastLane)


class FastLaneProtocol(asyncio.Protocol):
    """One client connection: its requests answered here until one is aiohttp's."""

    def __init__(self, lane: FastLane, fallback: Callable[[], asyncio.Protocol]) -> None:
        self._lane = lane
        self._fallback = fallback
        self._transport: Any = None
        self._buffer = bytearray()
        self._head: Head | None = None  # parsed, waiting for the rest of its body
        self._head_end = 0
        self._peercert: Any = None
        self._remote: str | None = None
        self._close_after = False
        self._reading_paused = False
        self._writing_paused = False
        self._closed = False  # also once the connection is handed to aiohttp: no longer ours
        self._starting = False  # inside _next: a reply does not start the next request itself
        self._timer: asyncio.TimerHandle | None = None  # the head's or the body's deadline
        self._admitted: Identity | HttpAnswer | None = None  # the door's word on self._head
        # The last head parsed on this connection and what the door is shown of it: clients
        # on keep-alive mostly repeat their head byte for byte (the door still runs each time).
        self._last_head: tuple[bytes, Head, Caller] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.busy = False
        self.task: asyncio.Task[None] | None = None
        self.last_active = 0.0

    # -- asyncio.Protocol --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self._loop = asyncio.get_running_loop()
        self._peercert = transport.get_extra_info("peercert")
        peer = transport.get_extra_info("peername")
        self._remote = str(peer[0]) if isinstance(peer, tuple) and peer else None
        self.last_active = time.monotonic()
        self._lane.connections.add(self)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        self.last_active = time.monotonic()
        if not self.busy:
            self._next()
        # Bounded: what is not answered yet stays in the kernel once the client is ahead of
        # us (pipelining while we answer, or not reading its replies).
        ahead = self._writing_paused or (self.busy and len(self._buffer) > READ_AHEAD)
        if ahead and not self._reading_paused and not self._closed:
            self._reading_paused = True
            self._transport.pause_reading()

    def eof_received(self) -> bool:
        if self.busy:
            self._close_after = True  # answer what is in hand, then close
            return True
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._disarm()
        if not self.busy:
            self._lane.connections.discard(self)

    def pause_writing(self) -> None:
        self._writing_paused = True
        if not self._reading_paused and not self._closed:
            self._reading_paused = True
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self.busy or self._closed:
            return  # the reply resumes reading
        self._resume_reading()
        if self._buffer:
            self._next()

    def _resume_reading(self) -> None:
        if self._reading_paused and not self._closed:
            self._reading_paused = False
            self._transport.resume_reading()

    # -- the lane's own --

    def close(self) -> None:
        self._disarm()
        self._lane.connections.discard(self)
        if self._transport is not None and not self._closed:
            self._transport.close()

    def close_when_idle(self) -> None:
        if self.busy:
            self._close_after = True
        else:
            self.close()

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._timer = asyncio.get_running_loop().call_later(seconds, self._too_slow)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _too_slow(self) -> None:
        """The head or the body took too long: 408 and close (a slow-drip client)."""
        self._timer = None
        if self._closed or self.busy:
            return
        waited = "body" if self._head is not None else "head"
        seconds = self._lane.body_timeout if self._head is not None else self._lane.head_timeout
        exc = RequestTimeout(
            f"the request's {waited} did not arrive within {seconds:g} s; send the whole "
            f"request at once (the operator sets --{waited}-timeout)"
        )
        head = self._head or _NO_HEAD
        self._head = None
        self._buffer.clear()
        request_id, _ = open_request(None)
        self._reply(head, self._lane.endpoint.refusal(exc), request_id, close=True)

    def _next(self) -> None:
        """Start on the next complete request in the buffer, if there is one; answer those
        refused on their head in a loop (pipelined refusals would otherwise nest a reply and
        its next request per request, and a few hundred in one read overflow the stack)."""
        if self._starting:
            return  # the loop below goes on once the reply in hand returns
        self._starting = True
        try:
            while self._start_one():
                pass
        finally:
            self._starting = False

    def _start_one(self) -> bool:
        """Start on the next complete request; True when it was answered at once (refused on
        its head) and the connection is free for the one after it."""
        if self._closed or self._writing_paused:
            return False
        buffer = self._buffer
        head = self._head
        if head is None:
            if not buffer:
                return False
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                # Too long, lines ending in a bare LF, or not a request line at all (a TLS
                # hello ...): aiohttp's parser decides, now. Any other head is waited for,
                # under the head deadline, also one the lane will hand off once it is in.
                if (
                    len(buffer) > MAX_HEAD_BYTES
                    or not (buffer.startswith(_OUR_START[: len(buffer)]) or _METHOD.match(buffer))
                    or b"\n\n" in buffer
                    or b"\n\r\n" in buffer
                ):
                    self._hand_off()
                elif self._timer is None:
                    self._arm(self._lane.head_timeout)
                return False
            if end + 4 > MAX_HEAD_BYTES:  # the whole head may come in one read: judge it too
                self._hand_off()
                return False
            raw_head = bytes(buffer[: end + 4])
            last = self._last_head
            if last is not None and last[0] == raw_head:
                _, head, caller = last
            else:
                parsed = parse_head(raw_head)
                if parsed is None or parsed.content_length > self._lane.max_body:
                    self._hand_off()  # not ours, or too large: aiohttp answers 413
                    return False
                head, caller = parsed, self._caller(parsed)
                self._last_head = (raw_head, head, caller)
            self._head, self._head_end = head, end + 4
            # The door on the head: credentials, Host and Origin before any body is read.
            self._admitted = self._admit(head, caller)
            if isinstance(self._admitted, HttpAnswer):
                missing = self._head_end + head.content_length - len(buffer)
                if missing > DISCARD_LIMIT:  # reply now; the body is never read
                    self._head = None
                    buffer.clear()
                    self._reply(head, self._admitted, self._request_id(head), close=True)
                    return False
            if len(buffer) < self._head_end + head.content_length:
                self._arm(self._lane.body_timeout)  # the body is still on its way
            else:
                self._disarm()  # the head's deadline, if it came in pieces
        total = self._head_end + head.content_length
        if len(buffer) < total:
            return False  # the body is still on its way
        self._disarm()
        body = bytes(buffer[self._head_end : total])
        del buffer[:total]
        self._head = None
        admitted, self._admitted = self._admitted, None
        self.busy = True
        if isinstance(admitted, HttpAnswer):  # refused on the head; its body is dropped
            self._reply(head, admitted, self._request_id(head))
            return not self._closed
        assert admitted is not None
        # In flight from now, not from when the task first runs: a drain starting in between
        # must wait for this request too.
        self._lane.in_flight.enter()
        assert self._loop is not None
        self.task = self._loop.create_task(self._answer(head, body, admitted))
        return False

    def _request_id(self, head: Head) -> str:
        return open_request(head.headers.get("x-request-id"))[0]  # the refusal's log line

    def _caller(self, head: Head) -> Caller:
        headers = head.headers
        return Caller(
            headers.get("host"),
            headers.get("origin"),
            headers.get("authorization"),
            head.query_key,
            self._peercert,
            self._remote,
            http11=True,  # the lane serves HTTP/1.1 only
        )

    def _admit(self, head: Head, caller: Caller) -> Identity | HttpAnswer:
        endpoint = self._lane.endpoint
        try:
            return endpoint.admit(caller, head.path)
        except SignerProxyError as exc:
            return endpoint.refusal(exc)

    def _hand_off(self) -> None:
        """From now on this connection is aiohttp's, starting with the bytes read so far."""
        self._disarm()
        self._lane.connections.discard(self)
        protocol = _AnswerBeforeEof(self._fallback())
        transport = self._transport
        transport.set_protocol(protocol)
        # Not ours from here: a reply still unwinding (its _reply called this) must neither
        # write nor resume reading on it, or aiohttp's own pause would be undone and the
        # socket read into its buffers without bound.
        self._closed = True
        protocol.connection_made(transport)
        if self._reading_paused:
            self._reading_paused = False
            transport.resume_reading()
        data = bytes(self._buffer)
        self._buffer.clear()
        if data:
            protocol.data_received(data)

    async def _answer(self, head: Head, body: bytes, identity: Identity) -> None:
        lane = self._lane
        # This task's context (no reset needed): its log lines carry the id.
        request_id, _ = open_request(head.headers.get("x-request-id"))
        try:
            traceparent = head.headers.get("traceparent")  # read only when tracing is on
            answer = await lane.endpoint.answer(identity, body, traceparent, head.path)
        except Exception:
            log.exception("unexpected error answering a request")
            answer = _INTERNAL_ERROR
        finally:
            lane.in_flight.leave()
        self._reply(head, answer, request_id)

    def _reply(self, head: Head, answer: HttpAnswer, request_id: str, close: bool = False) -> None:
        lane = self._lane
        close = close or head.close or self._close_after or lane.in_flight.draining
        if not self._closed:
            out = status_line(answer.status) + lane.date_header()
            if answer.body is not None:
                out += b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(
                    answer.body
                )
            for name, value in answer.headers:
                out += f"{name}: {value}\r\n".encode("latin-1")
            out += reply_header_lines(lane.endpoint.access, head.headers.get("origin"), request_id)
            out += b"Connection: close\r\n\r\n" if close else b"\r\n"
            if answer.body:
                self._transport.writelines((out, answer.body))
            else:
                self._transport.write(out)
        self.busy = False
        self.task = None
        self.last_active = time.monotonic()
        if close or self._closed:
            self.close()
            return
        # Read on only while what is buffered is within READ_AHEAD: a client that pipelines
        # faster than we answer (or never reads) must wait in the kernel, not in our memory.
        # Resuming after every reply read one more socket buffer (256 KiB) per answer of
        # ~100 bytes: one client grew the proxy by 600 MB in 6 s (bench/soak.py).
        if self._buffer:
            self._next()
        # Idle (the next request is still arriving): read, whatever is buffered.
        if not self._writing_paused and (not self.busy or len(self._buffer) <= READ_AHEAD):
            self._resume_reading()


class _AnswerBeforeEof(asyncio.Protocol):
    """aiohttp's protocol for a handed-off connection, except at the client's EOF.

    aiohttp closes the socket as soon as the client shuts its sending side, so a request it
    is still answering (an HTTP/1.0 eth_sendTransaction already sent to the node) got no
    reply. Here a half-closed connection with a request in hand stays open for writing;
    aiohttp answers it, then closes. An idle one closes at once, as before.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        inner = self.inner
        # aiohttp's own state (as ops/shutdown.py reads it): a parsed request waiting, or one
        # being handled or its reply written.
        busy = bool(getattr(inner, "_messages", ())) or getattr(
            inner, "_request_in_progress", False
        )
        upgraded = getattr(inner, "_upgraded", False) or (
            getattr(inner, "_payload_parser", None) is not None
        )  # a WebSocket: its reader learns of the EOF from the close, as aiohttp does it
        if not busy or upgraded or getattr(inner, "transport", None) is None:
            return inner.eof_received()  # type: ignore[no-any-return]
        inner.close()  # no further request; the transport closes after this answer
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class RpcSite(web.BaseSite):
    """A listener whose connections start in the app's fast lane (like aiohttp's TCPSite or
    SockSite: a host and port, or a bound socket)."""

    __slots__ = ("_host", "_lane", "_port", "_sock")

    def __init__(
        self,
        runner: web.AppRunner,
        host: str | None = None,
        port: int = 0,
        *,
        sock: Any = None,
        ssl_context: Any = None,
        backlog: int = 128,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=backlog)
        self._lane = runner.app[FAST_LANE]
        self._host = host
        self._port = port
        self._sock = sock

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        return f"{scheme}://{self._host or '0.0.0.0'}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        lane = self._lane

        def protocol() -> FastLaneProtocol:
            return FastLaneProtocol(lane, server)  # aiohttp's protocol is the fallback

        loop = asyncio.get_running_loop()
        if self._sock is not None:
            self._server = await loop.create_server(
                protocol, sock=self._sock, ssl=self._ssl_context, backlog=self._backlog
            )
        else:
            self._server = await loop.create_server(
                protocol, self._host, self._port, ssl=self._ssl_context, backlog=self._backlog
            )
        lane.start()

    async def stop(self) -> None:
        await super().stop()
        self._lane.close_idle()  # keep-alive connections: no new request on them
