"""The fast lane over raw sockets: keep-alive, pipelining, hand-off to aiohttp mid-connection,
framing the lane leaves to aiohttp, malformed heads, the door (Host, API keys, CORS, request
ids), drain and disconnects.

Every test runs against an in-process proxy (asyncio's loop, as pytest runs) and a real
`signer-proxy serve` (uvloop, as production runs), both in front of a real anvil through a
recording node front. aiohttp names itself in a Server header and the lane does not: that is
how a test tells which of the two answered.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import re
import signal
import socket
import struct
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from signer_proxy.keys.local import LocalKeySigner
from signer_proxy.upstream.ws import derive_ws_url
from tests.auth_support import API_KEYS, write_api_keys_file
from tests.conftest import (
    REGION,
    Anvil,
    KeyFactory,
    ProxyFactory,
    ProxyProcess,
    proxy_settings,
    start_anvil,
    start_proxy_process,
    stop,
)
from tests.integration.node_front import NodeFront

pytestmark = pytest.mark.integration

MAX_BODY = 4096
SLOW = "eth_getBalance"  # the node front holds this method for SLOW_SECONDS
SLOW_SECONDS = 0.5
ORIGIN = "https://app.example"
TOKEN = API_KEYS["ci"]
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NO_AUTH = {"Authorization": ""}  # an empty value: the header is left out
CHAIN_ID = hex(31337)
IDLE_ACCOUNT = "0x000000000000000000000000000000000000dEaD"


# --- a raw HTTP/1.1 client ----------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def by_aiohttp(self) -> bool:
        """aiohttp names itself; the lane writes no Server header."""
        return "aiohttp" in self.headers.get("server", "")


class Connection:
    """One client connection: write bytes, read replies in order."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def reply(self, within: float = 10.0) -> Reply:
        async with asyncio.timeout(within):
            return await self._reply()

    async def _reply(self) -> Reply:
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        if status == 100:  # interim: the real reply follows
            return await self._reply()
        if status in (101, 204) or 100 <= status < 200:
            body = b""
        elif "content-length" in headers:
            body = await self.reader.readexactly(int(headers["content-length"]))
        else:
            body = await self.reader.read()  # until the server closes
        return Reply(status, headers, body)

    async def closed_by_server(self, within: float = 5.0) -> bool:
        """True when the server closes the connection within `within` s without sending more."""
        try:
            async with asyncio.timeout(within):
                return await self.reader.read(1) == b""
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            await self.writer.wait_closed()


def call(method: str, params: Any = None, call_id: Any = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": call_id, "method": method, "params": params or []}


def encode(body: Any) -> bytes:
    return body if isinstance(body, bytes) else json.dumps(body).encode()


def post(
    body: Any,
    headers: dict[str, str] | None = None,
    *,
    target: str = "/",
    version: str = "HTTP/1.1",
    auth: bool = True,
) -> bytes:
    """A POST with a Content-Length body: the lane's (over HTTP/1.1 to /)."""
    data = encode(body)
    fields = {
        "Host": "127.0.0.1",
        "Content-Type": "application/json",
        **(AUTH if auth else {}),
        **(headers or {}),
        "Content-Length": str(len(data)),
    }
    head = "".join(f"{name}: {value}\r\n" for name, value in fields.items() if value)
    return f"POST {target} {version}\r\n{head}\r\n".encode("latin-1") + data


def chunked_post(
    body: Any, headers: dict[str, str] | None = None, *, target: str = "/", auth: bool = True
) -> bytes:
    """The same POST with a chunked body: aiohttp's."""
    data = encode(body)
    fields = {
        "Host": "127.0.0.1",
        "Content-Type": "application/json",
        **(AUTH if auth else {}),
        **(headers or {}),
        "Transfer-Encoding": "chunked",
    }
    head = "".join(f"{name}: {value}\r\n" for name, value in fields.items() if value)
    half = len(data) // 2
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in (data[:half], data[half:]) if c)
    return f"POST {target} HTTP/1.1\r\n{head}\r\n".encode("latin-1") + chunks + b"0\r\n\r\n"


