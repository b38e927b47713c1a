"""A lean HTTP/1.1 client for one origin: POST a body, get status, headers and body back.

Why not aiohttp's client: on the pass-through path its request machinery (ClientRequest,
header multidicts, tracing hooks, timeout objects) costs more CPU than everything else the
proxy does for a call. A JSON-RPC node needs one verb, one path and keep-alive connections;
this pool writes the request in one buffer and parses the answer with no per-call objects
beyond the response. It speaks Content-Length and chunked bodies, TLS, and HTTP basic auth
from the URL's userinfo.

Errors say whether the request can have reached the server: `ConnectFailed` (it did not)
versus `ResponseFailed` and `TimeoutError` (it may have) — the send path keeps a nonce spent
in the second case.
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

MAX_RESPONSE_BYTES = 256 * 1024 * 1024  # eth_getLogs answers can be large; this is a backstop
MAX_HEADER_BYTES = 64 * 1024
MAX_IDLE_SECONDS = 4.0
_JSON_CONTENT_TYPE = b"Content-Type: application/json\r\n"


class HttpError(Exception):
    """Base class; the message never contains the URL (it may carry credentials)."""


class ConnectFailed(HttpError):
    """No connection could be made: the request was not delivered."""


class ResponseFailed(HttpError):
    """The connection broke or the answer was not HTTP: the request may have been delivered."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: dict[str, str]  # lower-case names; a repeated header keeps its last value
    body: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()


