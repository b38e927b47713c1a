"""A lean HTTP/1.1 client for one origin: POST a body, get status, headers and body back.

Why not aiohttp's client: on the pass-through path its request machinery (ClientRequest,
header multidicts, tracing hooks, timeout objects) costs more CPU than everything else the
proxy does for a call. A JSON-RPC node needs one verb, one path and keep-alive connections;
this pool writes the request in one buffer and parses the answer with llhttp (httptools), no
per-call objects beyond the response. It speaks Content-Length and chunked bodies, skips 1xx
interim answers, TLS, and HTTP basic auth from the URL's userinfo.

Errors say whether the request can have reached the server: `ConnectFailed` (it did not:
no connection, or the deadline passed before it was written, waiting for a free connection
or for a new one) versus `ResponseFailed` and `TimeoutError` (it may have) — the send path
keeps a nonce spent in the second case.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast
from urllib.parse import unquote, urlsplit

import httptools

from signer_proxy.deadline import expire
from signer_proxy.slots import Slots

MAX_RESPONSE_BYTES = 256 * 1024 * 1024  # eth_getLogs answers can be large; this is a backstop
MAX_HEADER_BYTES = 64 * 1024
MAX_IDLE_SECONDS = 4.0
_JSON_CONTENT_TYPE = b"Content-Type: application/json\r\n"


class HttpError(Exception):
    """Base class; the message never contains the URL (it may carry credentials)."""


class ConnectFailed(HttpError):
    """No connection could be made: the request was not delivered."""


class PoolBusy(ConnectFailed):
    """Every connection stayed busy until the deadline: the request was not written."""


class ResponseFailed(HttpError):
    """The connection broke or the answer was not HTTP: the request may have been delivered."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    raw_headers: list[tuple[bytes, bytes]]  # as llhttp read them, in order
    body: bytes

    @property
    def headers(self) -> dict[str, str]:
        """Lower-case names; a repeated header keeps its last value."""
        return _header_dict(self.raw_headers)

    @property
    def content_type(self) -> str:
        value = b""
        for name, text in self.raw_headers:  # the last one, as in `headers`
            if len(name) == 12 and name.lower() == b"content-type":
                value = text
        return value.decode("latin-1").split(";", 1)[0].strip().lower()