def get(path: str, headers: dict[str, str] | None = None) -> bytes:
    fields = {"Host": "127.0.0.1", **(headers or {})}
    head = "".join(f"{name}: {value}\r\n" for name, value in fields.items())
    return f"GET {path} HTTP/1.1\r\n{head}\r\n".encode("latin-1")


def assert_result(reply: Reply, call_id: Any, result: Any = CHAIN_ID) -> None:
    assert reply.status == 200, (reply.status, reply.body)
    assert reply.headers["content-type"].startswith("application/json")
    assert reply.json == {"jsonrpc": "2.0", "id": call_id, "result": result}


# --- the servers --------------------------------------------------------------------------------


@dataclass
class Node:
    anvil: Anvil
    front: NodeFront


@dataclass
class Server:
    """A listening proxy: in-process (asyncio) or a `serve` process (uvloop)."""

    name: str
    host: str
    port: int
    process: ProxyProcess | None = None

    async def connect(self) -> Connection:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        return Connection(reader, writer)


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    anvil = start_anvil()
    front = NodeFront(anvil.url, delays={SLOW: SLOW_SECONDS})
    yield Node(anvil, front)
    front.stop()
    stop(anvil.process)


@pytest.fixture(scope="module")
def api_keys_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_api_keys_file(tmp_path_factory.mktemp("lane"))


