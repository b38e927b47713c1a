"""upstream_ws: the node's WebSocket URL, routing node messages by their head, restoring ids
without re-encoding, the close reason, and replies taken as they arrive but never ahead of an
earlier message. The relay itself is tested against anvil (tests/integration/test_ws.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp._websocket.reader import WebSocketReader

from signer_proxy.transport.ws import MAX_CLOSE_REASON
from signer_proxy.upstream.ws import (
    NodeSocket,
    TakingQueue,
    UpstreamSocket,
    derive_ws_url,
    lost_reason,
    read_node_message,
    with_client_id,
)
from tests.conftest import start_app


@pytest.mark.parametrize(
    ("http_url", "ws_url"),
    [
        pytest.param("http://127.0.0.1:8545", "ws://127.0.0.1:8545", id="http"),
        pytest.param("https://node.example/v3/KEY", "wss://node.example/v3/KEY", id="https-path"),
        pytest.param("http://u:p@[::1]:8545/?k=v", "ws://u:p@[::1]:8545/?k=v", id="ipv6-auth"),
        pytest.param("ws://127.0.0.1:8546", "ws://127.0.0.1:8546", id="already-ws"),
    ],
)
def test_derive_ws_url(http_url: str, ws_url: str) -> None:
    assert derive_ws_url(http_url) == ws_url


NEW_HEAD = (
    b'{"jsonrpc":"2.0","method":"eth_subscription","params":{"subscription":"0x1","result":{}}}'
)


@pytest.mark.parametrize(
    ("raw", "kind", "reply_id"),
    [
        pytest.param(b'{"jsonrpc":"2.0","id":17,"result":"0x1"}', "reply", 17, id="geth-reply"),
        pytest.param(b'{"jsonrpc":"2.0","id":3}', "reply", 3, id="reply-id-last"),
        pytest.param(b'{"id":5,"jsonrpc":"2.0","result":null}', "reply", 5, id="id-first"),
        pytest.param(
            b'{"jsonrpc": "2.0", "result": "0x1", "id": 9}', "reply", 9, id="decoded-reply"
        ),
        pytest.param(NEW_HEAD, "notification", None, id="notification"),
        pytest.param(
            b'{"params":{"subscription":"0x1"},"method":"eth_subscription","jsonrpc":"2.0"}',
            "notification",
            None,
            id="notification-any-order",
        ),
        pytest.param(b'[{"jsonrpc":"2.0","id":1,"result":1}]', "batch", None, id="batch"),
        pytest.param(
            b'{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error"}}',
            "unknown",
            None,
            id="null-id-error",
        ),
        pytest.param(b'{"jsonrpc":"2.0","id":"s","result":1}', "unknown", None, id="string-id"),
        pytest.param(b"not json", "unknown", None, id="not-json"),
    ],
)
def test_read_node_message(raw: bytes, kind: str, reply_id: int | None) -> None:
    message = read_node_message(raw)
    assert message.kind == kind
    assert message.reply_id == reply_id


@pytest.mark.parametrize(
    ("raw", "ours", "theirs", "expected"),
    [
        pytest.param(
            b'{"jsonrpc":"2.0","id":17,"result":{"a" :  1}}',
            17,
            "abc",
            b'{"jsonrpc":"2.0","id":"abc","result":{"a" :  1}}',
            id="kept-bytes-string-id",
        ),
        pytest.param(
            b'{"jsonrpc":"2.0","id":4,"result":"0x"}', 4, None,
            b'{"jsonrpc":"2.0","id":null,"result":"0x"}',
            id="null-id",
        ),
        pytest.param(
            b'{"jsonrpc":"2.0","id":4,"result":"0x"}', 4, 1.5,
            b'{"jsonrpc":"2.0","id":1.5,"result":"0x"}',
            id="float-id",
        ),
    ],
)  # fmt: skip
def test_with_client_id_keeps_the_node_bytes(
    raw: bytes, ours: int, theirs: Any, expected: bytes
) -> None:
    assert with_client_id(raw, ours, theirs) == expected


def test_with_client_id_re_encodes_an_unusual_shape() -> None:
    raw = b'{"result": "0x1", "jsonrpc": "2.0", "id": 12}'
    assert json.loads(with_client_id(raw, 12, "x")) == {
        "result": "0x1",
        "jsonrpc": "2.0",
        "id": "x",
    }


def test_with_client_id_never_touches_an_id_inside_the_result() -> None:
    raw = b'{"jsonrpc":"2.0","result":{"id":12},"id":12}'
    assert json.loads(with_client_id(raw, 12, 7)) == {
        "jsonrpc": "2.0",
        "result": {"id": 12},
        "id": 7,
    }


@pytest.mark.parametrize(
    ("code", "says"),
    [
        pytest.param(1001, "closed (code 1001)", id="closed"),
        pytest.param(None, "was lost", id="lost"),
        pytest.param(65535, "closed (code 65535)", id="widest"),
    ],
)
def test_lost_reason_says_what_ended_and_fits_a_close_frame(code: int | None, says: str) -> None:
    reason = lost_reason(code)
    assert says in reason and "subscribe again" in reason
    assert len(reason.encode()) <= MAX_CLOSE_REASON


class _Protocol:
    """What the queue asks of aiohttp's connection protocol: reading paused or not."""

    _reading_paused = False

    def pause_reading(self) -> None:
        self._reading_paused = True


