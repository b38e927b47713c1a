"""JSON-RPC over WebSocket against a real anvil (its WebSocket on the same port), the KMS
emulator and, where the node must misbehave, a WebSocket front the test controls."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from signer_proxy.dev.kms_emulator import KmsEmulator
from signer_proxy.errors import NodeRejected
from signer_proxy.transport.ws import WEBSOCKETS, ClientConnection
from signer_proxy.upstream.ws import TakingQueue, derive_ws_url
from tests.auth_support import (
    API_KEYS,
    AUTH_CASES,
    AuthCase,
    auth_params,
    write_api_keys_file,
    write_policy_file,
)
from tests.conftest import (
    REGION,
    Anvil,
    InProcessProxy,
    KeyFactory,
    KmsKey,
    ProxyFactory,
    free_port,
    proxy_settings,
    start_app,
    start_proxy_process,
    stop,
)
from tests.integration.ws_front import RpcSocket, WsFront

pytestmark = pytest.mark.integration

RECIPIENT = "0x000000000000000000000000000000000000dEaD"
TOPIC = "0x" + "ab" * 32
# Runtime: LOG1(memory[0:0], TOPIC); STOP. Init code: copy the 39-byte runtime and return it.
RUNTIME = "7f" + TOPIC[2:] + "60006000a100"
INIT_CODE = "0x6027600c60003960276000f3" + RUNTIME


@pytest.fixture
async def front(anvil: Anvil) -> AsyncIterator[WsFront]:
    node = await WsFront(derive_ws_url(anvil.url)).start()
    yield node
    await node.stop()


async def ws_proxy(
    start_proxy: ProxyFactory, anvil: Anvil, kms: KmsEmulator, key: KmsKey, **overrides: Any
) -> InProcessProxy:
    proxy: InProcessProxy = await start_proxy(
        proxy_settings(anvil.url, kms.url, key.alias or key.arn, **overrides)
    )
    return proxy


async def connect(proxy: InProcessProxy) -> RpcSocket:
    return RpcSocket(await proxy.client.ws_connect("/"))


async def wait_for(predicate: Any, within: float = 10.0) -> None:
    """Poll the proxy's own state (it has no event to wait on) until `predicate()` holds."""
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


# --- the same JSON-RPC handling as HTTP ----------------------------------------------------


async def test_ws_answers_local_and_forwarded_calls_and_batches(
    start_proxy: ProxyFactory, anvil: Anvil, kms: KmsEmulator, funded_key: KmsKey
) -> None:
    proxy = await ws_proxy(start_proxy, anvil, kms, funded_key)
    client = await connect(proxy)
    assert await client.result("eth_accounts") == [funded_key.address]
    assert await client.result("eth_chainId") == "0x7a69"
    # A string id and a repeated id come back as they were sent.
    reply = await client.call("eth_blockNumber")
    assert reply["jsonrpc"] == "2.0" and reply["result"] == "0x0"
    replies = await client.batch(
        [
            {"jsonrpc": "2.0", "id": "a", "method": "eth_accounts"},
            {"jsonrpc": "2.0", "id": 7, "method": "eth_chainId"},
            {"jsonrpc": "2.0", "method": "eth_blockNumber"},  # a notification: no reply
            {"jsonrpc": "1.0", "id": 9, "method": "eth_chainId"},
            {
                "jsonrpc": "2.0",
                "id": 8,
                "method": "eth_getBalance",
                "params": [RECIPIENT, "latest"],
            },
        ]
    )
    assert [r["id"] for r in replies] == ["a", 7, 9, 8]
    assert replies[0]["result"] == [funded_key.address]
    assert replies[1]["result"] == "0x7a69"
    assert replies[2]["error"]["code"] == -32600
    assert replies[3]["result"] == "0x0"
    # A message that is not JSON gets a parse error, and the connection keeps serving.
    await client.ws.send_str("{not json")
    await wait_for(
        lambda: any(isinstance(m, dict) and m.get("id") is None for m in client.received)
    )
    error = next(m for m in client.received if isinstance(m, dict) and m.get("id") is None)
    assert error["error"]["code"] == -32700
    # web3.py sends binary frames: the same handling.
    await client.ws.send_bytes(
        json.dumps({"jsonrpc": "2.0", "id": "bin", "method": "eth_chainId"}).encode()
    )
    await wait_for(
        lambda: any(isinstance(m, dict) and m.get("id") == "bin" for m in client.received)
    )
    assert await client.result("eth_chainId") == "0x7a69"
    # The Upstream seam's own call() over the same node connection.
    (connection,) = proxy.client.app[WEBSOCKETS].open
    assert await connection.upstream.call("eth_chainId", []) == "0x7a69"
    with pytest.raises(NodeRejected) as refused:
        await connection.upstream.call("eth_getBalance", ["not an address"])
    assert refused.value.node_code == -32602
    await client.close()