def serve_args(node: Node, kms_url: str, key_ref: str, api_keys: Path, *extra: str) -> list[str]:
    return [
        "--upstream", node.front.url, "--upstream-ws", derive_ws_url(node.anvil.url),
        "--aws-region", REGION, "--aws-endpoint-url", kms_url, "--kms-key", key_ref,
        "--api-keys-file", str(api_keys), "--allow-api-key-in-query",
        "--cors-origin", ORIGIN, "--max-body-bytes", str(MAX_BODY), *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def serve_process(
    node: Node, kms: Any, make_key: KeyFactory, api_keys_file: Path
) -> Iterator[ProxyProcess]:
    """One `signer-proxy serve` for the module's tests; it must exit 0 at the end."""
    key = make_key()
    proxy = start_proxy_process(*serve_args(node, kms.url, key.arn, api_keys_file))
    yield proxy
    stop(proxy.process)
    assert proxy.process.returncode == 0


@pytest.fixture(params=["asyncio", "uvloop"])
async def server(
    request: pytest.FixtureRequest, start_proxy: ProxyFactory, node: Node, api_keys_file: Path
) -> Server:
    if request.param == "uvloop":
        proxy = request.getfixturevalue("serve_process")
        host, port = proxy.url.removeprefix("http://").rsplit(":", 1)
        return Server("uvloop", host, int(port), proxy)
    settings = proxy_settings(
        node.front.url,
        "http://127.0.0.1:9",  # never used: the key is local
        upstream_ws=derive_ws_url(node.anvil.url),
        api_keys_file=str(api_keys_file),
        allow_api_key_in_query=True,
        cors_origins=(ORIGIN,),
        max_body_bytes=MAX_BODY,
    )
    proxy = await start_proxy(settings, signers=[LocalKeySigner(b"\x0a" * 32, "key-a")])
    return Server("asyncio", proxy.client.host, proxy.client.port)


@pytest.fixture
async def connection(server: Server) -> AsyncIterator[Connection]:
    opened = await server.connect()
    yield opened
    await opened.close()


# --- keep-alive, pipelining, hand-off -----------------------------------------------------------


async def test_keep_alive_posts_then_hand_off_then_posts_on_one_connection(
    connection: Connection,
) -> None:
    for call_id in range(1, 31):
        await connection.send(post(call("eth_chainId", call_id=call_id)))
        reply = await connection.reply()
        assert_result(reply, call_id)
        assert not reply.by_aiohttp
        assert "connection" not in reply.headers  # kept open

    await connection.send(get("/health"))
    health = await connection.reply()
    assert health.status == 200 and health.by_aiohttp

    for call_id in (31, 32):  # the connection is aiohttp's now, and still answers POSTs
        await connection.send(post(call("eth_chainId", call_id=call_id)))
        reply = await connection.reply()
        assert_result(reply, call_id)
        assert reply.by_aiohttp


async def test_pipelined_requests_are_answered_in_order(connection: Connection) -> None:
    requests = [post(call("eth_chainId", call_id=i)) for i in range(1, 6)]
    requests.append(post(call(SLOW, [IDLE_ACCOUNT, "latest"], call_id=6)))  # slow, mid-way
    requests += [post(call("eth_chainId", call_id=i)) for i in range(7, 10)]
    requests.append(get("/health"))  # the hand-off, behind requests the lane still answers
    requests.append(post(call("eth_chainId", call_id=11)))
    await connection.send(b"".join(requests))

    replies = [await connection.reply() for _ in requests]

    for call_id in (1, 2, 3, 4, 5, 7, 8, 9):
        assert_result(replies[call_id - 1], call_id)
        assert not replies[call_id - 1].by_aiohttp
    assert_result(replies[5], 6, "0x0")
    assert replies[9].status == 200 and replies[9].by_aiohttp
    assert_result(replies[10], 11)


async def test_a_request_sent_byte_by_byte_is_answered(connection: Connection) -> None:
    sock = connection.writer.transport.get_extra_info("socket")
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # each byte its own segment
    for call_id in (1, 2):
        for byte in post(call("eth_chainId", call_id=call_id)):
            await connection.send(bytes([byte]))
            await asyncio.sleep(0.0005)
        reply = await connection.reply()
        assert_result(reply, call_id)
        assert not reply.by_aiohttp


async def test_connection_close_is_honoured(connection: Connection) -> None:
    await connection.send(post(call("eth_chainId"), {"Connection": "close"}))
    reply = await connection.reply()
    assert_result(reply, 1)
    assert reply.headers["connection"] == "close"
    assert await connection.closed_by_server()


# --- what the lane leaves to aiohttp ------------------------------------------------------------


async def test_chunked_post_is_answered_by_aiohttp(connection: Connection) -> None:
    await connection.send(chunked_post(call("eth_chainId", call_id=7)))
    reply = await connection.reply()
    assert_result(reply, 7)
    assert reply.by_aiohttp


async def test_http_1_0_post_is_answered_by_aiohttp(connection: Connection) -> None:
    await connection.send(post(call("eth_chainId", call_id=8), version="HTTP/1.0"))
    reply = await connection.reply()
    assert_result(reply, 8)
    assert reply.by_aiohttp
    assert await connection.closed_by_server()  # HTTP/1.0 without keep-alive


@pytest.mark.parametrize("version", ["HTTP/1.0", "HTTP/1.1"])
async def test_a_request_then_half_close_is_answered_by_aiohttp(
    connection: Connection, version: str
) -> None:
    """The client sends its request, then shuts its sending side (as `curl -0` / HTTP/1.0
    clients that read until close do): the node call is made, so the reply must come back.
    aiohttp alone closes the socket on the EOF and the answer is lost (issue 22, item 6)."""
    request = post(call(SLOW, [IDLE_ACCOUNT, "latest"], call_id=11), version=version)
    if version == "HTTP/1.1":  # chunked: aiohttp's, as HTTP/1.0 is
        request = chunked_post(call(SLOW, [IDLE_ACCOUNT, "latest"], call_id=11))
    await connection.send(request)
    await asyncio.sleep(0.1)  # aiohttp has the request; the node holds it for SLOW_SECONDS
    connection.writer.write_eof()
    reply = await connection.reply()
    assert reply.status == 200, (reply.status, reply.body)
    assert reply.json["id"] == 11 and reply.json["result"].startswith("0x")
    assert reply.by_aiohttp
    assert await connection.closed_by_server()


async def test_a_half_close_on_an_idle_aiohttp_connection_closes_it(
    connection: Connection,
) -> None:
    await connection.send(chunked_post(call("eth_chainId", call_id=12)))
    assert_result(await connection.reply(), 12)
    connection.writer.write_eof()
    assert await connection.closed_by_server()


async def test_expect_100_continue_post_is_answered_by_aiohttp(connection: Connection) -> None:
    request = post(call("eth_chainId", call_id=9), {"Expect": "100-continue"})
    head, _, body = request.partition(b"\r\n\r\n")
    await connection.send(head + b"\r\n\r\n")
    async with asyncio.timeout(5):
        interim = await connection.reader.readuntil(b"\r\n\r\n")
    assert interim.startswith(b"HTTP/1.1 100 Continue")
    await connection.send(body)
    reply = await connection.reply()
    assert_result(reply, 9)
    assert reply.by_aiohttp


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_body_over_max_body_bytes_is_refused_with_413(server: Server, framing: str) -> None:
    big = call("eth_chainId", ["x" * MAX_BODY])
    connection = await server.connect()
    try:
        await connection.send(post(big) if framing == "content-length" else chunked_post(big))
        reply = await connection.reply()
    finally:
        await connection.close()
    assert reply.status == 413
    assert reply.json["error"]["code"] == -32600  # BodyTooLarge
    assert f"over the limit of {MAX_BODY} bytes" in reply.json["error"]["message"]
    assert "--max-body-bytes" in reply.json["error"]["message"]
    await assert_still_serving(server)


async def assert_still_serving(server: Server) -> None:
    connection = await server.connect()
    try:
        await connection.send(post(call("eth_chainId", call_id="after")))
        assert_result(await connection.reply(), "after")
    finally:
        await connection.close()


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(b"POST / HTTP/1.1\nHost: 127.0.0.1\nContent-Length: 2\n\n{}", id="bare-lf"),
        pytest.param(b"HELLO THERE\r\n\r\n", id="garbage-request-line"),
        pytest.param(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" * 20, id="tls-hello"),
        pytest.param(post(call("eth_chainId"), {"X-Pad": "x" * 20_000}), id="huge-head-one-header"),
        pytest.param(
            post(call("eth_chainId"), {f"X-Pad-{i}": "x" * 100 for i in range(200)}),
            id="huge-head-many-headers",
        ),
        pytest.param(
            post(call("eth_chainId"), {f"X-{i}": "x" for i in range(200)}),
            id="too-many-headers",
        ),
        pytest.param(post(call("eth_chainId"), {"X-Pad": "x" * 8200}), id="head-just-over-8190"),
        pytest.param(
            # One header to a CRLF parser, two to one that ends lines at LF: smuggling bait.
            post(call("eth_chainId"), {"X-Pad": "a\nTransfer-Encoding: chunked"}),
            id="bare-lf-in-a-value",
        ),
        pytest.param(
            post(call("eth_chainId")).replace(b"Content-Length: ", b"Content-Length: +"),
            id="signed-content-length",
        ),
        pytest.param(
            post(call("eth_chainId"))
            + b"\r\n"
            + post(call("eth_chainId"))[:-5].replace(
                b"Content-Length:", b"Content-Length: 1\r\nContent-Length:"
            ),
            id="second-request-two-lengths",
        ),
    ],
)
async def test_malformed_heads_get_an_http_error_and_the_server_keeps_serving(
    server: Server, request_bytes: bytes
) -> None:
    connection = await server.connect()
    try:
        await connection.send(request_bytes)
        reply = await connection.reply()
        while reply.status == 200:  # a well-formed request ahead of the malformed one
            reply = await connection.reply()
    finally:
        await connection.close()
    assert 400 <= reply.status < 500, (reply.status, reply.body)
    assert reply.by_aiohttp
    await assert_still_serving(server)