class _Connection(asyncio.Protocol):
    """One keep-alive connection: the answer to the request in flight is parsed as its bytes
    arrive and handed over through one future (no stream reader, no task per read)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.idle_since = 0.0
        self.broken = False  # closed, or the server said something while we were idle
        self.reusable = False  # the last answer allows another request on this connection
        self._waiter: asyncio.Future[Response] | None = None
        self._buffer = bytearray()
        self._status = 0
        self._headers: dict[str, str] = {}
        self._body_at = -1  # where the body starts in the buffer; -1 while the head is unread
        self._chunk_at = 0  # chunked bodies: the offset of the next chunk's size line
        self._chunks: list[bytes] = []
        self._chunked_size = 0
        self._keep = False

    # -- asyncio.Protocol --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport: no isinstance check here.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:  # unasked-for bytes: this connection cannot be trusted
            self.broken = True
            self.close()
            return
        self._buffer += data
        try:
            response = self._parse(eof=False)
        except ResponseFailed as exc:
            self._fail(exc)
            return
        if response is not None:
            self._finish(response)

    def eof_received(self) -> bool:
        self.broken = True
        if self._waiter is not None:
            try:
                response = self._parse(eof=True)
            except ResponseFailed as exc:
                self._fail(exc)
            else:
                if response is not None:
                    self._finish(response)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.broken = True
        if self._waiter is not None:
            self._fail(
                ResponseFailed(
                    "the server closed the connection without an answer"
                    if self._body_at < 0
                    else "the connection closed in the middle of the answer"
                )
            )

    # -- the pool's --

    def send(self, request: bytes, waiter: asyncio.Future[Response]) -> None:
        assert self.transport is not None
        self._waiter = waiter
        self._buffer.clear()
        self._body_at = -1
        self._chunk_at = 0
        self._chunks = []
        self._chunked_size = 0
        self.reusable = False
        self.transport.write(request)

    def done(self) -> None:
        """The exchange is over (answered, failed, timed out or cancelled)."""
        self._waiter = None

    def close(self) -> None:
        self.broken = True
        if self.transport is not None:
            self.transport.close()

    def _finish(self, response: Response) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(response)

    def _fail(self, exc: ResponseFailed) -> None:
        self.reusable = False
        waiter, self._waiter = self._waiter, None
        self.close()
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def _parse(self, eof: bool) -> Response | None:
        """The whole answer once it is in the buffer; None while more is to come."""
        buffer = self._buffer
        if self._body_at < 0:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_HEADER_BYTES:
                    raise ResponseFailed("the answer's headers are too large")
                if eof:
                    raise ResponseFailed("the server closed the connection without an answer")
                return None
            head = bytes(buffer[: end + 4])
            self._status, self._headers = _parse_head(head)
            keep = self._headers.get("connection", "").lower()
            # HTTP/1.1 keeps the connection unless told otherwise; HTTP/1.0 only when told.
            self._keep = keep == "keep-alive" if head.startswith(b"HTTP/1.0") else keep != "close"
            self._body_at = self._chunk_at = end + 4
        headers = self._headers
        end_at = -1  # where the answer ends in the buffer, when that is known
        if self._status in (204, 304):
            body: bytes | None = b""
            end_at = self._body_at
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            body = self._parse_chunks(eof)
        elif (length := headers.get("content-length")) is not None:
            try:
                size = int(length)
            except ValueError:
                raise ResponseFailed("the answer's body framing is malformed") from None
            if size < 0 or size > MAX_RESPONSE_BYTES:
                raise ResponseFailed("the answer's Content-Length is out of range")
            if len(buffer) - self._body_at < size:
                if eof:
                    raise ResponseFailed("the connection closed in the middle of the answer")
                return None
            end_at = self._body_at + size
            body = bytes(buffer[self._body_at : end_at])
        else:  # the body runs to the end of the connection
            if len(buffer) - self._body_at > MAX_RESPONSE_BYTES:
                raise ResponseFailed("the answer is larger than the client accepts")
            if not eof:
                return None
            self._keep = False
            body = bytes(buffer[self._body_at :])
        if body is None:
            return None
        if end_at >= 0 and len(buffer) > end_at:
            self._keep = False  # bytes after the answer: the stream is out of step
        self.reusable = self._keep
        return Response(self._status, headers, body)

    def _parse_chunks(self, eof: bool) -> bytes | None:
        buffer = self._buffer
        while True:
            line_end = buffer.find(b"\r\n", self._chunk_at)
            if line_end < 0:
                break
            try:
                size = int(bytes(buffer[self._chunk_at : line_end]).split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise ResponseFailed("the answer's body framing is malformed") from None
            if size == 0:  # the last chunk; its trailers, if any, end with an empty line
                end = buffer.find(b"\r\n\r\n", line_end)
                if end >= 0:
                    if len(buffer) > end + 4:
                        self._keep = False  # bytes after the answer: out of step
                    return b"".join(self._chunks)
                break
            chunk_end = line_end + 2 + size
            if len(buffer) < chunk_end + 2:
                break
            self._chunks.append(bytes(buffer[line_end + 2 : chunk_end]))
            self._chunk_at = chunk_end + 2
            self._chunked_size += size
            if self._chunked_size > MAX_RESPONSE_BYTES:
                raise ResponseFailed("the answer is larger than the client accepts")
        if eof:
            raise ResponseFailed("the connection closed in the middle of the answer")
        return None


def _expire(waiter: asyncio.Future[Response]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


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
        self._slots = asyncio.Semaphore(max_connections)
        self._closed = False

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
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        if self._slots.locked():
            async with asyncio.timeout_at(deadline):
                await self._slots.acquire()
        else:
            await self._slots.acquire()  # free: returns at once
        try:
            connection = self._take_idle()
            if connection is None:
                async with asyncio.timeout_at(deadline):
                    connection = await self._connect()
            return await self._exchange(loop, connection, request, deadline)
        finally:
            self._slots.release()

    async def _exchange(
        self,
        loop: asyncio.AbstractEventLoop,
        connection: _Connection,
        request: bytes,
        deadline: float,
    ) -> Response:
        waiter: asyncio.Future[Response] = loop.create_future()
        timer = loop.call_at(deadline, _expire, waiter)
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


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    status_line = lines[0].split(" ", 2)
    if len(status_line) < 2 or not status_line[0].startswith("HTTP/1."):
        raise ResponseFailed("the answer is not HTTP/1.x")
    try:
        status = int(status_line[1])
    except ValueError:
        raise ResponseFailed("the answer has no valid status code") from None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise ResponseFailed("the answer has a malformed header line")
        headers[name.strip().lower()] = value.strip()
    return status, headers