async def test_ws_get_without_upgrade_is_told_what_to_do(
    start_proxy: ProxyFactory, anvil: Anvil, kms: KmsEmulator, make_key: KeyFactory
) -> None:
    proxy = await ws_proxy(start_proxy, anvil, kms, make_key())
    response = await proxy.client.get("/")
    assert response.status == 400
    assert "WebSocket" in await response.text()


# --- subscriptions relayed while signing on the same socket --------------------------------


async def test_ws_new_heads_and_logs_subscriptions_while_sending_on_the_same_socket(
    start_proxy: ProxyFactory, anvil: Anvil, kms: KmsEmulator, funded_key: KmsKey
) -> None:
    proxy = await ws_proxy(start_proxy, anvil, kms, funded_key)
    client = await connect(proxy)
    heads = await client.result("eth_subscribe", ["newHeads"])
    deploy = await client.result(
        "eth_sendTransaction", [{"from": funded_key.address, "data": INIT_CODE}]
    )
    receipt = await receipt_of(client, deploy)
    contract = receipt["contractAddress"]
    logs = await client.result("eth_subscribe", ["logs", {"address": contract}])
    # Sends and subscription notifications interleave on one socket.
    sent = [
        await client.result("eth_sendTransaction", [{"from": funded_key.address, "to": contract}])
        for _ in range(3)
    ]
    await client.result(
        "eth_sendTransaction", [{"from": funded_key.address, "to": RECIPIENT, "value": "0x1"}]
    )
    seen_heads: list[int] = []
    seen_logs: list[str] = []
    while len(seen_heads) < 5 or len(seen_logs) < 3:
        note = await client.notification()
        assert note["method"] == "eth_subscription"
        if note["params"]["subscription"] == heads:
            seen_heads.append(int(note["params"]["result"]["number"], 16))
        else:
            assert note["params"]["subscription"] == logs
            log_entry = note["params"]["result"]
            assert log_entry["address"].lower() == contract.lower()
            assert log_entry["topics"] == [TOPIC]
            seen_logs.append(log_entry["transactionHash"])
    assert seen_heads == [1, 2, 3, 4, 5]  # one block per transaction, in order
    assert seen_logs == sent
    assert first_mention(client, heads) == "reply"
    assert first_mention(client, logs) == "reply"
    assert await client.result("eth_unsubscribe", [logs]) is True
    await client.result("eth_sendTransaction", [{"from": funded_key.address, "to": contract}])
    note = await client.notification()
    assert note["params"]["subscription"] == heads  # the logs subscription is gone
    await client.close()


async def receipt_of(client: RpcSocket, tx_hash: str) -> dict[str, Any]:
    """The receipt, once anvil has mined the transaction (under load, not at once)."""
    async with asyncio.timeout(20):
        while True:
            receipt = await client.result("eth_getTransactionReceipt", [tx_hash])
            if receipt is not None:
                assert isinstance(receipt, dict)
                return receipt
            await asyncio.sleep(0.05)


def first_mention(client: RpcSocket, subscription: str) -> str:
    """Whether the client first saw `subscription` in its subscribe reply or a notification."""
    for message in client.received:
        if isinstance(message, dict) and message.get("result") == subscription:
            return "reply"
        if isinstance(message, dict) and message.get("params", {}).get("subscription") == (
            subscription
        ):
            return "notification"
    return "never"


async def test_ws_subscription_id_reaches_the_client_before_its_first_notification(
    start_proxy: ProxyFactory, anvil: Anvil, kms: KmsEmulator, make_key: KeyFactory
) -> None:
    # The node sends a notification right behind the eth_subscribe reply, as geth does when a
    # block lands at that moment; the proxy must not let it overtake the reply.
    front = await WsFront(derive_ws_url(anvil.url), eager=True).start()
    try:
        proxy = await ws_proxy(start_proxy, anvil, kms, make_key(), upstream_ws=front.url)
        client = await connect(proxy)
        for _ in range(5):
            subscription = await client.result("eth_subscribe", ["newHeads"])
            note = await client.notification()
            assert note["params"] == {"subscription": subscription, "result": "early"}
            assert first_mention(client, subscription) == "reply"
        await client.close()
    finally:
        await front.stop()