# --- WebSocket after the lane -------------------------------------------------------------------


def ws_frame(opcode: int, payload: bytes) -> bytes:
    """A masked client frame (RFC 6455)."""
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
    else:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
    return header + mask + masked


async def read_ws_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    first, second = await reader.readexactly(2)
    size = second & 0x7F
    if size == 126:
        (size,) = struct.unpack("!H", await reader.readexactly(2))
    elif size == 127:
        (size,) = struct.unpack("!Q", await reader.readexactly(8))
    return first & 0x0F, await reader.readexactly(size)


async def test_websocket_upgrade_after_fast_lane_posts_on_the_same_connection(
    connection: Connection,
) -> None:
    for call_id in (1, 2, 3):
        await connection.send(post(call("eth_chainId", call_id=call_id)))
        reply = await connection.reply()
        assert_result(reply, call_id)
        assert not reply.by_aiohttp

    key = base64.b64encode(os.urandom(16)).decode()
    await connection.send(
        get(
            "/",
            {
                **AUTH,
                "Upgrade": "websocket",
                "Connection": "Upgrade",
                "Sec-WebSocket-Key": key,
                "Sec-WebSocket-Version": "13",
            },
        )
    )
    upgraded = await connection.reply()
    assert upgraded.status == 101, (upgraded.status, upgraded.body)
    assert upgraded.headers["upgrade"].lower() == "websocket"

    await connection.send(ws_frame(0x1, json.dumps(call("eth_chainId", call_id=4)).encode()))
    async with asyncio.timeout(10):
        opcode, payload = await read_ws_frame(connection.reader)
    assert opcode == 0x1
    assert json.loads(payload) == {"jsonrpc": "2.0", "id": 4, "result": CHAIN_ID}
    await connection.send(ws_frame(0x8, struct.pack("!H", 1000)))
    async with asyncio.timeout(10):
        opcode, _ = await read_ws_frame(connection.reader)
    assert opcode == 0x8


