"""Deep and large input against real processes: the proxy answers with an error and keeps
serving (docs/security.md, "Limits"), and a client out of scope costs no parsing."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.auth_support import API_KEYS, write_api_keys_file, write_policy_file
from tests.conftest import (
    Anvil,
    KmsEmulator,
    KmsKey,
    ProxyFactory,
    proxy_settings,
    serving,
)

pytestmark = pytest.mark.integration


def post(url: str, body: bytes, headers: dict[str, str] | None = None) -> Any:
    request = urllib.request.Request(
        url, body, {"Content-Type": "application/json", **(headers or {})}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def call(method: str, params: Any) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()


def test_typed_data_100000_deep_in_a_string_is_refused_and_serve_keeps_serving(
    anvil: Anvil, kms: KmsEmulator, funded_key: KmsKey
) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    with serving(anvil, kms, funded_key.alias or funded_key.arn) as proxy:
        for method in ("eth_signTypedData_v4", "eth_signTypedData_v3", "eth_signTypedData"):
            reply = post(proxy.url, call(method, [funded_key.address, deep]))
            assert reply["error"]["code"] == -32602, reply
            assert "not valid JSON" in reply["error"]["message"]
        # The body itself nested as deep: a parse error for the whole body.
        reply = post(proxy.url, b'{"jsonrpc":"2.0","id":1,"method":"x","params":' + b"[" * 100_000)
        assert reply["error"]["code"] == -32700
        assert post(proxy.url, call("eth_blockNumber", []))["result"].startswith("0x")
        assert proxy.process.poll() is None


def recursive_typed_data(depth: int) -> dict[str, Any]:
    message: dict[str, Any] = {}
    for _ in range(depth):
        message = {"next": message}
    return {
        "types": {
            "EIP712Domain": [{"name": "name", "type": "string"}],
            "Node": [{"name": "next", "type": "Node"}],
        },
        "primaryType": "Node",
        "domain": {"name": "x"},
        "message": message,
    }


async def test_a_client_out_of_scope_is_refused_before_its_typed_data_is_read(
    start_proxy: ProxyFactory, tmp_path: Path, anvil: Anvil, kms: KmsEmulator, funded_key: KmsKey
) -> None:
    policy = write_policy_file(tmp_path, {"clients": {"ci": {"keys": []}}})  # ci: no key
    settings = proxy_settings(
        anvil.url,
        kms.url,
        funded_key.alias,
        api_keys_file=str(write_api_keys_file(tmp_path)),
        policy_file=str(policy),
        audit_log=str(tmp_path / "audit.log"),
    )
    proxy = await start_proxy(settings)
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "eth_signTypedData_v4",
        "params": [funded_key.address, json.dumps(recursive_typed_data(900))],
    }
    started = time.perf_counter()
    response = await proxy.client.post(
        "/", json=body, headers={"Authorization": f"Bearer {API_KEYS['ci']}"}
    )
    reply = await response.json()
    assert reply["error"]["code"] == -32043, reply  # the key is out of scope: nothing parsed
    assert time.perf_counter() - started < 1.0
    # The same data from a client in scope: parsed, then refused for its depth.
    response = await proxy.client.post(
        "/", json=body, headers={"Authorization": f"Bearer {API_KEYS['dapp']}"}
    )
    reply = await response.json()
    assert reply["error"]["code"] == -32602 and "nested over" in reply["error"]["message"]