def _frame(opcode: int, payload: bytes) -> bytes:
    return bytes([0x80 | opcode, len(payload)]) + payload  # unmasked, as a server sends


async def test_the_queue_offers_text_only_while_nothing_waits_in_it() -> None:
    taken: list[bytes] = []

    def take(raw: bytes) -> bool:
        if raw.startswith(b'{"jsonrpc":"2.0","id":'):
            taken.append(raw)
            return True
        return False

    queue = TakingQueue(_Protocol(), 2**16, loop=asyncio.get_running_loop())
    queue.take = take
    parser = WebSocketReader(queue, 0, compress=False, decode_text=False)  # aiohttp's, in C

    reply = b'{"jsonrpc":"2.0","id":1,"result":"0x1"}'
    note = b'{"jsonrpc":"2.0","method":"eth_subscription","params":{}}'
    parser.feed_data(_frame(1, reply))
    assert taken == [reply] and not queue._buffer
    parser.feed_data(_frame(1, note) + _frame(1, b'{"jsonrpc":"2.0","id":2,"result":"0x2"}'))
    assert taken == [reply]  # the notification was refused, so the reply behind it waits too
    parser.feed_data(_frame(9, b"ping"))
    assert [(await queue.read()).data for _ in range(3)] == [
        note,
        b'{"jsonrpc":"2.0","id":2,"result":"0x2"}',
        b"ping",
    ]
    parser.feed_data(_frame(9, b"ping") + _frame(1, reply))  # a ping is never offered
    assert taken == [reply] and len(queue._buffer) == 2


