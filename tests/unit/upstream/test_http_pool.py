"""The lean HTTP/1.1 pool against small raw servers: framing, keep-alive, and never resending."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from signer_proxy.upstream.http_pool import ConnectFailed, HttpPool, PoolBusy, ResponseFailed

Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
Starter = Callable[[Serve], Awaitable[tuple["RawServer", str]]]


class RawServer:
    def __init__(self, serve: Serve) -> None:
        self.serve = serve
        self.requests = 0
        self.connections = 0

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.serve(reader, writer)
        finally:
            writer.close()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    return head + await reader.readexactly(length)


@pytest.fixture
async def start() -> AsyncIterator[Starter]:
    servers: list[asyncio.Server] = []

    async def start(serve: Serve) -> tuple[RawServer, str]:
        raw = RawServer(serve)
        server = await asyncio.start_server(raw._handle, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        return raw, f"http://user:pa%3Ass@127.0.0.1:{port}/path?key=1"

    yield start
    for server in servers:
        server.close()


def answer(body: bytes, extra: bytes = b"") -> bytes:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    return b"%s%sContent-Length: %d\r\n\r\n%s" % (head, extra, len(body), body)


async def test_keep_alive_reuses_one_connection_and_sends_path_host_and_basic_auth(
    start: Starter,
) -> None:
    seen: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                seen.append(await read_request(reader))
            except asyncio.IncompleteReadError:
                return
            writer.write(answer(b'{"ok":1}'))

    server, url = await start(serve)
    pool = HttpPool(url)
    try:
        for _ in range(3):
            response = await pool.post(b"{}", 5)
            assert (response.status, response.content_type, response.body) == (
                200, "application/json", b'{"ok":1}',
            )  # fmt: skip
    finally:
        await pool.close()
    assert server.connections == 1
    assert seen[0].startswith(b"POST /path?key=1 HTTP/1.1\r\n")
    assert b"Authorization: Basic dXNlcjpwYTpzcw==\r\n" in seen[0]  # user:pa:ss
    assert b"Content-Length: 2\r\n\r\n{}" in seen[0]


async def test_chunked_answers_are_joined(start: Starter) -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b'4\r\n{"a"\r\n3;ext=1\r\n:1}\r\n0\r\nTrailer: x\r\n\r\n'
        )

    _, url = await start(serve)
    pool = HttpPool(url)
    try:
        assert (await pool.post(b"{}", 5)).body == b'{"a":1}'
    finally:
        await pool.close()


async def test_an_idle_connection_the_server_closed_is_not_used(start: Starter) -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer(b"1"))
        await writer.drain()  # then close: the pool must notice before its next request

    server, url = await start(serve)
    pool = HttpPool(url)
    try:
        assert (await pool.post(b"{}", 5)).body == b"1"
        await asyncio.sleep(0.05)
        assert (await pool.post(b"{}", 5)).body == b"1"
    finally:
        await pool.close()
    assert server.connections == 2


async def test_a_connection_dropped_after_the_request_is_never_resent(start: Starter) -> None:
    """The server may have acted on it (eth_sendRawTransaction): one request, one error."""
    requests = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal requests
        while True:
            try:
                await read_request(reader)
            except asyncio.IncompleteReadError:
                return
            requests += 1
            if requests == 1:
                writer.write(answer(b"1"))  # the connection goes back to the pool
            else:
                return  # read the second request, then hang up without answering

    _, url = await start(serve)
    pool = HttpPool(url)
    try:
        await pool.post(b"{}", 5)
        with pytest.raises(ResponseFailed):
            await pool.post(b"{}", 5)
    finally:
        await pool.close()
    assert requests == 2


async def test_nothing_listening_is_connect_failed_and_slowness_a_timeout(start: Starter) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pool = HttpPool(f"http://127.0.0.1:{port}")
    with pytest.raises(ConnectFailed):
        await pool.post(b"{}", 5)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(5)

    _, url = await start(serve)
    slow = HttpPool(url)
    try:
        with pytest.raises(TimeoutError):
            await slow.post(b"{}", 0.1)
    finally:
        await slow.close()


async def test_a_connection_not_made_before_the_deadline_is_connect_failed(
    start: Starter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deadline passing while connecting is "not delivered", not a timeout of the
    exchange (which would keep a send's nonce spent)."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer(b"1"))

    raw, url = await start(serve)
    pool = HttpPool(url, connect_timeout=5)
    connect = pool._connect

    async def slow_connect() -> object:
        await asyncio.sleep(0.5)  # a SYN the far side is slow to take
        return await connect()

    monkeypatch.setattr(pool, "_connect", slow_connect)
    try:
        with pytest.raises(ConnectFailed, match="before the deadline") as info:
            await pool.post(b"{}", 0.05)
        assert not isinstance(info.value, PoolBusy)
        assert raw.connections == 0
    finally:
        await pool.close()


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(b"SMTP ready\r\n\r\n", id="not-http"),
        pytest.param(b"HTTP/1.1 abc OK\r\n\r\n", id="bad-status"),
        pytest.param(b"HTTP/1.1 200 OK\r\nbroken header\r\n\r\n", id="bad-header"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", id="short-body"),
    ],
)
async def test_malformed_answers_are_response_failed(start: Starter, reply: bytes) -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(reply)
        await writer.drain()

    _, url = await start(serve)
    pool = HttpPool(url)
    try:
        with pytest.raises(ResponseFailed):
            await pool.post(b"{}", 5)
    finally:
        await pool.close()


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nokk",
            id="conflicting-content-length",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
            id="repeated-content-length",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n"
            b"2\r\nok\r\n0\r\n\r\n",
            id="chunked-and-content-length",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nok\r\n0\r\n\r\n",
            id="bad-chunk-size",
        ),
        pytest.param(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n", id="101"),
    ],
)
async def test_ambiguous_framing_is_refused_not_guessed(start: Starter, reply: bytes) -> None:
    """A node (or what sits in front of it) whose answer two parsers could read differently:
    ResponseFailed, never one of the readings (the old hand parser kept the last length)."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(reply)
        await writer.drain()
        await asyncio.sleep(0.5)

    _, url = await start(serve)
    pool = HttpPool(url)
    try:
        with pytest.raises(ResponseFailed):
            await pool.post(b"{}", 5)
    finally:
        await pool.close()