# --- the node's connection follows the client's -------------------------------------------


async def test_ws_one_node_connection_per_client_closed_when_the_client_goes(
    start_proxy: ProxyFactory, anvil: Anvil, kms: KmsEmulator, make_key: KeyFactory, front: WsFront
) -> None:
    proxy = await ws_proxy(start_proxy, anvil, kms, make_key(), upstream_ws=front.url)
    clients = [await connect(proxy) for _ in range(4)]
    assert await clients[0].result("eth_accounts")  # local: no node connection needed
    assert front.opened == 0
    for client in clients:
        await client.result("eth_subscribe", ["newHeads"])
    await front.wait_open(4)
    await clients[0].close()  # a clean close
    await front.wait_open(3)
    transport = clients[1].ws._response.connection.transport
    transport.close()  # the client vanishes without a close frame
    await front.wait_open(2)
    anvil.call("evm_mine")
    for client in clients[2:]:
        assert (await client.notification())["params"]["result"]["number"] == "0x1"
    websockets = proxy.client.app[WEBSOCKETS]
    assert len(websockets.open) == 2
    for client in clients[2:]:
        await client.close()
    await front.wait_open(0)
    await wait_for(lambda: not websockets.open)
    assert front.opened == 4


async def test_ws_200_concurrent_clients_subscribe_and_call(
    start_proxy: ProxyFactory, anvil: Anvil, kms: KmsEmulator, make_key: KeyFactory, front: WsFront
) -> None:
    key = make_key()
    proxy = await ws_proxy(start_proxy, anvil, kms, key, upstream_ws=front.url)
    started = time.perf_counter()
    # The test client's own session allows 100 connections; the node front's, unlimited.
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    url = proxy.client.make_url("/")
    clients = await asyncio.gather(*(RpcSocket.connect(session, url) for _ in range(200)))
    accounts = await asyncio.gather(*(c.result("eth_accounts") for c in clients))
    assert accounts == [[key.address]] * 200
    subscriptions = await asyncio.gather(
        *(c.result("eth_subscribe", ["newHeads"]) for c in clients)
    )
    assert len(set(subscriptions)) == 200
    await front.wait_open(200)
    metrics = (await (await proxy.client.get("/metrics")).text()).splitlines()
    assert "signer_proxy_websocket_connections 200.0" in metrics
    anvil.call("evm_mine")
    heads = await asyncio.gather(*(c.notification() for c in clients))
    assert {(h["params"]["subscription"], h["params"]["result"]["number"]) for h in heads} == {
        (s, "0x1") for s in subscriptions
    }
    numbers = await asyncio.gather(*(c.result("eth_blockNumber") for c in clients))
    assert set(numbers) == {"0x1"}
    elapsed = time.perf_counter() - started
    await asyncio.gather(*(c.close() for c in clients))
    await session.close()
    await front.wait_open(0)
    metrics = (await (await proxy.client.get("/metrics")).text()).splitlines()
    assert "signer_proxy_websocket_connections 0.0" in metrics
    assert elapsed < 30, f"200 clients took {elapsed:.1f} s"


# --- when the node's WebSocket goes away --------------------------------------------------


async def test_ws_node_dropped_mid_stream_errors_pending_calls_then_closes_with_a_reason(
    start_proxy: ProxyFactory, anvil: Anvil, kms: KmsEmulator, make_key: KeyFactory
) -> None:
    front = await WsFront(derive_ws_url(anvil.url), hold=frozenset({"eth_getBalance"})).start()
    try:
        proxy = await ws_proxy(start_proxy, anvil, kms, make_key(), upstream_ws=front.url)
        client = await connect(proxy)
        heads = await client.result("eth_subscribe", ["newHeads"])
        anvil.call("evm_mine")
        assert (await client.notification())["params"]["subscription"] == heads
        pending = client.send_call("eth_getBalance", [RECIPIENT, "latest"])
        async with asyncio.timeout(10):
            await front.held.wait()
        started = time.perf_counter()
        await front.drop()
        error = (await asyncio.wait_for(pending, 10))["error"]
        assert error["code"] == -32020
        assert "closed before it answered" in error["message"]
        assert "may have reached the node" in error["message"]
        code, reason = await client.closed()
        assert code == 1014
        assert "subscriptions ended" in reason and "subscribe again" in reason
        assert time.perf_counter() - started < 5
    finally:
        await front.stop()


