"""JSON-RPC over HTTP against the in-process proxy: pass-through, batches, notifications, limits,
bad input, and an unreachable node. After every bad request a good one must still work."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import (
    Anvil,
    InProcessProxy,
    KmsKey,
    ProxyFactory,
    free_port,
    proxy_settings,
    rpc_call,
)

pytestmark = pytest.mark.integration

SINK = "0x000000000000000000000000000000000000dEaD"
SECRET = "secret-api-key-123"
JSON = {"Content-Type": "application/json"}


def request(method: str, params: Any = None, call_id: Any = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": call_id, "method": method, "params": params or []}


def notification(method: str, params: Any = None) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": method, "params": params or []}


async def still_serving(proxy: InProcessProxy, address: str) -> None:
    """A good local call and a good forwarded call both succeed."""
    assert await proxy.result("eth_accounts") == [address]
    assert int(await proxy.result("eth_chainId"), 16) == 31337


async def test_pass_through_returns_exactly_what_the_node_returns(
    proxy: InProcessProxy, anvil: Anvil, funded_key: KmsKey
) -> None:
    for method, params in (
        ("eth_blockNumber", []),
        ("eth_getBalance", [funded_key.address, "latest"]),
        ("eth_getBalance", [SINK, "latest"]),
        ("eth_chainId", []),
    ):
        assert await proxy.call(method, params) == rpc_call(anvil.url, method, params)
    # The node's own errors pass through untouched too.
    bad = ("eth_getBalance", ["0x1234", "latest"])
    assert await proxy.call(*bad) == rpc_call(anvil.url, *bad)


async def test_batch_mixes_local_and_forwarded_calls_in_order_with_ids_kept(
    proxy: InProcessProxy, anvil: Anvil, funded_key: KmsKey
) -> None:
    batch = [
        request("eth_chainId", call_id="first"),
        request("eth_accounts", call_id=7),
        request("eth_sendTransaction", [{"from": funded_key.address, "to": SINK}], "send"),
        request("eth_blockNumber", call_id=None),
        request("eth_getBalance", [SINK, "latest"], call_id=0),
        request("eth_getTransactionCount", [funded_key.address, "latest"], call_id="last"),
    ]
    status, replies = await proxy.post(batch)
    assert status == 200
    assert [r["id"] for r in replies] == ["first", 7, "send", None, 0, "last"]
    assert all(r["jsonrpc"] == "2.0" and "error" not in r for r in replies), replies
    assert replies[0]["result"] == "0x7a69"
    assert replies[1]["result"] == [funded_key.address]
    receipt = anvil.call("eth_getTransactionByHash", [replies[2]["result"]])
    assert receipt["from"].lower() == funded_key.address.lower()
    assert replies[3]["result"].startswith("0x")
    await still_serving(proxy, funded_key.address)


async def test_notifications_get_no_reply(
    proxy: InProcessProxy, anvil: Anvil, funded_key: KmsKey
) -> None:
    for body in (
        notification("eth_blockNumber"),
        notification("eth_accounts"),
        [notification("eth_blockNumber"), notification("eth_accounts")],
    ):
        response = await proxy.client.post("/", data=json.dumps(body))
        assert response.status == 204, body
        assert await response.read() == b""
    await still_serving(proxy, funded_key.address)


async def test_notification_inside_a_batch_is_not_answered_but_is_executed(
    proxy: InProcessProxy, anvil: Anvil, funded_key: KmsKey
) -> None:
    status, replies = await proxy.post(
        [
            notification("eth_sendTransaction", [{"from": funded_key.address, "to": SINK}]),
            request("eth_chainId", call_id="only"),
            notification("eth_blockNumber"),
        ]
    )
    assert status == 200
    assert replies == [{"jsonrpc": "2.0", "id": "only", "result": "0x7a69"}]
    assert anvil.call("eth_getTransactionCount", [funded_key.address, "pending"]) == "0x1"


@pytest.mark.parametrize(
    ("body", "code", "fragment"),
    [
        (b'{"jsonrpc": "2.0", "id": 1, "method": ', -32700, "not valid JSON"),
        (b"\xff\xfe not even utf-8", -32700, "not valid JSON"),
        (b"42", -32600, "must be an object"),
        (b'"eth_blockNumber"', -32600, "must be an object"),
        (b"[]", -32600, "empty batch"),
        (b'{"jsonrpc": "1.0", "id": 1, "method": "eth_blockNumber"}', -32600, "jsonrpc"),
        (b'{"jsonrpc": "2.0", "id": 1, "method": 5}', -32600, "method"),
    ],
)
async def test_malformed_bodies_get_the_right_error_and_the_server_keeps_serving(
    proxy: InProcessProxy, funded_key: KmsKey, body: bytes, code: int, fragment: str
) -> None:
    status, reply = await proxy.post(body)
    assert status == 200
    assert reply["id"] is None
    assert reply["error"]["code"] == code
    assert fragment in reply["error"]["message"]
    await still_serving(proxy, funded_key.address)


async def test_invalid_members_of_a_batch_get_their_own_errors(
    proxy: InProcessProxy, funded_key: KmsKey
) -> None:
    status, replies = await proxy.post(
        [request("eth_chainId", call_id=1), 42, {"jsonrpc": "2.0", "id": 3}]
    )
    assert status == 200
    assert [r["id"] for r in replies] == [1, None, 3]
    assert replies[0]["result"] == "0x7a69"
    assert [r["error"]["code"] for r in replies[1:]] == [-32600, -32600]


async def test_batch_and_body_limits_answer_413_with_a_json_rpc_error(
    start_proxy: ProxyFactory, anvil: Anvil, kms: Any, funded_key: KmsKey
) -> None:
    proxy = await start_proxy(
        proxy_settings(anvil.url, kms.url, funded_key.arn, max_batch=3, max_body_bytes=4096)
    )
    ok_status, ok = await proxy.post([request("eth_chainId", call_id=i) for i in range(3)])
    assert ok_status == 200 and [r["result"] for r in ok] == ["0x7a69"] * 3

    status, reply = await proxy.post([request("eth_chainId", call_id=i) for i in range(4)])
    assert status == 413
    assert reply["error"]["code"] == -32600
    assert "4 calls" in reply["error"]["message"] and "3" in reply["error"]["message"]
    await still_serving(proxy, funded_key.address)

    big = request("eth_getBalance", [SINK, "latest", "x" * 5000])
    status, reply = await proxy.post(big)
    assert status == 413
    assert reply["jsonrpc"] == "2.0" and reply["id"] is None
    assert reply["error"]["code"] == -32600
    assert "4096 bytes" in reply["error"]["message"]
    assert "--max-body-bytes" in reply["error"]["message"]
    await still_serving(proxy, funded_key.address)


async def test_unknown_from_is_refused_naming_the_address(
    proxy: InProcessProxy, anvil: Anvil, funded_key: KmsKey
) -> None:
    stranger = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
    for method in ("eth_sendTransaction", "eth_signTransaction"):
        reply = await proxy.call(method, [{"from": stranger, "to": SINK}])
        assert reply["error"]["code"] == -32602
        assert stranger in reply["error"]["message"]
        assert "not an account this proxy holds a key for" in reply["error"]["message"]
    assert anvil.call("eth_getTransactionCount", [stranger, "pending"]) == "0x0"
    await still_serving(proxy, funded_key.address)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("value", "0xzz"),
        ("value", "12"),
        ("gas", "0x"),
        ("data", "0x123"),
        ("input", "nothex"),
        ("to", "0x1234"),
        ("to", "0xZZ000000000000000000000000000000000000000"),
        ("from", "not-an-address"),
        ("nonce", "-0x1"),
    ],
)
async def test_invalid_hex_and_addresses_are_refused_naming_the_field(
    proxy: InProcessProxy, anvil: Anvil, funded_key: KmsKey, field: str, value: str
) -> None:
    tx = {"from": funded_key.address, "to": SINK, field: value}
    reply = await proxy.call("eth_sendTransaction", [tx])
    assert reply["error"]["code"] == -32602, reply
    message = reply["error"]["message"]
    assert message.startswith(field + " "), message
    assert anvil.call("eth_getTransactionCount", [funded_key.address, "pending"]) == "0x0"
    await still_serving(proxy, funded_key.address)
    # And a good send right after uses nonce 0: the refusal burnt nothing.
    tx_hash = await proxy.result("eth_sendTransaction", [{"from": funded_key.address, "to": SINK}])
    assert anvil.call("eth_getTransactionByHash", [tx_hash])["nonce"] == "0x0"


async def test_unreachable_node_is_a_json_rpc_error_without_the_url_secret(
    start_proxy: ProxyFactory, kms: Any, funded_key: KmsKey
) -> None:
    port = free_port()  # nothing listens here
    proxy = await start_proxy(
        proxy_settings(f"http://127.0.0.1:{port}/{SECRET}?apikey={SECRET}", kms.url, funded_key.arn)
    )
    replies = [
        await proxy.call("eth_blockNumber"),
        await proxy.call("eth_getBalance", [SINK, "latest"]),
        await proxy.call("eth_sendTransaction", [{"from": funded_key.address, "to": SINK}]),
        await proxy.call("eth_signTransaction", [{"from": funded_key.address, "to": SINK}]),
    ]
    status, batch = await proxy.post(
        [
            request("eth_blockNumber", call_id="a"),
            request("eth_accounts", call_id="b"),
            request("eth_sendTransaction", [{"from": funded_key.address, "to": SINK}], "c"),
        ]
    )
    assert status == 200
    assert [r["id"] for r in batch] == ["a", "b", "c"]
    assert batch[1]["result"] == [funded_key.address]  # local calls need no node
    for reply in [*replies, batch[0], batch[2]]:
        error = reply["error"]
        assert error["code"] == -32020, reply
        assert f"127.0.0.1:{port}" in error["message"]
        assert "--upstream" in error["message"]
    # The secret is in no reply at all, whatever the shape.
    for reply in [*replies, *batch]:
        assert SECRET not in json.dumps(reply)


async def test_node_url_secret_never_appears_in_errors_from_a_live_node(
    start_proxy: ProxyFactory, aiohttp_server: Any, anvil: Anvil, kms: Any, funded_key: KmsKey
) -> None:
    # A provider-style node: JSON-RPC only under the secret path, 404 elsewhere.
    async def provider(request: web.Request) -> web.Response:
        async with (
            aiohttp.ClientSession() as session,
            session.post(anvil.url, data=await request.read(), headers=JSON) as response,
        ):
            return web.Response(body=await response.read(), content_type="application/json")

    app = web.Application()
    app.router.add_post(f"/{SECRET}", provider)
    node = await aiohttp_server(app, host="127.0.0.1")
    node_url = f"http://127.0.0.1:{node.port}"

    proxy = await start_proxy(proxy_settings(f"{node_url}/{SECRET}", kms.url, funded_key.arn))
    too_rich = {"from": funded_key.address, "to": SINK, "value": hex(10**30)}
    replies = [
        await proxy.call("eth_sendTransaction", [too_rich]),
        await proxy.call("eth_getBalance", ["0x1234", "latest"]),
        await proxy.call("eth_sendTransaction", [{"from": funded_key.address, "chainId": "0x1"}]),
    ]
    assert all("error" in r for r in replies), replies
    assert "insufficient funds" in replies[0]["error"]["message"].lower()
    tx_hash = await proxy.result("eth_sendTransaction", [{"from": funded_key.address, "to": SINK}])
    assert anvil.call("eth_getTransactionByHash", [tx_hash])["nonce"] == "0x0"

    # The same node under a wrong secret answers 404: the error names the node, not the path.
    wrong = await start_proxy(proxy_settings(f"{node_url}/{SECRET}-old", kms.url, funded_key.arn))
    replies += [
        await wrong.call("eth_blockNumber"),
        await wrong.call("eth_sendTransaction", [{"from": funded_key.address, "to": SINK}]),
    ]
    assert replies[-1]["error"]["code"] == -32021
    assert node_url in replies[-1]["error"]["message"]
    assert "error" in replies[-2]
    for reply in replies:
        assert SECRET not in json.dumps(reply)