# --- the door, through the lane -----------------------------------------------------------------

REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")


@pytest.mark.parametrize("send", [post, chunked_post], ids=["lane", "aiohttp"])
async def test_request_id_echoed_when_valid_else_generated(
    connection: Connection, send: Any
) -> None:
    await connection.send(send(call("eth_chainId"), {"X-Request-Id": "trace-42.a:b"}))
    assert (await connection.reply()).headers["x-request-id"] == "trace-42.a:b"

    fresh = []
    for headers in ({"X-Request-Id": "not valid!"}, {}, {}):
        await connection.send(send(call("eth_chainId"), headers))
        reply = await connection.reply()
        assert_result(reply, 1)
        fresh.append(reply.headers["x-request-id"])
    assert all(REQUEST_ID.fullmatch(i) for i in fresh), fresh
    assert "not valid!" not in fresh
    assert len(set(fresh)) == 3


async def test_cors_headers_for_an_allowed_origin(connection: Connection) -> None:
    await connection.send(post(call("eth_chainId"), {"Origin": ORIGIN}))
    reply = await connection.reply()
    assert_result(reply, 1)
    assert not reply.by_aiohttp
    assert reply.headers["access-control-allow-origin"] == ORIGIN
    assert "X-Request-Id" in reply.headers["access-control-expose-headers"]
    assert reply.headers["vary"] == "Origin"

    await connection.send(post(call("eth_chainId"), {"Origin": "https://evil.example"}))
    refused = await connection.reply()
    assert refused.status == 403
    assert refused.json["error"]["code"] == -32041
    assert "access-control-allow-origin" not in refused.headers