async def test_ws_node_dropped_without_subscriptions_reconnects_on_the_next_call(
    start_proxy: ProxyFactory, anvil: Anvil, kms: KmsEmulator, make_key: KeyFactory, front: WsFront
) -> None:
    proxy = await ws_proxy(start_proxy, anvil, kms, make_key(), upstream_ws=front.url)
    client = await connect(proxy)
    assert await client.result("eth_chainId") == "0x7a69"
    await front.drop()
    await front.wait_open(0)
    # Nothing was lost: the client connection stays, the next call opens a new node connection.
    assert await client.result("eth_blockNumber") == "0x0"
    assert front.opened == 2
    assert client.close_code is None
    await client.close()


async def test_ws_node_unreachable_is_an_error_per_call_and_local_methods_still_work(
    start_proxy: ProxyFactory, anvil: Anvil, kms: KmsEmulator, make_key: KeyFactory
) -> None:
    key = make_key()
    proxy = await ws_proxy(
        start_proxy, anvil, kms, key, upstream_ws=f"ws://127.0.0.1:{free_port()}/secret-key"
    )
    client = await connect(proxy)
    error = (await client.call("eth_subscribe", ["newHeads"]))["error"]
    assert error["code"] == -32020
    assert "could not be reached" in error["message"] and "--upstream-ws" in error["message"]
    assert "secret-key" not in error["message"]  # node URLs often carry API keys
    assert await client.result("eth_accounts") == [key.address]
    await client.close()


async def test_ws_node_without_websocket_is_named_in_the_error(
    start_proxy: ProxyFactory, anvil: Anvil, kms: KmsEmulator, make_key: KeyFactory
) -> None:
    proxy = await ws_proxy(start_proxy, anvil, kms, make_key())
    # The proxy's own /health is an HTTP endpoint that refuses the upgrade, like a node
    # serving WebSocket on another port.
    refusing = str(proxy.client.make_url("/health")).replace("http", "ws", 1)
    other = await ws_proxy(start_proxy, anvil, kms, make_key(), upstream_ws=refusing)
    client = await connect(other)
    error = (await client.call("eth_chainId"))["error"]
    assert error["code"] == -32020
    assert "refused a WebSocket connection" in error["message"]
    await client.close()


# --- limits ----------------------------------------------------------------------------------


async def test_ws_connections_over_the_maximum_are_closed_with_1013(
    start_proxy: ProxyFactory, anvil: Anvil, kms: KmsEmulator, make_key: KeyFactory
) -> None:
    proxy = await ws_proxy(start_proxy, anvil, kms, make_key(), ws_max_connections=2)
    first, second = await connect(proxy), await connect(proxy)
    assert await first.result("eth_chainId") == await second.result("eth_chainId")
    third = await connect(proxy)
    code, reason = await third.closed()
    assert code == 1013
    assert "maximum of 2 WebSocket connections" in reason
    await first.close()
    await wait_for(lambda: len(proxy.client.app[WEBSOCKETS].open) == 1)
    fourth = await connect(proxy)  # a slot is free again
    assert await fourth.result("eth_chainId") == "0x7a69"
    for client in (second, fourth):
        await client.close()


async def test_ws_messages_over_the_rate_are_answered_with_32005_and_their_ids(
    start_proxy: ProxyFactory, anvil: Anvil, kms: KmsEmulator, make_key: KeyFactory
) -> None:
    proxy = await ws_proxy(start_proxy, anvil, kms, make_key(), ws_messages_per_second=2.0)
    client = await connect(proxy)
    replies = await asyncio.gather(*(client.call("eth_accounts") for _ in range(20)))
    limited = [r for r in replies if "error" in r]
    # A burst of 2 passes, and 2 more each second the 20 messages take to arrive.
    assert 12 <= len(limited) <= 18
    for reply in limited:
        assert reply["error"]["code"] == -32005
        assert "--ws-messages-per-second" in reply["error"]["message"]
    await asyncio.sleep(0.6)  # the bucket refills: the connection serves again
    assert await client.result("eth_chainId") == "0x7a69"
    metrics = await (await proxy.client.get("/metrics")).text()
    assert (
        'signer_proxy_requests_total{chain="default",family="accounts",outcome="rate_limited"}'
        in metrics
    )
    await client.close()


