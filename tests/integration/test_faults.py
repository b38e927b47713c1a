"""Fault injection with real parts: a KMS front that throttles or stalls in front of the KMS
emulator, and a node front in front of anvil that answers eth_sendRawTransaction with each
error text of the classification table, drops the connection, or stalls. The proxy runs
in-process with the Redis nonce store. Invariants: every client gets an answer before its
deadline, nothing that does not recover to `from` is sent, and nonces on chain stay
contiguous (nothing lost, nothing used twice)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from eth_account import Account

from signer_proxy.upstream.node_errors import SendOutcome
from tests.conftest import Anvil, KmsKey, ProxyFactory, proxy_settings, start_anvil, stop
from tests.integration.kms_front import KmsFront, start_kms_front
from tests.integration.test_transactions import wait_for_receipt
from tests.unit.upstream.test_failover import SEND_ERROR_ROWS

pytestmark = pytest.mark.integration

SINK = "0x000000000000000000000000000000000000dEaD"


def nonce_of(anvil: Anvil, tx_hash: str) -> int:
    return int(anvil.call("eth_getTransactionByHash", [tx_hash])["nonce"], 16)


def throttle_error() -> web.Response:
    error = {"__type": "ThrottlingException", "message": "Rate exceeded"}
    return web.json_response(error, status=400, content_type="application/x-amz-json-1.1")


# --- KMS -----------------------------------------------------------------------------------


async def test_kms_throttling_every_third_sign_is_retried_and_in_flight_is_capped(
    aiohttp_server: Any,
    start_proxy: ProxyFactory,
    anvil: Anvil,
    kms: Any,
    funded_key: KmsKey,
) -> None:
    signs = 0
    throttled = 0

    async def every_third(operation: str, body: dict[str, Any]) -> web.Response | None:
        nonlocal signs, throttled
        if operation != "Sign":
            return None
        signs += 1
        if signs % 3 == 0:
            throttled += 1
            return throttle_error()
        return None

    front = await start_kms_front(aiohttp_server, kms.url, KmsFront(answer=every_third))
    settings = proxy_settings(
        anvil.url, front.url, funded_key.arn, kms_max_in_flight=2, kms_backoff_base=0.01
    )
    proxy = await start_proxy(settings)
    tx = {"from": funded_key.address, "to": SINK, "value": "0x1"}

    hashes = await asyncio.gather(*(proxy.result("eth_sendTransaction", [tx]) for _ in range(12)))

    assert throttled >= 4 and signs == 12 + throttled
    receipts = [wait_for_receipt(anvil, h) for h in hashes]
    assert sorted(nonce_of(anvil, r["transactionHash"]) for r in receipts) == list(range(12))


async def test_kms_in_flight_cap_queues_a_burst(
    aiohttp_server: Any,
    start_proxy: ProxyFactory,
    anvil: Anvil,
    kms: Any,
    funded_key: KmsKey,
) -> None:
    """The cap holds across concurrent requests: the front never sees more Signs at once."""

    async def slow_signs(operation: str, body: dict[str, Any]) -> web.Response | None:
        if operation == "Sign":
            await asyncio.sleep(0.05)  # long enough for a burst to pile up
        return None

    front = await start_kms_front(aiohttp_server, kms.url, KmsFront(answer=slow_signs))
    settings = proxy_settings(anvil.url, front.url, funded_key.arn, kms_max_in_flight=3)
    proxy = await start_proxy(settings)
    tx = {"from": funded_key.address, "to": SINK}

    hashes = await asyncio.gather(*(proxy.result("eth_sendTransaction", [tx]) for _ in range(15)))

    assert front.peak["Sign"] == 3
    assert len(set(hashes)) == 15


async def test_kms_that_stalls_gets_a_clear_error_before_the_deadline_and_frees_the_nonce(
    aiohttp_server: Any,
    start_proxy: ProxyFactory,
    anvil: Anvil,
    kms: Any,
    redis_url: str,
    funded_key: KmsKey,
) -> None:
    stall = asyncio.Event()
    stall.set()

    async def stalling(operation: str, body: dict[str, Any]) -> web.Response | None:
        if stall.is_set() and operation == "Sign":
            await asyncio.sleep(30)
        return None

    front = await start_kms_front(aiohttp_server, kms.url, KmsFront(answer=stalling))
    settings = proxy_settings(
        anvil.url,
        front.url,
        funded_key.arn,
        request_deadline=2.0,
        kms_timeout=0.5,
        nonce_store=redis_url,
    )
    proxy = await start_proxy(settings)
    tx = {"from": funded_key.address, "to": SINK}

    started = time.monotonic()
    replies = await asyncio.gather(*(proxy.call("eth_sendTransaction", [tx]) for _ in range(3)))
    elapsed = time.monotonic() - started

    assert elapsed < 2.0 + 0.5, elapsed
    for reply in replies:
        assert reply["error"]["code"] == -32011, reply
        assert funded_key.arn in reply["error"]["message"]
    assert anvil.call("eth_getTransactionCount", [funded_key.address, "pending"]) == "0x0"
    stall.clear()
    tx_hash = await proxy.result("eth_sendTransaction", [tx])
    assert nonce_of(anvil, wait_for_receipt(anvil, tx_hash)["transactionHash"]) == 0


# --- the node ------------------------------------------------------------------------------


@dataclass
class NodeFront:
    """In front of anvil: `fault(raw_hex)` decides the next eth_sendRawTransaction."""

    anvil_url: str
    url: str = ""
    fault: Callable[[str], Any] | None = None
    sent_raws: list[str] = field(default_factory=list)


async def start_node_front(aiohttp_server: Any, anvil: Anvil) -> NodeFront:
    front = NodeFront(anvil.url)

    async def relay(body: bytes) -> bytes:
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                front.anvil_url, data=body, headers={"Content-Type": "application/json"}
            ) as response,
        ):
            return await response.read()

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        call = json.loads(body)
        if isinstance(call, dict) and call.get("method") == "eth_sendRawTransaction":
            raw = call["params"][0]
            front.sent_raws.append(raw)
            fault, front.fault = front.fault, None
            if fault is not None:
                answer = await fault(raw) if asyncio.iscoroutinefunction(fault) else fault(raw)
                if answer == "drop":
                    assert request.transport is not None
                    request.transport.close()
                    return web.Response()
                if answer == "forward-then-drop":
                    await relay(body)
                    assert request.transport is not None
                    request.transport.close()
                    return web.Response()
                if isinstance(answer, tuple):  # (forward first?, error message)
                    forward_first, message = answer
                    if forward_first:
                        await relay(body)
                    error = {"code": -32000, "message": message}
                    return web.json_response({"jsonrpc": "2.0", "id": call["id"], "error": error})
        return web.Response(body=await relay(body), content_type="application/json")

    app = web.Application()
    app.router.add_post("/", handle)
    server = await aiohttp_server(app, host="127.0.0.1")
    front.url = f"http://127.0.0.1:{server.port}"
    return front


async def test_every_node_error_text_is_handled_and_nonces_stay_contiguous(
    aiohttp_server: Any,
    start_proxy: ProxyFactory,
    anvil: Anvil,
    kms: Any,
    redis_url: str,
    funded_key: KmsKey,
) -> None:
    """Each row of the classification table, answered once by the node: a rejection reaches
    the client with the node's message intact and frees the nonce; a nonce clash is retried
    with a fresh nonce; "already known" (after the node really got it) is a success."""
    front = await start_node_front(aiohttp_server, anvil)
    proxy = await start_proxy(
        proxy_settings(front.url, kms.url, funded_key.arn, nonce_store=redis_url)
    )
    tx = {"from": funded_key.address, "to": SINK, "value": "0x1"}
    mined: list[str] = []
    problems: list[str] = []
    for row in SEND_ERROR_ROWS:
        message, outcome = row.values
        assert isinstance(message, str)
        already_known = outcome is SendOutcome.ALREADY_KNOWN
        front.fault = lambda raw, m=message, k=already_known: (k, m)
        front.sent_raws.clear()
        reply = await proxy.call("eth_sendTransaction", [tx])
        for raw in front.sent_raws:  # nothing the node saw is signed by anyone else
            if Account.recover_transaction(raw) != funded_key.address:
                problems.append(f"{row.id}: a raw tx not from the key was sent")
        if outcome is SendOutcome.REJECTED:
            error = reply.get("error", {})
            if error.get("message") != message or error.get("code") != -32000:
                problems.append(f"{row.id}: expected the node's error intact, got {reply}")
        elif "result" not in reply:
            problems.append(f"{row.id}: expected a success, got {reply}")
        else:
            mined.append(reply["result"])
    assert problems == []
    nonces = sorted(nonce_of(anvil, wait_for_receipt(anvil, h)["transactionHash"]) for h in mined)
    assert nonces == list(range(len(mined)))  # contiguous: no nonce lost or used twice
    assert anvil.call("txpool_status") == {"pending": "0x0", "queued": "0x0"}


@pytest.mark.parametrize("drop", ["drop", "forward-then-drop"])
async def test_dropped_connection_resends_the_same_raw_transaction(
    aiohttp_server: Any,
    start_proxy: ProxyFactory,
    anvil: Anvil,
    kms: Any,
    redis_url: str,
    funded_key: KmsKey,
    drop: str,
) -> None:
    front = await start_node_front(aiohttp_server, anvil)
    proxy = await start_proxy(
        proxy_settings(front.url, kms.url, funded_key.arn, nonce_store=redis_url)
    )
    tx = {"from": funded_key.address, "to": SINK, "value": "0x1"}
    front.fault = lambda raw: drop

    tx_hash = await proxy.result("eth_sendTransaction", [tx])

    assert len(front.sent_raws) == 2 and front.sent_raws[0] == front.sent_raws[1]  # same bytes
    assert wait_for_receipt(anvil, tx_hash)["status"] == "0x1"
    assert nonce_of(anvil, tx_hash) == 0
    assert nonce_of(anvil, await proxy.result("eth_sendTransaction", [tx])) == 1


async def test_node_that_stalls_answers_before_the_deadline_and_the_recorded_tx_is_resent(
    aiohttp_server: Any,
    start_proxy: ProxyFactory,
    anvil: Anvil,
    kms: Any,
    redis_url: str,
    funded_key: KmsKey,
) -> None:
    """A send the node never answers: the client hears UpstreamTimeout with the hash before
    its deadline; the nonce is not signed again; gap repair later resends those very bytes."""
    front = await start_node_front(aiohttp_server, anvil)
    settings = proxy_settings(
        front.url,
        kms.url,
        funded_key.arn,
        nonce_store=redis_url,
        request_deadline=2.0,
        nonce_lease_seconds=1.0,
    )
    proxy = await start_proxy(settings)
    tx = {"from": funded_key.address, "to": SINK, "value": "0x1"}

    async def stall(raw: str) -> str:
        front.fault = stall  # every resend within the deadline stalls too
        await asyncio.sleep(5)
        return "drop"

    front.fault = stall
    started = time.monotonic()
    reply = await proxy.call("eth_sendTransaction", [tx])
    elapsed = time.monotonic() - started
    front.fault = None

    assert elapsed < 2.0 + 0.5, elapsed
    assert reply["error"]["code"] == -32020, reply
    assert "may still be mined" in reply["error"]["message"]
    tx_hash = reply["error"]["data"]["txHash"]
    assert reply["error"]["data"]["nonce"] == "0x0"
    # Gap repair (every quarter lease) resends the recorded bytes once a lease has passed;
    # it runs on this event loop, so wait in a thread.
    receipt = await asyncio.to_thread(wait_for_receipt, anvil, tx_hash, 10)
    assert receipt["status"] == "0x1"
    assert len(set(front.sent_raws)) == 1  # only ever those bytes for nonce 0
    assert nonce_of(anvil, await proxy.result("eth_sendTransaction", [tx])) == 1


async def test_several_upstreams_fail_over_from_a_dead_node(
    start_proxy: ProxyFactory, anvil: Anvil, kms: Any, funded_key: KmsKey
) -> None:
    """--upstream DEAD,ANVIL: reads and sends go to the node that answers."""
    from tests.unit.upstream.test_failover import closed_port_url

    upstream = f"{closed_port_url()},{anvil.url}"
    proxy = await start_proxy(proxy_settings(upstream, kms.url, funded_key.arn))

    assert await proxy.result("eth_chainId") == "0x7a69"
    tx_hash = await proxy.result("eth_sendTransaction", [{"from": funded_key.address, "to": SINK}])
    assert wait_for_receipt(anvil, tx_hash)["status"] == "0x1"


async def test_a_node_that_falls_behind_leaves_the_rotation_until_it_catches_up(
    start_proxy: ProxyFactory, anvil: Anvil, kms: Any, funded_key: KmsKey
) -> None:
    """--upstream BEHIND,AHEAD with --upstream-max-lag-blocks 20: the first node, 30 blocks
    behind the second, is left out; once it is ahead again the proxy is back on it."""
    ahead = start_anvil()
    try:
        ahead.call("anvil_mine", [hex(30)])
        settings = proxy_settings(
            f"{anvil.url},{ahead.url}",
            kms.url,
            funded_key.arn,
            upstream_health_interval=0.1,
            upstream_max_lag_blocks=20,
        )
        proxy = await start_proxy(settings)

        async def on_head(number: int) -> None:
            """Until the proxy's eth_blockNumber is `number` (the probe runs every 0.1 s)."""
            async with asyncio.timeout(10):
                while True:
                    if await proxy.result("eth_blockNumber") == hex(number):
                        return
                    await asyncio.sleep(0.05)

        await on_head(30)  # the ahead node's: the first one is left out
        anvil.call("anvil_mine", [hex(40)])
        await on_head(40)  # the first one's again: back in rotation, first in order
    finally:
        stop(ahead.process)