@pytest.mark.parametrize(
    ("headers", "target", "status", "code", "fragment"),
    [
        pytest.param(
            {"Host": "evil.example:8545"}, "/", 403, -32041, "Host 'evil.example'", id="host"
        ),
        pytest.param(NO_AUTH, "/", 401, -32040, "authentication required", id="none"),
        pytest.param(
            {"Authorization": "Bearer spk_" + "x" * 40}, "/", 401, -32040, "not valid", id="wrong"
        ),
        pytest.param(
            {"Authorization": "Basic dXNlcjpwYXNz"}, "/", 401, -32040, "Bearer", id="basic"
        ),
        pytest.param({}, "/?key=spk_" + "y" * 40, 401, -32040, "not valid", id="wrong-query-key"),
        pytest.param({}, f"/?key=&key={TOKEN}", 401, -32040, "not valid", id="empty-query-key"),
    ],
)
async def test_door_refusals_through_the_lane(
    connection: Connection,
    headers: dict[str, str],
    target: str,
    status: int,
    code: int,
    fragment: str,
) -> None:
    await connection.send(post(call("eth_chainId"), headers, target=target, auth=False))
    reply = await connection.reply()
    assert reply.status == status, (reply.status, reply.body)
    assert not reply.by_aiohttp
    assert reply.json["error"]["code"] == code
    assert fragment in reply.json["error"]["message"]
    if status == 401:
        assert reply.headers["www-authenticate"] == 'Bearer realm="signer-proxy"'
    assert TOKEN not in reply.body.decode()
    # A refusal does not end the connection.
    await connection.send(post(call("eth_chainId", call_id=2)))
    assert_result(await connection.reply(), 2)


async def test_api_key_in_the_query_when_allowed(connection: Connection) -> None:
    await connection.send(post(call("eth_chainId"), target=f"/?key={TOKEN}", auth=False))
    reply = await connection.reply()
    assert_result(reply, 1)
    assert not reply.by_aiohttp


# --- the lane and aiohttp answer alike ----------------------------------------------------------

SAME_ANSWER_CASES = [
    pytest.param(call("eth_chainId"), {}, "/", id="call"),
    pytest.param(
        [call("eth_chainId", call_id=1), call("eth_accounts", call_id=2)], {}, "/", id="batch"
    ),
    pytest.param(call("eth_getCode", [IDLE_ACCOUNT, "latest"]), {}, "/", id="pass-through"),
    pytest.param(b'{"jsonrpc": "2.0", "id": 1, "method"', {}, "/", id="parse-error"),
    pytest.param(b"[]", {}, "/", id="empty-batch"),
    pytest.param({"jsonrpc": "2.0", "id": 1}, {}, "/", id="invalid-request"),
    pytest.param(call("no_such_method"), {}, "/", id="method-not-found"),
    pytest.param({"jsonrpc": "2.0", "method": "eth_chainId"}, {}, "/", id="notification"),
    pytest.param(call("eth_chainId"), {"Authorization": "Bearer nope"}, "/", id="refused-401"),
    pytest.param(call("eth_chainId"), {"Host": "evil.example"}, "/", id="refused-403"),
    pytest.param(call("eth_chainId"), {"Origin": ORIGIN}, "/", id="cors"),
    pytest.param(call("eth_chainId"), NO_AUTH, f"/?key={TOKEN}", id="query-key"),
    pytest.param(call("eth_chainId"), NO_AUTH, f"/?key=&key={TOKEN}", id="empty-query-key"),
    pytest.param(call("eth_chainId"), NO_AUTH, "/?key=", id="only-empty-query-key"),
]
COMPARED_HEADERS = (
    "content-type",
    "www-authenticate",
    "access-control-allow-origin",
    "access-control-expose-headers",
    "vary",
    "retry-after",
)


@pytest.mark.parametrize(("body", "headers", "target"), SAME_ANSWER_CASES)
async def test_lane_and_aiohttp_give_the_same_answer(
    connection: Connection, body: Any, headers: dict[str, str], target: str
) -> None:
    await connection.send(post(body, headers, target=target))
    lane = await connection.reply()
    await connection.send(chunked_post(body, headers, target=target))
    fallback = await connection.reply()

    assert not lane.by_aiohttp and fallback.by_aiohttp
    assert lane.status == fallback.status
    assert lane.body == fallback.body
    for name in COMPARED_HEADERS:
        assert lane.headers.get(name) == fallback.headers.get(name), name


