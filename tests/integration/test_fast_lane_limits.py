"""What one client can hold of the proxy (issue 22): memory while it does not read its replies,
a body before its credentials are checked, a connection while it drips bytes; and the Host a
request must carry. Raw sockets against an in-process proxy (asyncio) and `signer-proxy
serve` (uvloop), both with short deadlines, in front of a real anvil.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from signer_proxy.access.auth import ANONYMOUS_IDENTITY
from signer_proxy.keys.local import LocalKeySigner
from signer_proxy.ops.shutdown import InFlight
from signer_proxy.transport.door import OPEN_ACCESS
from signer_proxy.transport.fast_lane import FAST_LANE, FastLane, FastLaneProtocol, RpcSite
from signer_proxy.transport.http import HttpAnswer
from tests.conftest import (
    KeyFactory,
    ProxyFactory,
    ProxyProcess,
    proxy_settings,
    start_proxy_process,
    stop,
)
from tests.integration.test_fast_lane_http import (
    AUTH,
    CHAIN_ID,
    Node,
    Server,
    api_keys_file,  # noqa: F401  (a fixture)
    assert_result,
    call,
    chunked_post,
    node,  # noqa: F401  (a fixture)
    post,
    serve_args,
)

pytestmark = pytest.mark.integration

BIG_BODY = 1024 * 1024  # --max-body-bytes here: a refused head must not wait for this much
SECONDS = 1.0  # --head-timeout and --body-timeout here


@pytest.fixture(scope="module")
def limits_process(
    node: Node,  # noqa: F811
    kms: Any,
    make_key: KeyFactory,
    api_keys_file: Path,  # noqa: F811
) -> Iterator[ProxyProcess]:
    key = make_key()
    args = serve_args(node, kms.url, key.arn, api_keys_file)
    args[args.index("--max-body-bytes") + 1] = str(BIG_BODY)
    # Warnings only: a refusal is an info line, a thousand of them fill the stderr pipe that
    # nobody reads here, and the process would block writing the next.
    proxy = start_proxy_process(
        *args, "--head-timeout", str(SECONDS), "--body-timeout", str(SECONDS),
        "--log-level", "warning",
    )  # fmt: skip
    yield proxy
    stop(proxy.process)
    assert proxy.process.returncode == 0


@pytest.fixture(params=["asyncio", "uvloop"])
async def limited(
    request: pytest.FixtureRequest,
    start_proxy: ProxyFactory,
    node: Node,  # noqa: F811
    api_keys_file: Path,  # noqa: F811
) -> Server:
    if request.param == "uvloop":
        proxy = request.getfixturevalue("limits_process")
        host, port = proxy.url.removeprefix("http://").rsplit(":", 1)
        return Server("uvloop", host, int(port), proxy)
    settings = proxy_settings(
        node.front.url,
        "http://127.0.0.1:9",  # never used: the key is local
        api_keys_file=str(api_keys_file),
        max_body_bytes=BIG_BODY,
        head_timeout=SECONDS,
        body_timeout=SECONDS,
    )
    proxy = await start_proxy(settings, signers=[LocalKeySigner(b"\x0a" * 32, "key-a")])
    return Server("asyncio", proxy.client.host, proxy.client.port)


def head_only(length: int, headers: dict[str, str], path: str = "/") -> bytes:
    fields = {"Host": "127.0.0.1", "Content-Type": "application/json", **headers}
    fields["Content-Length"] = str(length)
    lines = "".join(f"{name}: {value}\r\n" for name, value in fields.items())
    return f"POST {path} HTTP/1.1\r\n{lines}\r\n".encode("latin-1")


# --- #22 item 3: the door on the head -----------------------------------------------------------


async def test_unauthenticated_head_is_refused_before_its_body(limited: Server) -> None:
    """A head announcing a 1 MB body without credentials gets its 401 at once, and the
    connection closed: the body is never waited for (before: no reply until 1 MB came)."""
    connection = await limited.connect()
    try:
        await connection.send(head_only(BIG_BODY, {}))
        reply = await connection.reply(within=SECONDS / 2)  # before any deadline
        assert reply.status == 401, reply.body
        assert reply.json["error"]["code"] == -32040
        assert reply.headers["connection"] == "close"
        assert await connection.closed_by_server()
    finally:
        await connection.close()


@pytest.mark.parametrize("credentials", [True, False])
async def test_a_head_for_an_unknown_chain_is_refused_before_its_body(
    limited: Server, credentials: bool
) -> None:
    """/chain/NAME with no such chain: 404 on the head, the 1 MB body never waited for; and
    only to a caller the door lets in (the others get 401, which names no chain)."""
    connection = await limited.connect()
    try:
        await connection.send(head_only(BIG_BODY, AUTH if credentials else {}, "/chain/nope"))
        reply = await connection.reply(within=SECONDS / 2)  # before any deadline
        if credentials:
            assert (reply.status, reply.json["error"]["code"]) == (404, -32060), reply.body
        else:
            assert (reply.status, reply.json["error"]["code"]) == (401, -32040), reply.body
            assert "chain" not in reply.json["error"]["message"]
        assert await connection.closed_by_server()
    finally:
        await connection.close()


async def test_a_refused_small_request_keeps_its_connection(limited: Server) -> None:
    """Refused on its head, a request whose body is on its way is answered after the body is
    dropped, and the connection serves the next request."""
    connection = await limited.connect()
    try:
        await connection.send(post(call("eth_chainId"), auth=False))
        assert (await connection.reply()).status == 401
        await connection.send(post(call("eth_chainId", call_id=2)))
        assert_result(await connection.reply(), 2)
    finally:
        await connection.close()


async def test_a_thousand_pipelined_refusals_are_each_answered(limited: Server) -> None:
    """Requests refused on their head are answered at once, one after another. Each used to
    start the next from inside its own reply: a few hundred in one read overflowed the stack,
    the RecursionError escaped data_received and the connection died with 472 of 1,000
    answered. Then the connection still serves."""
    connection = await limited.connect()
    try:
        count = 1000  # ~150 kB, a read or two
        await connection.send(post(call("eth_chainId"), auth=False) * count)
        statuses = [(await connection.reply()).status for _ in range(count)]
        assert statuses == [401] * count
        await connection.send(post(call("eth_chainId", call_id=2)))
        assert_result(await connection.reply(), 2)
    finally:
        await connection.close()


# --- #22 item 7: slow clients -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "drip"),
    [
        pytest.param(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\n", b"X-Drip: 1\r\n", id="lane-head"),
        pytest.param(
            b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n", b"X-Drip: 1\r\n", id="get-head"
        ),
        pytest.param(head_only(1000, AUTH) + b"[", b" ", id="lane-body"),
        pytest.param(
            chunked_post(call("eth_chainId")).split(b"\r\n\r\n")[0] + b"\r\n\r\n1000\r\n[",
            b" ",
            id="aiohttp-body",
        ),
    ],
)
async def test_a_client_dripping_bytes_is_cut_off(
    limited: Server, start: bytes, drip: bytes
) -> None:
    """A byte every 0.2 s keeps no connection past the deadline (1 s here): 408 and close
    (before: the connection was held as long as the client dripped)."""
    connection = await limited.connect()
    began = time.monotonic()
    got = None
    try:
        await connection.send(start)
        for _ in range(50):  # 10 s of dripping, far past the deadline
            try:
                got = await asyncio.wait_for(connection.reader.read(65536), 0.2)
                break
            except TimeoutError:
                try:
                    await connection.send(drip)
                except (ConnectionError, OSError):
                    got = b""
                    break
        elapsed = time.monotonic() - began
    finally:
        await connection.close()
    assert got is not None, "still open after 10 s of dripping"
    assert got.startswith(b"HTTP/1.1 408 "), got[:200]
    assert b"timeout" in got
    assert elapsed < SECONDS + 2, elapsed


# --- #22 item 8: Host ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host", [pytest.param(None, id="missing"), pytest.param("[::1]evil.com", id="bracketed")]
)
@pytest.mark.parametrize("framing", ["lane", "aiohttp"])
async def test_missing_or_malformed_host_is_400(
    limited: Server, host: str | None, framing: str
) -> None:
    headers = {**AUTH, "Host": host or ""}  # an empty value: the header is left out
    request = (post if framing == "lane" else chunked_post)(call("eth_chainId"), headers)
    connection = await limited.connect()
    try:
        await connection.send(request)
        reply = await connection.reply()
        assert reply.status == 400, reply.body
        assert reply.by_aiohttp == (framing == "aiohttp")
        if framing == "aiohttp" and host is None:
            assert b"Host" in reply.body  # aiohttp's own parser refuses it, in plain text
        else:
            assert "Host" in reply.json["error"]["message"]
    finally:
        await connection.close()


async def test_http_1_0_without_host_is_still_served(limited: Server) -> None:
    connection = await limited.connect()
    try:
        await connection.send(post(call("eth_chainId"), {**AUTH, "Host": ""}, version="HTTP/1.0"))
        reply = await connection.reply()
        assert reply.status == 200, reply.body
        assert reply.json["result"] == CHAIN_ID
    finally:
        await connection.close()


# --- #22 item 2: a client that does not read its replies ----------------------------------------


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_pipelining_without_reading_replies_keeps_memory_flat(limits_process: ProxyProcess) -> None:
    """150 MB of pipelined POSTs on one connection whose replies are never read: the proxy
    stops reading once its replies back up, so the client cannot push the 150 MB and the
    proxy's RSS stays flat (before: every byte was buffered, RSS grew by ~170 MB)."""
    # Each request is a batch of 1000 non-objects: 2 kB in, ~80 kB of errors out, so the
    # replies back up fast.
    body = b"[" + b",".join([b"1"] * 1000) + b"]"
    request = post(body, AUTH)
    chunk = request * 64
    host, port = limits_process.url.removeprefix("http://").rsplit(":", 1)
    pid = limits_process.process.pid
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(request)  # one request first: the proxy's memory after warming up
        time.sleep(0.5)
        before = rss_bytes(pid)
        sock.setblocking(False)
        sent = 0
        began = time.monotonic()
        settled = None  # RSS 2 s in: the requests answered until the replies backed up
        while sent < 150 * 1024 * 1024 and time.monotonic() - began < 8.0:
            try:
                sent += sock.send(chunk)
            except BlockingIOError:
                time.sleep(0.05)
            if settled is None and time.monotonic() - began > 2.0:
                settled = rss_bytes(pid)
        time.sleep(0.5)
        after = rss_bytes(pid)
    grown = after - before
    print(f"sent {sent} bytes; RSS grew {grown} bytes, {after - (settled or after)} after 2 s")
    assert grown < 40 * 1024 * 1024, (sent, grown)
    assert sent < 100 * 1024 * 1024, sent  # the kernel's buffers, not the proxy's, hold the rest
    assert settled is not None and after - settled < 4 * 1024 * 1024, (settled, after)


