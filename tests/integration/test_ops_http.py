"""/health, /ready, /metrics and X-Request-Id on the in-process app, against a real anvil and
the KMS emulator."""

from __future__ import annotations

import re
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from signer_proxy.dev.kms_emulator import KmsEmulator
from signer_proxy.keys.local import LocalKeySigner
from tests.conftest import (
    Anvil,
    InProcessProxy,
    KmsKey,
    ProxyFactory,
    free_port,
    proxy_settings,
    start_anvil,
    stop,
)

pytestmark = pytest.mark.integration

DEAD = "0x000000000000000000000000000000000000dEaD"


async def get(proxy: InProcessProxy, path: str, **headers: str) -> tuple[int, Any, Any]:
    response = await proxy.client.get(path, headers=headers)
    body = await (response.json() if path != "/metrics" else response.text())
    return response.status, body, response.headers


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


# Labelled by chain too; a single-chain proxy's chain is "default".
CHAIN_LABELLED = (
    "signer_proxy_requests_total", "signer_proxy_request_duration_seconds",
    "signer_proxy_upstream_duration_seconds", "signer_proxy_upstream_errors_total",
    "signer_proxy_send_rejections_total", "signer_proxy_nonce_", "signer_proxy_tracked_",
)  # fmt: skip


def value(text: str, name: str, **labels: str) -> float:
    if name.startswith(CHAIN_LABELLED):
        labels.setdefault("chain", "default")
    return samples(text).get((name, frozenset(labels.items())), 0.0)


async def test_health_and_ready_when_everything_is_up(proxy: InProcessProxy) -> None:
    status, body, _ = await get(proxy, "/health")
    assert (status, body) == (200, {"status": "alive"})

    status, body, _ = await get(proxy, "/ready")
    assert status == 200, body
    assert body["status"] == "ready"
    assert set(body["checks"]) == {"shutdown", "keys", "upstream", "chain_id"}
    assert body["checks"]["keys"]["detail"] == "1 key loaded"
    assert body["checks"]["chain_id"]["detail"] == "chain id 31337"
    assert "not_ready" not in body


async def test_ready_says_what_is_not_ready_when_the_node_is_down(
    start_proxy: ProxyFactory, kms: KmsEmulator
) -> None:
    dead_node = f"http://127.0.0.1:{free_port()}"
    proxy = await start_proxy(
        proxy_settings(dead_node, kms.url), signers=[LocalKeySigner(b"\x01" * 32)]
    )

    status, body, _ = await get(proxy, "/ready")

    assert status == 503
    assert body["status"] == "not ready"
    assert body["checks"]["keys"]["ok"] is True
    failing = {line.split(":")[0] for line in body["not_ready"]}
    assert failing == {"upstream", "chain_id"}
    assert "could not be reached" in body["checks"]["upstream"]["detail"]
    # Liveness does not depend on the node: restarting the proxy would not help.
    assert (await get(proxy, "/health"))[0] == 200


async def test_ready_recovers_when_the_node_comes_back(
    start_proxy: ProxyFactory, kms: KmsEmulator
) -> None:
    node = start_anvil()
    try:
        proxy = await start_proxy(
            proxy_settings(node.url, kms.url), signers=[LocalKeySigner(b"\x01" * 32)]
        )
        assert (await get(proxy, "/ready"))[0] == 200
        stop(node.process)
        status, body, _ = await get(proxy, "/ready")
        assert status == 503
        assert body["not_ready"][0].startswith("upstream: ")
    finally:
        stop(node.process)


async def test_metrics_count_a_kms_signed_send_and_fold_client_method_names(
    proxy: InProcessProxy, anvil: Anvil, funded_key: KmsKey
) -> None:
    tx_hash = await proxy.result(
        "eth_sendTransaction", [{"from": funded_key.address, "to": DEAD, "value": "0x1"}]
    )
    await proxy.result("eth_blockNumber")
    unknown = await proxy.call("clientchosen_methodName", [])
    status, _ = await proxy.post(b"{not json")

    status, text, headers = await get(proxy, "/metrics")

    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert anvil.call("eth_getTransactionReceipt", [tx_hash])["status"] == "0x1"
    assert "error" in unknown  # anvil: method not found
    r = "signer_proxy_requests_total"
    assert value(text, r, family="send_transaction", outcome="ok") == 1
    assert value(text, r, family="forwarded", outcome="ok") == 1
    assert value(text, r, family="forwarded", outcome="invalid") == 1
    assert value(text, r, family="invalid", outcome="invalid", chain="none") == 1  # not JSON
    assert value(text, "signer_proxy_sign_duration_seconds_count", backend="aws_kms") == 1
    upstream_sends = value(
        text, "signer_proxy_upstream_duration_seconds_count", method="eth_sendRawTransaction"
    )
    assert upstream_sends == 1
    assert value(text, "signer_proxy_nonce_reserve_duration_seconds_count") == 1
    assert value(text, "signer_proxy_keys_loaded") == 1
    assert value(text, "signer_proxy_in_flight_requests") == 0
    assert value(text, "signer_proxy_build_info", version="0.1.0") == 1
    assert "clientchosen" not in text
    assert "eth_blockNumber" not in text


async def test_request_id_is_echoed_or_generated(proxy: InProcessProxy) -> None:
    body = b'{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}'
    headers = {"Content-Type": "application/json"}

    given = await proxy.client.post("/", data=body, headers={**headers, "X-Request-Id": "abc-1"})
    fresh = await proxy.client.post("/", data=body, headers=headers)
    forged = await proxy.client.post("/", data=body, headers={**headers, "X-Request-Id": "a b\tc"})

    assert given.headers["X-Request-Id"] == "abc-1"
    assert re.fullmatch(r"[0-9a-f]{32}", fresh.headers["X-Request-Id"])
    assert re.fullmatch(r"[0-9a-f]{32}", forged.headers["X-Request-Id"])
