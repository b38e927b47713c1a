"""The proxy in front of nodes that need credentials: SigV4 (Amazon Managed Blockchain Access,
emulated by a front that recomputes signatures with botocore) and a provider header, both in
front of a real anvil. Pass-through, signing and WebSocket subscriptions work through them; a
wrong credential gives the client an error naming the node, not the secret."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from signer_proxy.config import ChainConfig
from tests.conftest import (
    Anvil,
    InProcessProxy,
    KmsEmulator,
    KmsKey,
    ProxyFactory,
    proxy_settings,
    start_anvil,
    stop,
)
from tests.integration.sigv4_front import CheckingFront
from tests.integration.test_transactions import SINK, mined

# The AWS credentials the test environment gives every AWS client (tests/conftest.py).
KEY_ID, SECRET = "testing", "testing"


@pytest.fixture
async def sigv4_front(anvil: Anvil) -> AsyncIterator[CheckingFront]:
    front = CheckingFront(anvil.url, sigv4=(KEY_ID, SECRET))
    await front.start()
    yield front
    await front.stop()


async def test_pass_through_signing_and_subscriptions_through_sigv4(
    start_proxy: ProxyFactory,
    sigv4_front: CheckingFront,
    anvil: Anvil,
    kms: KmsEmulator,
    funded_key: KmsKey,
) -> None:
    settings = proxy_settings(
        sigv4_front.url,
        kms.url,
        funded_key.alias or funded_key.arn,
        upstream_sigv4_region="us-east-1",
        upstream_ws=sigv4_front.ws_url,
    )
    proxy: InProcessProxy = await start_proxy(settings)
    assert await proxy.result("eth_chainId") == anvil.call("eth_chainId")
    tx_hash = await proxy.result(
        "eth_sendTransaction", [{"from": funded_key.address, "to": SINK, "value": "0x1"}]
    )
    mined(anvil, tx_hash, funded_key.address)
    async with proxy.client.ws_connect("/") as ws:
        await ws.send_str(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe",
                                      "params": ["newHeads"]}))  # fmt: skip
        subscribed = json.loads((await ws.receive(timeout=10)).data)
        assert isinstance(subscribed.get("result"), str), subscribed
        anvil.call("evm_mine")
        note = json.loads((await ws.receive(timeout=10)).data)
        assert note["method"] == "eth_subscription"
    assert sigv4_front.refused == 0 and sigv4_front.accepted >= 4


async def test_wrong_credentials_name_the_node_not_the_secret(
    start_proxy: ProxyFactory,
    anvil: Anvil,
    kms: KmsEmulator,
    funded_key: KmsKey,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    front = CheckingFront(anvil.url, header=("X-Api-Key", "right-key-123456"))
    await front.start()
    try:
        monkeypatch.setenv("NODE_KEY_FOR_TEST", "wrong-key-654321")
        settings = proxy_settings(
            front.url,
            kms.url,
            funded_key.alias or funded_key.arn,
            upstream_headers=("X-Api-Key: env:NODE_KEY_FOR_TEST",),
        )
        proxy: InProcessProxy = await start_proxy(settings)
        answer = await proxy.call("eth_blockNumber")
        message = answer["error"]["message"]
        assert "refused the proxy's credentials" in message and "127.0.0.1" in message
        assert "wrong-key" not in json.dumps(answer) and "/v1/node" not in message
        ready = await proxy.client.get("/ready")
        page = await ready.text()
        assert ready.status == 503 and "refused the proxy's credentials (HTTP 403)" in page
        assert "wrong-key" not in page
        monkeypatch.setenv("NODE_KEY_FOR_TEST", "right-key-123456")
        good: InProcessProxy = await start_proxy(settings)
        assert await good.result("eth_blockNumber") == anvil.call("eth_blockNumber")
    finally:
        await front.stop()


async def test_each_chain_reaches_its_node_with_its_own_credentials(
    start_proxy: ProxyFactory,
    sigv4_front: CheckingFront,
    anvil: Anvil,
    kms: KmsEmulator,
    funded_key: KmsKey,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two chains: one behind SigV4 (Amazon Managed Blockchain style), one behind a provider
    header; each chain's requests carry its own credentials only (a front refuses anything
    else), over HTTP and on the WebSocket upgrade; the tracker asks each chain for its own."""
    other = start_anvil("--chain-id", "31338")
    header_front = CheckingFront(other.url, header=("X-Api-Key", "beta-key-123456"))
    await header_front.start()
    try:
        other.fund(funded_key.address)
        monkeypatch.setenv("BETA_NODE_KEY", "beta-key-123456")
        chains = (
            ChainConfig(
                "amb",
                overrides=(
                    ("upstream", sigv4_front.url),
                    ("upstream_ws", sigv4_front.ws_url),
                    ("upstream_sigv4_region", "us-east-1"),
                ),
            ),
            ChainConfig(
                "provider",
                chain_id=31338,
                overrides=(
                    ("upstream", header_front.url),
                    ("upstream_ws", header_front.ws_url),
                    ("upstream_headers", ("X-Api-Key: env:BETA_NODE_KEY",)),
                ),
            ),
        )
        settings = proxy_settings("", kms.url, funded_key.alias or funded_key.arn, chains=chains)
        proxy: InProcessProxy = await start_proxy(settings)
        send = [{"from": funded_key.address, "to": SINK, "value": "0x1"}]
        for name, node in (("amb", anvil), ("provider", other)):
            path = f"/chain/{name}"
            assert await proxy.result("eth_chainId", path=path) == node.call("eth_chainId")
            mined(
                node, await proxy.result("eth_sendTransaction", send, path=path), funded_key.address
            )
            async with proxy.client.ws_connect(path) as ws:
                await ws.send_str(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"}))
                reply = json.loads((await ws.receive(timeout=10)).data)
                assert reply["result"] == node.call("eth_chainId")
        assert sigv4_front.refused == 0 and header_front.refused == 0
        assert sigv4_front.accepted >= 3 and header_front.accepted >= 3
    finally:
        await header_front.stop()
        stop(other.process)