async def test_notification_only_body_gets_204_without_a_body(connection: Connection) -> None:
    notifications = [
        {"jsonrpc": "2.0", "method": "eth_chainId"},
        [{"jsonrpc": "2.0", "method": "eth_chainId"}, {"jsonrpc": "2.0", "method": "eth_accounts"}],
    ]
    for body in notifications:
        await connection.send(post(body))
        reply = await connection.reply()
        assert reply.status == 204
        assert "content-length" not in reply.headers and "content-type" not in reply.headers
    # Nothing stray followed the 204s: the next reply on the connection is whole.
    await connection.send(post(call("eth_chainId", call_id=3)))
    assert_result(await connection.reply(), 3)


async def node_has_a_new_call(node: Node, before: int) -> None:
    """Wait until the node front has received a call past its first `before`."""

    def wait() -> None:
        deadline = time.monotonic() + 5
        while len(node.front.bodies) == before:
            assert time.monotonic() < deadline, "the call never reached the node"
            time.sleep(0.005)

    await asyncio.to_thread(wait)


# --- disconnects and drain ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "cut",
    [
        pytest.param(lambda r: r[:10], id="mid-head"),
        pytest.param(lambda r: r[: r.index(b"\r\n\r\n") + 4], id="after-head"),
        pytest.param(lambda r: r[:-3], id="mid-body"),
        pytest.param(lambda r: r, id="whole-request-slow-answer"),
    ],
)
async def test_client_gone_mid_request_does_not_break_the_server(
    server: Server, node: Node, cut: Any
) -> None:
    before = len(node.front.bodies)
    request = post(call(SLOW, [IDLE_ACCOUNT, "latest"]))
    connection = await server.connect()
    await connection.send(cut(request))
    if cut(request) == request:  # wait until the node holds the call, then hang up
        await node_has_a_new_call(node, before)
    connection.writer.transport.abort()
    await assert_still_serving(server)
    if cut(request) == request:
        await asyncio.sleep(SLOW_SECONDS + 0.2)  # the orphaned reply has nowhere to go
        await assert_still_serving(server)