def _header_dict(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    return {name.decode("latin-1").lower(): value.decode("latin-1").strip() for name, value in raw}


class _Connection(asyncio.Protocol):
    """One keep-alive connection: the answer to the request in flight is parsed by llhttp
    (httptools) as its bytes arrive and handed over through one future (no stream reader, no
    task per read). One parser serves the connection's answers one after another (creating
    one cost more than parsing a small answer); a connection whose parser saw anything wrong
    is never reused. Headers are kept as the byte pairs llhttp read, decoded when asked.
    llhttp refuses what a hand parser gets wrong: a repeated Content-Length, Content-Length
    with chunked, a Transfer-Encoding that only contains "chunked"; 1xx interim answers are
    skipped."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.idle_since = 0.0
        self.broken = False  # closed, or the server said something while we were idle
        self.reusable = False  # the last answer allows another request on this connection
        self._waiter: asyncio.Future[Response] | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._head_bytes = 0  # bytes read before the (final) head was complete
        self._status = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._headers_done = False
        self._chunks: list[bytes] = []
        self._size = 0
        self._keep = False
        self._answered: Response | None = None

    # -- httptools' callbacks --

    def on_message_begin(self) -> None:
        if self._answered is not None:  # bytes after the answer: the stream is out of step
            self._keep = False
            raise _Done
        self._headers = []
        self._headers_done = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()
        self._headers_done = self._status >= 200  # 1xx: an interim answer, skipped
        self._keep = self._parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > MAX_RESPONSE_BYTES:
            raise ResponseFailed("the answer is larger than the client accepts")
        self._chunks.append(body)

    def on_message_complete(self) -> None:
        if not self._headers_done:
            return  # the end of a 1xx answer: the real one follows
        self._answered = Response(self._status, self._headers, b"".join(self._chunks))

    # -- asyncio.Protocol --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport: no isinstance check here.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:  # unasked-for bytes: this connection cannot be trusted
            self.broken = True
            self.close()
            return
        if not self._headers_done:
            self._head_bytes += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(ResponseFailed("the server switched protocols instead of answering"))
            return
        except httptools.HttpParserError as exc:
            cause = exc.__context__  # what a callback raised
            if isinstance(cause, ResponseFailed):
                self._fail(cause)
                return
            if isinstance(cause, _Done):
                pass
            elif self._answered is None:
                self._fail(ResponseFailed(f"the answer is not valid HTTP/1.1 ({_reason(exc)})"))
                return
            self._keep = False  # garbage after a whole answer: answer it, never reuse
        if self._answered is not None:
            self._finish()
        elif not self._headers_done and self._head_bytes > MAX_HEADER_BYTES:
            self._fail(ResponseFailed("the answer's headers are too large"))

    def eof_received(self) -> bool:
        self.broken = True
        if self._waiter is not None and self._answered is None:
            headers = _header_dict(self._headers)
            if self._headers_done and "content-length" not in headers and not _chunked(headers):
                # No framing: the body runs to the end of the connection.
                self._answered = Response(self._status, self._headers, b"".join(self._chunks))
                self._keep = False
                self._finish()
            else:
                self._fail(
                    ResponseFailed(
                        "the connection closed in the middle of the answer"
                        if self._headers_done
                        else "the server closed the connection without an answer"
                    )
                )
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.broken = True
        if self._waiter is not None:
            self._fail(
                ResponseFailed(
                    "the connection closed in the middle of the answer"
                    if self._headers_done
                    else "the server closed the connection without an answer"
                )
            )

    # -- the pool's --

    def send(self, request: bytes, waiter: asyncio.Future[Response]) -> None:
        assert self.transport is not None
        self._waiter = waiter
        self._head_bytes = 0
        self._headers_done = False
        self._chunks = []
        self._size = 0
        self._answered = None
        self.reusable = False
        self.transport.write(request)

    def done(self) -> None:
        """The exchange is over (answered, failed, timed out or cancelled)."""
        self._waiter = None

    def close(self) -> None:
        self.broken = True
        if self.transport is not None:
            self.transport.close()

    def _finish(self) -> None:
        response = self._answered
        assert response is not None
        self.reusable = self._keep
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(response)

    def _fail(self, exc: ResponseFailed) -> None:
        self.reusable = False
        waiter, self._waiter = self._waiter, None
        self.close()
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)


class _Done(Exception):
    """Raised from a parser callback: the answer is whole, stop parsing."""


def _chunked(headers: Mapping[str, str]) -> bool:
    encoding = headers.get("transfer-encoding", "")
    return encoding.rsplit(",", 1)[-1].strip().lower() == "chunked"


def _reason(exc: Exception) -> str:
    # llhttp's reasons name the framing fault ("Duplicate Content-Length"); never any data.
    return str(exc)[:80] or type(exc).__name__


class HttpPool:
    """Keep-alive connections to one origin, at most `max_connections` at once."""

    def __init__(
        self,
        url: str,
        *,
        connect_timeout: float = 5.0,
        max_connections: int = 256,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("expected an http:// or https:// URL with a host")
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._ssl: ssl.SSLContext | None = None
        if parts.scheme == "https":
            self._ssl = ssl_context or ssl.create_default_context()
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        host_header = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        # The scheme's default port is left out, as browsers and botocore do: KMS checks the
        # Host its SigV4 signature covers, and botocore signs "kms.example", not ":443".
        if parts.port and parts.port != (443 if parts.scheme == "https" else 80):
            host_header += f":{parts.port}"
        self.host_header = host_header
        head = f"POST {path} HTTP/1.1\r\nHost: {host_header}\r\n"
        if parts.username is not None:
            userinfo = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            head += f"Authorization: Basic {base64.b64encode(userinfo.encode()).decode()}\r\n"
        self._head = head.encode("latin-1")
        self._connect_timeout = connect_timeout
        self._idle: deque[_Connection] = deque()
        # At most max_connections exchanges at once; a caller past that waits in line (FIFO)
        # and is handed the slot of the exchange that ends.
        self._slots = Slots(max_connections)
        self.max_connections = max_connections
        self._closed = False
        # asyncio.get_running_loop() asks the kernel for the pid on every call (a fork check):
        # the pool's loop is kept, and looked up again only once it is closed (tests).
        self._loop: asyncio.AbstractEventLoop | None = None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(_Connection, self._host, self._port, ssl=self._ssl),
                self._connect_timeout,
            )
        except ssl.SSLCertVerificationError as exc:
            raise ConnectFailed(
                f"Certificate verification failed: {exc.verify_message}; a private CA needs "
                "--upstream-ca-file"
            ) from exc
        except (OSError, TimeoutError) as exc:
            raise ConnectFailed(f"could not connect ({type(exc).__name__})") from exc
        return connection

    def _take_idle(self) -> _Connection | None:
        # An idle connection the server has closed shows EOF before we write to it. One that
        # breaks after we wrote is never retried here: the server may have processed the
        # request (a send!), so the caller hears "may have been delivered".
        # Servers close idle connections on their own clock (Node.js, so Hardhat: 5 s):
        # connections idle longer than MAX_IDLE_SECONDS are not trusted with a request.
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()
            transport = connection.transport
            if (
                now - connection.idle_since < MAX_IDLE_SECONDS
                and not connection.broken
                and transport is not None
                and not transport.is_closing()
            ):
                return connection
            connection.close()
        return None

    async def post(
        self, body: bytes, seconds: float, headers: Mapping[str, str] | None = None
    ) -> Response:
        """POST `body` (JSON unless `headers` say otherwise); the whole exchange, connecting
        included, must finish within `seconds`."""
        if self._closed:
            raise ConnectFailed("the client is closed")
        if headers is None:
            extra = _JSON_CONTENT_TYPE
        else:
            extra = "".join(
                f"{name}: {value}\r\n"
                for name, value in headers.items()
                if name.lower() not in ("host", "content-length")
            ).encode("latin-1")
        request = b"%s%sContent-Length: %d\r\n\r\n%s" % (self._head, extra, len(body), body)
        loop = self._loop
        if loop is None or loop.is_closed():
            loop = self._loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        slots = self._slots
        # The deadline passing before the request is written is not a timeout of the
        # exchange: nothing was sent, and the caller must hear that (a send frees its nonce).
        if not slots.try_take():
            try:
                async with asyncio.timeout_at(deadline):
                    await slots.take()
            except TimeoutError:
                raise PoolBusy(
                    f"all {self.max_connections} connections stayed busy until the deadline"
                ) from None
        try:
            connection = self._take_idle()
            if connection is None:
                try:
                    async with asyncio.timeout_at(deadline):
                        connection = await self._connect()
                except TimeoutError:
                    raise ConnectFailed("no connection was made before the deadline") from None
            return await self._exchange(loop, connection, request, deadline)
        finally:
            slots.release()

    async def _exchange(
        self,
        loop: asyncio.AbstractEventLoop,
        connection: _Connection,
        request: bytes,
        deadline: float,
    ) -> Response:
        waiter: asyncio.Future[Response] = loop.create_future()
        timer = loop.call_at(deadline, expire, waiter)
        answered = False
        try:
            connection.send(request, waiter)
            response = await waiter
            answered = True
            return response
        finally:
            timer.cancel()
            connection.done()
            if answered and connection.reusable and not connection.broken and not self._closed:
                connection.idle_since = time.monotonic()
                self._idle.append(connection)
            else:  # failed, timed out or cancelled: an answer may still come; never reuse
                connection.close()

    async def close(self) -> None:
        self._closed = True
        while self._idle:
            self._idle.pop().close()
        await asyncio.sleep(0)  # let the transports finish closing