@pytest.mark.parametrize(
    ("reply", "body"),
    [
        pytest.param(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n"
            + answer(b'{"ok":1}'),
            b'{"ok":1}',
            id="1xx-skipped",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
            b'3;ext=1\r\n{"o\r\n5\r\nk":1}\r\n0\r\nTrailer: x\r\n\r\n',
            b'{"ok":1}',
            id="chunked-last-with-extension-and-trailer",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunkedx\r\nConnection: close\r\n\r\n2\r\nok",
            b"2\r\nok",
            id="chunked-as-a-substring-is-not-chunked",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nto the end",
            b"to the end",
            id="body-to-eof",
        ),
    ],
)
async def test_framing_table(start: Starter, reply: bytes, body: bytes) -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        for i in range(0, len(reply), 7):  # in small pieces: the parser keeps state across reads
            writer.write(reply[i : i + 7])
            await writer.drain()
        if b"close" in reply:
            writer.close()

    _, url = await start(serve)
    pool = HttpPool(url)
    try:
        response = await pool.post(b"{}", 5)
        assert (response.status, response.body) == (200, body)
    finally:
        await pool.close()


async def test_an_http_1_0_answer_without_keep_alive_closes_the_connection(start: Starter) -> None:
    """Python's http.server answers HTTP/1.0 and hangs up: never reuse such a connection."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n1")
        await writer.drain()
        await asyncio.sleep(0.2)  # hang up late: the pool must not wait for the FIN

    server, url = await start(serve)
    pool = HttpPool(url)
    try:
        for _ in range(3):
            assert (await pool.post(b"{}", 5)).body == b"1"
    finally:
        await pool.close()
    assert server.connections == 3


async def test_a_connection_idle_too_long_is_not_trusted(
    start: Starter, monkeypatch: pytest.MonkeyPatch
) -> None:
    import signer_proxy.upstream.http_pool as http_client

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                await read_request(reader)
            except asyncio.IncompleteReadError:
                return
            writer.write(answer(b"1"))

    monkeypatch.setattr(http_client, "MAX_IDLE_SECONDS", 0.0)
    server, url = await start(serve)
    pool = HttpPool(url)
    try:
        await pool.post(b"{}", 5)
        await pool.post(b"{}", 5)
    finally:
        await pool.close()
    assert server.connections == 2


@pytest.mark.parametrize(
    ("url", "host"),
    [
        pytest.param(
            "https://kms.us-east-1.amazonaws.com", "kms.us-east-1.amazonaws.com", id="https"
        ),
        pytest.param("https://kms.example:443/", "kms.example", id="https-default-port"),
        pytest.param("http://node.example:80", "node.example", id="http-default-port"),
        pytest.param("http://127.0.0.1:8545", "127.0.0.1:8545", id="other-port"),
        pytest.param("https://node.example:80", "node.example:80", id="https-on-80"),
        pytest.param("http://[::1]:8545", "[::1]:8545", id="v6"),
    ],
)
def test_host_header_leaves_out_the_default_port_as_sigv4_signs_it(url: str, host: str) -> None:
    from botocore.auth import _host_from_url

    assert HttpPool(url).host_header == host
    assert _host_from_url(url) == host


async def test_at_most_max_connections_exchanges_at_once_the_rest_wait_in_line(
    start: Starter,
) -> None:
    """Two slots: a third caller waits for one; one that gives up (its deadline, or
    cancelled) leaves the line without taking a slot, and every slot comes back."""
    release = asyncio.Event()
    busy = 0
    most = 0
    seen: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal busy, most
        while True:
            try:
                request = await read_request(reader)
            except asyncio.IncompleteReadError:
                return
            seen.append(request)
            busy += 1
            most = max(most, busy)
            if b"slow" in request:
                await release.wait()
            busy -= 1
            writer.write(answer(request.rsplit(b"\r\n\r\n", 1)[1]))
            await writer.drain()

    _, url = await start(serve)
    pool = HttpPool(url, max_connections=2)
    first = asyncio.create_task(pool.post(b'"slow1"', 5))
    second = asyncio.create_task(pool.post(b'"slow2"', 5))
    await asyncio.sleep(0.05)
    # Both slots taken: its deadline passes in line, before anything is written, and the
    # error says so (not a timeout, which means "may have been delivered").
    with pytest.raises(PoolBusy, match="all 2 connections stayed busy"):
        await pool.post(b'"late"', 0.05)
    cancelled = asyncio.create_task(pool.post(b'"gone"', 5))
    waiting = asyncio.create_task(pool.post(b'"third"', 5))
    await asyncio.sleep(0.05)
    cancelled.cancel()
    assert not waiting.done() and most == 2
    release.set()
    assert [(await t).body for t in (first, second, waiting)] == [
        b'"slow1"',
        b'"slow2"',
        b'"third"',
    ]
    assert cancelled.cancelled() and most == 2
    assert not any(b'"late"' in r or b'"gone"' in r for r in seen)  # never written
    # Every slot came back: two exchanges at once again, without waiting in line.
    release.clear()
    again = [asyncio.create_task(pool.post(b'"slow%d"' % i, 5)) for i in (3, 4)]
    await asyncio.sleep(0.05)
    assert busy == 2
    release.set()
    assert [(await t).body for t in again] == [b'"slow3"', b'"slow4"']
    await pool.close()


async def test_one_connection_answers_in_every_framing_one_after_another(
    start: Starter,
) -> None:
    """The connection's one parser reads answer after answer: Content-Length, chunked with a
    trailer, interim 1xx, a status other than 200 and headers told apart per answer."""
    replies = [
        answer(b'{"n":1}', b"X-Seen: first\r\n"),
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\n"
        b'Transfer-Encoding: chunked\r\n\r\n3\r\n{"n\r\n4\r\n":2}\r\n0\r\nTrailer: x\r\n\r\n',
        b"HTTP/1.1 100 Continue\r\n\r\n" + answer(b'{"n":3}'),
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Type: "
        b"TEXT/HTML\r\nContent-Length: 4\r\n\r\nbusy",
        answer(b'{"n":5}'),
    ]

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for reply in replies:
            await read_request(reader)
            writer.write(reply)
        await reader.read()

    server, url = await start(serve)
    pool = HttpPool(url)
    try:
        got = [await pool.post(b"{}", 5) for _ in replies]
    finally:
        await pool.close()
    assert server.connections == 1
    assert [(r.status, r.content_type, r.body) for r in got] == [
        (200, "application/json", b'{"n":1}'),
        (200, "application/json", b'{"n":2}'),
        (200, "application/json", b'{"n":3}'),
        (503, "text/html", b"busy"),  # a repeated header: the last one, as `headers` has it
        (200, "application/json", b'{"n":5}'),
    ]
    assert got[0].headers["x-seen"] == "first" and "x-seen" not in got[4].headers
    assert got[3].headers["content-type"] == "TEXT/HTML"