async def test_a_client_gone_before_its_answer_on_the_aiohttp_path_is_logged(
    start_proxy: ProxyFactory, node: Node, api_keys_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """HTTP/1.0 (aiohttp's), the node holds the call, the client hangs up: the call still
    runs, and the log says its answer was lost, with the answer (issue 22, item 6)."""
    settings = proxy_settings(
        node.front.url, "http://127.0.0.1:9", api_keys_file=str(api_keys_file)
    )
    proxy = await start_proxy(settings, signers=[LocalKeySigner(b"\x0a" * 32, "key-a")])
    server = Server("asyncio", proxy.client.host, proxy.client.port)
    before = len(node.front.bodies)
    connection = await server.connect()
    await connection.send(
        post(call(SLOW, [IDLE_ACCOUNT, "latest"], call_id=21), version="HTTP/1.0")
    )
    await node_has_a_new_call(node, before)
    # A reset, not a FIN: a FIN alone is a half-close, and the answer is written.
    sock = connection.writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    connection.writer.transport.abort()
    with caplog.at_level(logging.WARNING, "signer_proxy.transport.http"):
        await asyncio.sleep(SLOW_SECONDS + 0.3)
    lines = [r.getMessage() for r in caplog.records if "delivery ambiguous" in r.getMessage()]
    assert len(lines) == 1 and '"id":21' in lines[0], lines
    await assert_still_serving(server)


async def start_slow_call(server: Server, node: Node) -> Connection:
    """A connection whose call the node front holds (SLOW_SECONDS), once the node has it."""
    before = len(node.front.bodies)
    busy = await server.connect()
    await busy.send(post(call(SLOW, [IDLE_ACCOUNT, "latest"], call_id="slow")))
    await node_has_a_new_call(node, before)
    return busy


async def idle_connections(server: Server) -> list[Connection]:
    """Two idle keep-alive connections: one still the lane's, one handed to aiohttp."""
    lane, handed_off = await server.connect(), await server.connect()
    await lane.send(post(call("eth_chainId")))
    assert not (await lane.reply()).by_aiohttp
    await handed_off.send(get("/health"))
    assert (await handed_off.reply()).by_aiohttp
    return [lane, handed_off]


async def assert_drained(busy: Connection, idle: list[Connection]) -> None:
    """The idle connections (the lane's and aiohttp's) closed at once; the slow call answered,
    then its connection closed."""
    for connection in idle:
        assert await connection.closed_by_server(within=SLOW_SECONDS / 2)
    reply = await busy.reply()
    assert_result(reply, "slow", "0x0")
    assert reply.headers["connection"] == "close"
    assert await busy.closed_by_server()


async def test_drain_answers_the_request_in_flight_and_closes_idle_connections(
    start_proxy: ProxyFactory, node: Node, api_keys_file: Path
) -> None:
    from signer_proxy.ops.shutdown import IN_FLIGHT, drain

    settings = proxy_settings(
        node.front.url, "http://127.0.0.1:9", api_keys_file=str(api_keys_file)
    )
    proxy = await start_proxy(settings, signers=[LocalKeySigner(b"\x0a" * 32, "key-a")])
    server = Server("asyncio", proxy.client.host, proxy.client.port)
    idle = await idle_connections(server)
    busy = await start_slow_call(server, node)
    try:
        runner = proxy.client.server.runner
        draining = asyncio.create_task(drain(runner, runner.app[IN_FLIGHT], 10.0))
        await assert_drained(busy, idle)
        assert await draining  # every request finished within the deadline
    finally:
        for connection in (*idle, busy):
            await connection.close()


async def test_sigterm_answers_the_request_in_flight_closes_idle_connections_exits_0(
    node: Node, kms: Any, make_key: KeyFactory, api_keys_file: Path
) -> None:
    key = make_key()
    proxy = start_proxy_process(
        *serve_args(node, kms.url, key.arn, api_keys_file, "--shutdown-timeout", "10")
    )
    host, port = proxy.url.removeprefix("http://").rsplit(":", 1)
    server = Server("uvloop", host, int(port), proxy)
    connections: list[Connection] = []
    try:
        idle = await idle_connections(server)
        busy = await start_slow_call(server, node)
        connections = [*idle, busy]
        proxy.process.send_signal(signal.SIGTERM)
        await assert_drained(busy, idle)
        code = await asyncio.to_thread(proxy.process.wait, 10)
    finally:
        for connection in connections:
            await connection.close()
        stop(proxy.process)
    assert code == 0


async def test_a_repeated_head_still_goes_through_the_door_each_time(
    start_proxy: ProxyFactory, node: Node, tmp_path: Path
) -> None:
    """The lane keeps a connection's last parsed head (clients repeat theirs byte for byte),
    never the door's verdict: a key removed by a reload is refused on its next request, on
    the same connection, with the same bytes."""
    admin = "an-admin-token-of-32-characters!"
    (tmp_path / "admin-token").write_text(admin + "\n")
    keys_file = write_api_keys_file(tmp_path, {"ci": TOKEN})
    settings = proxy_settings(
        node.front.url, "http://127.0.0.1:9",
        api_keys_file=str(keys_file), admin_token_file=str(tmp_path / "admin-token"),
    )  # fmt: skip
    proxy = await start_proxy(settings, signers=[LocalKeySigner(b"\x0a" * 32, "key-a")])
    server = Server("asyncio", proxy.client.host, proxy.client.port)
    same = post(call("eth_chainId"))
    kept = await server.connect()
    for _ in range(2):
        await kept.send(same)
        assert_result(await kept.reply(), 1)
    write_api_keys_file(tmp_path, {"dapp": API_KEYS["dapp"]})  # ci's key is gone
    other = await server.connect()
    await other.send(
        b"POST /admin/keys/reload HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
        + admin.encode()
        + b"\r\nContent-Length: 0\r\n\r\n"
    )
    assert (await other.reply()).status == 200
    await other.close()
    await kept.send(same)
    refused = await kept.reply()
    assert refused.status == 401 and not refused.by_aiohttp
    await kept.close()
