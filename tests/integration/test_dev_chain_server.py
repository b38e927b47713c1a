"""dev/chain_server: the embedded chain over HTTP and WebSocket, in this process."""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from signer_proxy.dev.chain_server import ChainServer

pytestmark = pytest.mark.integration

TOPIC = "0x" + "ab" * 32
LOGGING_DEPLOYMENT = "0x7f" + TOPIC[2:] + "60006000a100"  # LOG1(0, 0, TOPIC); STOP


@pytest.fixture
async def server() -> AsyncIterator[ChainServer]:
    running = ChainServer()
    await running.start()
    yield running
    await running.stop()


async def post(url: str, payload: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.post(url, json=payload) as response:
        body = await response.read()
        return response.status, (json.loads(body) if body else None)


def call(method: str, params: list[Any], call_id: int = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": call_id, "method": method, "params": params}


async def test_chain_server_answers_single_calls_and_batches_over_http(
    server: ChainServer,
) -> None:
    status, reply = await post(server.url, call("eth_chainId", []))
    assert (status, reply) == (200, {"jsonrpc": "2.0", "id": 1, "result": "0x539"})
    status, replies = await post(
        server.url,
        [call("eth_blockNumber", [], 7), {"jsonrpc": "2.0", "method": "eth_chainId"},
         call("nope_nope", [], 8), {"bad": True}],
    )  # fmt: skip
    assert status == 200
    assert [r["id"] for r in replies] == [7, 8, None]  # the notification gets no reply
    assert replies[0]["result"] == "0x0"
    assert replies[1]["error"]["code"] == -32601
    assert replies[2]["error"]["code"] == -32600


async def test_chain_server_refuses_bodies_that_are_not_json_rpc(server: ChainServer) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(server.url, data=b"{not json") as response:
            assert (await response.json())["error"]["code"] == -32700
        async with session.get(server.url) as response:
            assert response.status == 400
            assert "POST a request here, or connect a WebSocket" in await response.text()


async def test_chain_server_refuses_subscriptions_over_http(server: ChainServer) -> None:
    _, reply = await post(server.url, call("eth_subscribe", ["newHeads"]))
    assert reply["error"]["code"] == -32602
    assert server.ws_url in reply["error"]["message"]


async def test_chain_server_notifies_new_heads_and_logs_over_websocket(
    server: ChainServer,
) -> None:
    async with aiohttp.ClientSession() as session, session.ws_connect(server.ws_url) as ws:
        await ws.send_json(call("eth_subscribe", ["newHeads"], 1))
        heads = (await ws.receive_json())["result"]
        await ws.send_json(call("eth_subscribe", ["logs", {"topics": [TOPIC]}], 2))
        logs = (await ws.receive_json())["result"]
        await ws.send_json(call("eth_subscribe", ["newPendingTransactions"], 3))
        refused = await ws.receive_json()
        assert refused["error"]["code"] == -32602
        assert "newHeads and logs" in refused["error"]["message"]

        funder = server.chain.funder
        _, sent = await post(
            server.url, call("eth_sendTransaction", [{"from": funder, "data": LOGGING_DEPLOYMENT}])
        )
        received = {}
        for _ in range(2):
            message = await ws.receive_json(timeout=10)
            assert message["method"] == "eth_subscription"
            received[message["params"]["subscription"]] = message["params"]["result"]
        assert received[heads]["number"] == "0x1"
        assert received[logs]["topics"] == [TOPIC]
        assert received[logs]["transactionHash"] == sent["result"]

        await ws.send_json(call("eth_unsubscribe", [heads], 4))
        assert (await ws.receive_json())["result"] is True
        await ws.send_json(call("eth_unsubscribe", [heads], 5))
        assert (await ws.receive_json())["result"] is False


async def test_chain_server_stop_closes_sockets_and_ends_its_thread() -> None:
    before = {t.ident for t in threading.enumerate()}
    server = ChainServer()
    await server.start()
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(server.ws_url)
        await server.stop()
        closed = await ws.receive(timeout=5)
        assert closed.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        await ws.close()
    leftover = [t for t in threading.enumerate() if t.ident not in before]
    assert [t.name for t in leftover if t.name.startswith("dev-chain")] == []