def test_a_client_pipelining_faster_than_answers_waits_in_the_kernel_not_our_memory() -> None:
    """bench/soak.py's pipeliner: POSTs written back to back, never read. The lane used to
    read one more socket buffer after every ~100-byte answer: 600 MB in 6 s for one client."""
    import json
    import subprocess
    import sys

    from tests.conftest import ROOT

    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "soak.py"), "--seconds", "4", "--slow", "0",
         "--pipeliners", "1"],
        capture_output=True, text=True, timeout=180, cwd=ROOT, check=True,
    )  # fmt: skip
    report = json.loads(run.stdout)
    assert report["pipelined_requests_written"] > 0
    assert report["rss_mb"]["during_peak"] - report["rss_mb"]["before"] < 40, report
    assert report["normal"]["errors"] == 0


# --- a hand-off after a reply: aiohttp's own pause holds -----------------------------------------


class SlowEndpoint:
    """RpcEndpoint's part the lane uses; every answer waits for `release`."""

    access = OPEN_ACCESS

    def __init__(self) -> None:
        self.release = asyncio.Event()

    def admit(self, caller: Any, path: str = "/") -> Any:
        return ANONYMOUS_IDENTITY

    async def answer(self, identity: Any, raw: bytes, traceparent: Any, path: str) -> HttpAnswer:
        await self.release.wait()
        return HttpAnswer(200, b'{"jsonrpc":"2.0","id":1,"result":"0x1"}')