async def test_ws_idle_connection_is_closed_unless_it_has_a_subscription(
    start_proxy: ProxyFactory, anvil: Anvil, kms: KmsEmulator, make_key: KeyFactory
) -> None:
    proxy = await ws_proxy(start_proxy, anvil, kms, make_key(), ws_idle_timeout=0.3)
    idle, subscribed = await connect(proxy), await connect(proxy)
    await idle.result("eth_chainId")
    await subscribed.result("eth_subscribe", ["newHeads"])
    code, reason = await idle.closed(within=5)
    assert code == 1000
    assert "idle for 0.3 s" in reason
    await asyncio.sleep(0.5)
    anvil.call("evm_mine")
    assert (await subscribed.notification())["params"]["result"]["number"] == "0x1"
    assert subscribed.close_code is None
    await subscribed.close()


async def test_ws_idle_counts_the_clients_calls_and_pings_not_its_pongs(
    start_proxy: ProxyFactory,
    anvil: Anvil,
    kms: KmsEmulator,
    make_key: KeyFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every client answers the proxy's heartbeat pings (every 30 s; 0.1 s here). Those pongs
    # are no activity of the client's: counted, no connection would ever idle out.
    monkeypatch.setattr("signer_proxy.transport.ws.PING_INTERVAL", 0.1)
    proxy = await ws_proxy(start_proxy, anvil, kms, make_key(), ws_idle_timeout=0.5)
    calling, pinging, quiet = await connect(proxy), await connect(proxy), await connect(proxy)
    started = time.monotonic()
    while time.monotonic() - started < 1.5:  # three idle timeouts
        await calling.result("eth_chainId")
        await pinging.ws.ping()
        await asyncio.sleep(0.1)
    code, reason = await quiet.closed(within=0.5)
    assert code == 1000 and "idle for 0.5 s" in reason
    assert calling.close_code is None and pinging.close_code is None
    for client in (calling, pinging):  # quiet from now on: closed one idle timeout later
        code, reason = await client.closed(within=5)
        assert code == 1000 and "idle for 0.5 s" in reason


async def test_ws_a_node_that_stops_answering_pings_is_found_and_its_subscribers_told(
    start_proxy: ProxyFactory,
    anvil: Anvil,
    kms: KmsEmulator,
    make_key: KeyFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The heartbeat to the node (upstream.ws.CoarseHeartbeat), every 30 s; 0.2 s here. A
    # node that answers stays connected across many quiet intervals.
    monkeypatch.setattr("signer_proxy.upstream.ws.PING_INTERVAL", 0.2)
    deaf = await WsFront(derive_ws_url(anvil.url), deaf=True).start()
    answering = await WsFront(derive_ws_url(anvil.url)).start()
    try:
        key = make_key()
        lost = await connect(await ws_proxy(start_proxy, anvil, kms, key, upstream_ws=deaf.url))
        kept = await connect(
            await ws_proxy(start_proxy, anvil, kms, key, upstream_ws=answering.url)
        )
        await lost.result("eth_subscribe", ["newHeads"])
        await kept.result("eth_subscribe", ["newHeads"])
        code, reason = await lost.closed(within=5)
        assert code == 1014 and "the node's WebSocket" in reason
        await asyncio.sleep(1.0)  # five intervals with nothing from the node but pongs
        anvil.call("evm_mine")
        assert (await kept.notification())["params"]["result"]["number"] == "0x1"
        assert kept.close_code is None
        await kept.close()
    finally:
        await deaf.stop()
        await answering.stop()


async def test_ws_a_client_that_stops_answering_pings_is_disconnected(
    start_proxy: ProxyFactory,
    anvil: Anvil,
    kms: KmsEmulator,
    make_key: KeyFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The heartbeat to clients (transport.ws.ClientSocket), every 30 s; 0.2 s here. Both
    # clients hold a subscription, so the idle close does not apply.
    monkeypatch.setattr("signer_proxy.transport.ws.PING_INTERVAL", 0.2)
    proxy = await ws_proxy(start_proxy, anvil, kms, make_key())
    deaf = RpcSocket(await proxy.client.ws_connect("/", autoping=False))
    answering = await connect(proxy)
    await deaf.result("eth_subscribe", ["newHeads"])
    await answering.result("eth_subscribe", ["newHeads"])
    code, _ = await deaf.closed(within=5)
    assert code == 1006  # dropped without a close frame (README, the WebSocket table)
    await asyncio.sleep(1.0)
    anvil.call("evm_mine")
    assert (await answering.notification())["params"]["result"]["number"] == "0x1"
    assert answering.close_code is None
    await answering.close()


async def test_ws_message_over_the_size_limit_closes_with_1009_and_a_reason(
    start_proxy: ProxyFactory, anvil: Anvil, kms: KmsEmulator, make_key: KeyFactory
) -> None:
    proxy = await ws_proxy(start_proxy, anvil, kms, make_key(), max_body_bytes=2048)
    client = await connect(proxy)
    assert await client.result("eth_call", [{"to": RECIPIENT, "data": "0x" + "00" * 900}, "latest"])
    client.send_call("eth_call", [{"to": RECIPIENT, "data": "0x" + "00" * 1100}, "latest"])
    code, reason = await client.closed()
    assert code == 1009
    assert "over the limit of 2048 bytes" in reason and "--max-body-bytes" in reason


async def test_ws_slow_reader_is_bounded_and_disconnected(
    start_proxy: ProxyFactory, anvil: Anvil, kms: KmsEmulator, make_key: KeyFactory, front: WsFront
) -> None:
    queue_bytes = 64 * 1024
    proxy = await ws_proxy(
        start_proxy,
        anvil,
        kms,
        make_key(),
        upstream_ws=front.url,
        ws_send_queue_bytes=queue_bytes,
        ws_send_timeout=1.0,
        ws_messages_per_second=0.0,
    )
    # A client that subscribes many times over, then stops reading (aiohttp's client stops
    # taking bytes from the socket once ~128 KiB wait unread).
    ws = await proxy.client.ws_connect("/")
    for n in range(50):
        await ws.send_str(json.dumps(
            {"jsonrpc": "2.0", "id": n, "method": "eth_subscribe", "params": ["newHeads"]}
        ))  # fmt: skip
    websockets = proxy.client.app[WEBSOCKETS]
    await wait_for(lambda: any(len(c.upstream.subscriptions) == 50 for c in websockets.open))
    (connection,) = websockets.open
    # ~50 notifications of ~600 bytes per block: far more than the socket buffers hold.
    for _ in range(20):
        anvil.call("anvil_mine", ["0x40"])
        if connection not in websockets.open:
            break
    await wait_for(lambda: connection not in websockets.open, within=20)
    largest_notification = 2048
    assert connection.queue.high_water <= queue_bytes + largest_notification
    await front.wait_open(0)  # its node connection went with it
    await ws.close()


# --- graceful shutdown (a real `signer-proxy serve`) ----------------------------------------


async def test_ws_sigterm_refuses_new_calls_finishes_held_ones_then_closes_with_1001(
    anvil: Anvil, kms: KmsEmulator, make_key: KeyFactory
) -> None:
    front = await WsFront(derive_ws_url(anvil.url), hold=frozenset({"eth_getBalance"})).start()
    key = make_key()
    proxy = start_proxy_process(
        "--upstream", anvil.url, "--upstream-ws", front.url, "--aws-region", REGION,
        "--aws-endpoint-url", kms.url, "--kms-key", key.arn, "--shutdown-timeout", "20",
    )  # fmt: skip
    session = aiohttp.ClientSession()
    try:
        client = await RpcSocket.connect(session, derive_ws_url(proxy.url))
        await client.result("eth_subscribe", ["newHeads"])
        held = client.send_call("eth_getBalance", [RECIPIENT, "latest"])
        async with asyncio.timeout(10):
            await front.held.wait()
        proxy.process.send_signal(signal.SIGTERM)
        # Draining: the socket stays open, new calls are refused with -32002.
        async with asyncio.timeout(10):
            while "error" not in (reply := await client.call("eth_accounts")):  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        assert reply["error"]["code"] == -32002
        assert "shutting down" in reply["error"]["message"]
        front.release()
        assert (await asyncio.wait_for(held, 10))["result"] == "0x0"  # the held call finished
        code, reason = await client.closed()
        assert code == 1001
        assert "shutting down" in reason
        assert await asyncio.to_thread(proxy.process.wait, 15) == 0
        await front.wait_open(0)
    finally:
        stop(proxy.process)
        await session.close()
        await front.stop()


# --- the same door as HTTP: authentication before the upgrade, rate limits per call ---------


@pytest.mark.parametrize("case", auth_params(AUTH_CASES))
async def test_ws_upgrade_is_authenticated_like_http(
    start_proxy: ProxyFactory,
    anvil: Anvil,
    kms: KmsEmulator,
    funded_key: KmsKey,
    tmp_path: Path,
    case: AuthCase,
) -> None:
    keys_file = write_api_keys_file(tmp_path)
    proxy = await ws_proxy(start_proxy, anvil, kms, funded_key, api_keys_file=str(keys_file))
    if case.client is None:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await proxy.client.ws_connect("/", headers=case.headers, params=case.query)
        assert refused.value.status == 401
        assert proxy.client.app[WEBSOCKETS].open == set()  # nothing was opened for it
        return
    socket = RpcSocket(await proxy.client.ws_connect("/", headers=case.headers, params=case.query))
    try:
        assert await socket.result("eth_accounts") == [funded_key.address]
        (connection,) = proxy.client.app[WEBSOCKETS].open
        assert connection._context.client == case.client
        assert connection._context.transport == "ws"
    finally:
        await socket.close()


async def test_ws_client_rate_limit_and_scope_apply_per_call(
    start_proxy: ProxyFactory,
    anvil: Anvil,
    kms: KmsEmulator,
    funded_key: KmsKey,
    tmp_path: Path,
) -> None:
    keys_file = write_api_keys_file(tmp_path)
    policy = write_policy_file(
        tmp_path,
        {
            "clients": {
                "reader": {"read_only": True, "rate_limit": {"per_second": 0.01, "burst": 2}}
            }
        },
    )
    proxy = await ws_proxy(
        start_proxy, anvil, kms, funded_key,
        api_keys_file=str(keys_file), policy_file=str(policy),
    )  # fmt: skip
    headers = {"Authorization": f"Bearer {API_KEYS['reader']}"}
    socket = RpcSocket(await proxy.client.ws_connect("/", headers=headers))
    try:
        refused = await socket.call(
            "eth_sendTransaction", [{"from": funded_key.address, "to": RECIPIENT}]
        )
        assert refused["error"]["code"] == -32043  # read-only: the scope refuses signing
        assert (await socket.call("eth_chainId"))["result"] == "0x7a69"
        limited = await socket.call("eth_chainId")
        assert limited["error"]["code"] == -32005  # the burst of 2 is used up
    finally:
        await socket.close()
    assert anvil.call("eth_getTransactionCount", [funded_key.address, "latest"]) == "0x0"


def watch_taking(proxy: InProcessProxy) -> tuple[ClientConnection, list[bool]]:
    """The proxy's one open WebSocket connection, and what its data callback answers for each
    message offered to it (True: the call started there; False: left to the read loop)."""
    (connection,) = proxy.client.server.app[WEBSOCKETS].open
    queue = connection._socket._reader
    assert isinstance(queue, TakingQueue) and queue.take is not None
    take = queue.take
    taken: list[bool] = []
    queue.take = lambda raw: taken.append(take(raw)) or taken[-1]
    return connection, taken


async def test_ws_calls_start_as_they_arrive_and_a_refusal_costs_one_message_token(
    start_proxy: ProxyFactory, anvil: Anvil, kms: KmsEmulator, make_key: KeyFactory, tmp_path: Path
) -> None:
    keys_file = write_api_keys_file(tmp_path)
    policy = write_policy_file(
        tmp_path, {"clients": {"reader": {"rate_limit": {"per_second": 0.01, "burst": 1}}}}
    )
    proxy = await ws_proxy(
        start_proxy, anvil, kms, make_key(), ws_messages_per_second=2.0,
        api_keys_file=str(keys_file), policy_file=str(policy),
    )  # fmt: skip
    headers = {"Authorization": f"Bearer {API_KEYS['reader']}"}
    socket = RpcSocket(await proxy.client.ws_connect("/", headers=headers))
    try:
        _, taken = watch_taking(proxy)

        assert (await socket.call("eth_chainId"))["result"] == "0x7a69"
        assert taken == [True]  # started in the data callback, not by the read loop
        refused = await socket.call("eth_chainId")  # the client's limit (burst 1) refuses it
        assert taken == [True, False]  # the read loop did, with the message token given back
        assert refused["error"]["code"] == -32005
        assert "client reader is over its rate limit" in refused["error"]["message"]
        third = await socket.call("eth_chainId")  # the burst of 2 messages is now used up
        assert "--ws-messages-per-second" in third["error"]["message"]
    finally:
        await socket.close()


async def test_ws_a_call_never_starts_ahead_of_a_message_the_read_loop_is_taking(
    start_proxy: ProxyFactory, anvil: Anvil, kms: KmsEmulator, make_key: KeyFactory
) -> None:
    proxy = await ws_proxy(start_proxy, anvil, kms, make_key())
    socket = RpcSocket(await proxy.client.ws_connect("/"))
    room, holding = asyncio.Event(), asyncio.Event()
    try:
        connection, taken = watch_taking(proxy)
        # The read loop's reply to a message that does not parse waits for room in the send
        # queue (as for a client that does not read), until `room` is set.
        put = connection.queue.put

        async def held_put(data: bytes) -> None:
            if b'"id":null' in data:
                holding.set()
                await room.wait()
            await put(data)

        connection.queue.put = held_put  # type: ignore[method-assign]

        await socket.ws.send_str("not json")
        await asyncio.wait_for(holding.wait(), 10)  # the read loop is taking it
        call = socket.send_call("eth_chainId")
        await asyncio.sleep(0.2)
        assert taken == [False, False]  # so the call waits its turn, though a slot is free
        assert not call.done()
        room.set()
        assert (await asyncio.wait_for(call, 10))["result"] == "0x7a69"
        assert [reply.get("id") for reply in socket.received if isinstance(reply, dict)] == [
            None,
            1,
        ]
    finally:
        room.set()
        await socket.close()


# --- a client that leaves during the node's handshake ---------------------------------------


class SlowFront(WsFront):
    """A front whose WebSocket upgrades take `delay` seconds (a distant or busy provider)."""

    delay = 0.5

    async def _relay(self, request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(self.delay)
        return await super()._relay(request)


async def test_ws_client_gone_during_the_node_handshake_leaves_no_node_connection(
    start_proxy: ProxyFactory, anvil: Anvil, kms: KmsEmulator, make_key: KeyFactory
) -> None:
    """The client leaves while its first relayed call is still opening the node's WebSocket:
    that connection must not outlive it (found by review: close() found no socket yet, and
    the upgrade, once answered, left a node connection and its reader open for good)."""
    front = await SlowFront(derive_ws_url(anvil.url)).start()
    proxy = await ws_proxy(start_proxy, anvil, kms, make_key(), upstream_ws=front.url)
    try:
        client = await connect(proxy)
        client.send_call("eth_blockNumber")  # opens the node connection: 0.5 s
        await asyncio.sleep(0.1)
        await client.close()  # the client goes before the node's upgrade is answered
        websockets = proxy.client.app[WEBSOCKETS]
        await wait_for(lambda: not websockets.open)  # the proxy is done with the client
        await asyncio.sleep(1.0)
        assert front.opened == 1
        assert front.open == 0, "the node connection outlived its client"
    finally:
        await proxy.client.close()  # its session closes a leaked connection: a quick stop
        await front.stop()


async def test_a_reply_the_node_sent_before_a_notification_reaches_the_client_first(
    start_proxy: ProxyFactory, anvil: Anvil, kms: KmsEmulator, make_key: KeyFactory
) -> None:
    """The node writes notification 1, the reply, notification 2 in one go (a block landing
    around a reply): the client gets them in that order through the proxy (found by review:
    the reply went behind notification 2)."""

    def frame(payload: dict[str, Any]) -> bytes:
        data = json.dumps(payload).encode()
        return bytes([0x81, len(data)]) + data  # unmasked text, as a server sends

    async def handle(request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        async for message in socket:
            call = json.loads(message.data)
            notes = [
                {"jsonrpc": "2.0", "method": "eth_subscription",
                 "params": {"subscription": "0x1", "result": n}}
                for n in (1, 2)
            ]  # fmt: skip
            reply = {"jsonrpc": "2.0", "id": call["id"], "result": "0x1"}
            assert request.transport is not None
            request.transport.write(frame(notes[0]) + frame(reply) + frame(notes[1]))
        return socket

    app = web.Application()
    app.router.add_get("/", handle)
    port, runner = await start_app(app)
    proxy = await ws_proxy(
        start_proxy, anvil, kms, make_key(), upstream_ws=f"ws://127.0.0.1:{port}/"
    )
    try:
        client = await connect(proxy)
        for _ in range(5):
            client.received.clear()
            await client.call("eth_blockNumber")
            await client.notification()
            await client.notification()
            kinds = [m.get("params", {}).get("result", "reply") for m in client.received]  # type: ignore[union-attr]
            assert kinds == [1, "reply", 2]
        await client.close()
    finally:
        await runner.cleanup()