@pytest.fixture
async def scripted_node() -> AsyncIterator[tuple[str, list[float]]]:
    """A node that answers each call with a notification first, then (after `gaps[0]` s; in
    the same write when 0) the reply; with `gaps[0]` < 0, the reply alone."""
    gaps = [0.0]

    async def handle(request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        async for message in socket:
            call = json.loads(message.data)
            note = {"jsonrpc": "2.0", "method": "eth_subscription", "params": {"result": 1}}
            reply = {"jsonrpc": "2.0", "id": call["id"], "result": "0x1"}
            if gaps[0] < 0:
                await socket.send_str(json.dumps(reply))
                continue
            if gaps[0] == 0:
                transport = request.transport
                assert transport is not None
                transport.write(
                    _frame(1, json.dumps(note).encode()) + _frame(1, json.dumps(reply).encode())
                )
                continue
            await socket.send_str(json.dumps(note))
            await asyncio.sleep(gaps[0])
            await socket.send_str(json.dumps(reply))
        return socket

    app = web.Application()
    app.router.add_get("/", handle)
    port, runner = await start_app(app)
    yield f"ws://127.0.0.1:{port}/", gaps
    await runner.cleanup()


@pytest.mark.parametrize("gap", [0.0, 0.05], ids=["same-write", "while-delivering"])
async def test_a_reply_never_overtakes_a_notification_sent_before_it(
    scripted_node: tuple[str, list[float]], gap: float
) -> None:
    url, gaps = scripted_node
    gaps[0] = gap
    delivering = asyncio.Event()
    go_on = asyncio.Event()
    delivered: list[bytes] = []

    async def deliver(raw: bytes) -> None:  # a client slow to take its notification
        delivering.set()
        await go_on.wait()
        delivered.append(raw)

    async with aiohttp.ClientSession(ws_response_class=NodeSocket) as session:  # type: ignore[arg-type]
        socket = UpstreamSocket(url, session, 5.0, deliver, lambda _: None)
        try:
            call = asyncio.create_task(socket.forward(b'{"jsonrpc":"2.0","id":7,"method":"m"}'))
            await delivering.wait()
            await asyncio.sleep(0.2)  # the reply has arrived by now
            assert not call.done()
            go_on.set()
            assert json.loads(await call) == {"jsonrpc": "2.0", "id": 7, "result": "0x1"}
            assert len(delivered) == 1
            queue = socket._ws._reader if socket._ws is not None else None
            assert isinstance(queue, TakingQueue)  # and a reply alone is taken from it:
            gaps[0] = -1
            taken = queue.take
            assert taken is not None
            takes: list[bool] = []
            queue.take = lambda raw: takes.append(taken(raw)) or takes[-1]
            reply = await socket.forward(b'{"jsonrpc":"2.0","id":8,"method":"m"}')
            assert json.loads(reply) == {"jsonrpc": "2.0", "id": 8, "result": "0x1"}
            assert takes == [True]
        finally:
            await socket.close()


async def test_a_batch_reply_with_an_id_of_another_type_does_not_end_the_connection() -> None:
    """A node's batch reply holding an item whose id is a list (unhashable): no reply of ours,
    skipped; the batch still resolves and the connection stays (found by review: the
    TypeError ended the reader, failing every call and subscription on it)."""

    async def handle(request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        async for message in socket:
            calls = json.loads(message.data)
            odd = {"jsonrpc": "2.0", "id": [1], "result": "0x0"}
            replies = [{"jsonrpc": "2.0", "id": c["id"], "result": "0x1"} for c in calls]
            await socket.send_str(json.dumps([odd, *replies]))
        return socket

    app = web.Application()
    app.router.add_get("/", handle)
    port, runner = await start_app(app)
    try:
        async with aiohttp.ClientSession(ws_response_class=NodeSocket) as session:  # type: ignore[arg-type]
            socket = UpstreamSocket(
                f"ws://127.0.0.1:{port}/", session, 5.0, lambda _: asyncio.sleep(0), print
            )
            try:
                for subscribe in (False, True):
                    method = "eth_subscribe" if subscribe else "eth_blockNumber"
                    body = json.dumps([{"jsonrpc": "2.0", "id": 5, "method": method}]).encode()
                    delivered = asyncio.Event()
                    delivered.set()
                    reply = json.loads(await socket.forward(body, delivered))
                    assert {"jsonrpc": "2.0", "id": 5, "result": "0x1"} in reply
                    assert socket.connected
            finally:
                await socket.close()
    finally:
        await runner.cleanup()


def _note(n: int) -> bytes:
    return json.dumps(
        {"jsonrpc": "2.0", "method": "eth_subscription", "params": {"result": n}}
    ).encode()


@pytest.fixture
async def interleaving_node() -> AsyncIterator[str]:
    """A node that answers each call with, in one write: notification 1, the reply,
    notification 2 (as geth does when a block lands around a reply)."""

    async def handle(request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        async for message in socket:
            call = json.loads(message.data)
            reply = json.dumps({"jsonrpc": "2.0", "id": call["id"], "result": "0x1"}).encode()
            transport = request.transport
            assert transport is not None
            transport.write(_frame(1, _note(1)) + _frame(1, reply) + _frame(1, _note(2)))
        return socket

    app = web.Application()
    app.router.add_get("/", handle)
    port, runner = await start_app(app)
    yield f"ws://127.0.0.1:{port}/"
    await runner.cleanup()


async def test_a_notification_does_not_overtake_a_reply_sent_before_it(
    interleaving_node: str,
) -> None:
    """Node order N1, R, N2 reaches the caller as N1, R, N2: the reply sits behind N1, so the
    reader dispatches it, and used to read on at once, delivering N2 before the caller had
    taken R (found by review)."""
    order: list[str] = []

    async def deliver(raw: bytes) -> None:  # the client's send queue: room, no wait
        order.append(f"note{json.loads(raw)['params']['result']}")

    async with aiohttp.ClientSession(ws_response_class=NodeSocket) as session:  # type: ignore[arg-type]
        socket = UpstreamSocket(interleaving_node, session, 5.0, deliver, lambda _: None)
        try:
            reply = await socket.forward(b'{"jsonrpc":"2.0","id":7,"method":"m"}')
            assert json.loads(reply)["id"] == 7
            order.append("reply")
            await asyncio.sleep(0.1)
            assert order == ["note1", "reply", "note2"]
        finally:
            await socket.close()