async def test_a_hand_off_after_a_reply_keeps_aiohttps_pause() -> None:
    """A slow lane request, then >64 KiB of pipelined GETs (aiohttp's): the lane pauses reading
    at READ_AHEAD. Its reply hands the connection to aiohttp with those bytes; aiohttp, its
    request queue full (32), pauses the transport. The reply, unwinding, used to resume
    reading on the connection that was no longer the lane's: aiohttp believed it was paused
    (and would not pause again) while the socket was read into its parser's buffer without
    bound. Found by review; 32 MB more were read in 5 s."""
    handler_gate = asyncio.Event()

    async def slow_get(_request: web.Request) -> web.Response:
        await handler_gate.wait()  # a busy handler (or a client that does not read)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/health", slow_get)
    lane = FastLane(InFlight(), 4096, app)
    endpoint = SlowEndpoint()
    lane._endpoint = endpoint  # type: ignore[assignment]
    app[FAST_LANE] = lane
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    await RpcSite(runner, sock=sock).start()
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}")
        gets = b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n" * 6000  # 198 KB
        writer.write(gets)
        await writer.drain()
        async with asyncio.timeout(5):
            while not lane.connections or not next(iter(lane.connections))._reading_paused:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        protocol: FastLaneProtocol = next(iter(lane.connections))
        transport = protocol._transport
        assert not transport.is_reading()  # the lane holds the rest in the kernel

        endpoint.release.set()  # the lane's reply, then the hand-off to aiohttp
        async with asyncio.timeout(5):
            while protocol in lane.connections or protocol.busy:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        aiohttp_protocol = transport.get_protocol().inner
        assert aiohttp_protocol._buffer_paused  # aiohttp paused reading: its queue is full
        assert not transport.is_reading(), "the lane resumed a transport aiohttp had paused"

        # What that costs: 32 MB more of requests nobody is answering, all read by the proxy
        # (the kernel's buffers on both sides hold a few MB at most).
        more = gets * 160  # 32 MB
        writer.write(more)
        try:
            async with asyncio.timeout(5):
                await writer.drain()
            taken = True
        except TimeoutError:
            taken = False
        assert not taken, "the proxy read 32 MB of pipelined requests into memory"
    finally:
        handler_gate.set()
        writer.close()
        await runner.cleanup()
