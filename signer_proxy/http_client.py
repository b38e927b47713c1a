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
import contextlib
import ssl
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
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


class _Connection:
    __slots__ = ("idle_since", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0

    def close(self) -> None:
        self.writer.close()


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
        if parts.port:
            host_header += f":{parts.port}"
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
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    self._host, self._port, ssl=self._ssl, limit=MAX_HEADER_BYTES
                ),
                self._connect_timeout,
            )
        except ssl.SSLCertVerificationError as exc:
            raise ConnectFailed(
                f"Certificate verification failed: {exc.verify_message}; a private CA needs "
                "--upstream-ca-file"
            ) from exc
        except (OSError, TimeoutError) as exc:
            raise ConnectFailed(f"could not connect ({type(exc).__name__})") from exc
        return _Connection(reader, writer)

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
        async with self._slots, asyncio.timeout(seconds):
            # An idle connection the server has closed shows EOF before we write to it. One
            # that breaks after we wrote is never retried here: the server may have processed
            # the request (a send!), so the caller hears "may have been delivered".
            # Servers close idle connections on their own clock (Node.js, so Hardhat: 5 s):
            # connections idle longer than MAX_IDLE_SECONDS are not trusted with a request.
            now = time.monotonic()
            while self._idle:
                connection = self._idle.pop()
                if (
                    now - connection.idle_since < MAX_IDLE_SECONDS
                    and not connection.reader.at_eof()
                    and not connection.writer.is_closing()
                ):
                    return await self._exchange(connection, request)
                connection.close()
            return await self._exchange(await self._connect(), request)

    async def _exchange(self, connection: _Connection, request: bytes) -> Response:
        reusable = False
        try:
            connection.writer.write(request)
            try:
                head = await connection.reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as exc:
                raise ResponseFailed("the server closed the connection without an answer") from exc
            except asyncio.LimitOverrunError as exc:
                raise ResponseFailed("the answer's headers are too large") from exc
            status, headers = _parse_head(head)
            body = await _read_body(connection.reader, headers)
            keep = headers.get("connection", "").lower()
            # HTTP/1.1 keeps the connection unless told otherwise; HTTP/1.0 only when told.
            reusable = keep == "keep-alive" if head.startswith(b"HTTP/1.0") else keep != "close"
            return Response(status, headers, body)
        except (ConnectionError, OSError) as exc:
            raise ResponseFailed(f"the connection failed ({type(exc).__name__})") from exc
        finally:
            if reusable and not self._closed:
                connection.idle_since = time.monotonic()
                self._idle.append(connection)
            else:
                connection.close()

    async def close(self) -> None:
        self._closed = True
        while self._idle:
            connection = self._idle.pop()
            connection.close()
            with contextlib.suppress(ConnectionError, OSError):
                await connection.writer.wait_closed()


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


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    try:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return await _read_chunked(reader)
        length = headers.get("content-length")
        if length is not None:
            size = int(length)
            if size < 0 or size > MAX_RESPONSE_BYTES:
                raise ResponseFailed("the answer's Content-Length is out of range")
            return await reader.readexactly(size)
        headers["connection"] = "close"  # the body runs to the end of the connection
        body = await reader.read(MAX_RESPONSE_BYTES + 1)
        while not reader.at_eof() and len(body) <= MAX_RESPONSE_BYTES:
            more = await reader.read(MAX_RESPONSE_BYTES + 1 - len(body))
            if not more:
                break
            body += more
        if len(body) > MAX_RESPONSE_BYTES:
            raise ResponseFailed("the answer is larger than the client accepts")
        return body
    except asyncio.IncompleteReadError as exc:
        raise ResponseFailed("the connection closed in the middle of the answer") from exc
    except ValueError as exc:
        raise ResponseFailed("the answer's body framing is malformed") from exc


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    total = 0
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers, if any
                pass
            return b"".join(parts)
        total += size
        if total > MAX_RESPONSE_BYTES:
            raise ResponseFailed("the answer is larger than the client accepts")
        chunk = await reader.readexactly(size + 2)
        parts.append(chunk[:-2])
