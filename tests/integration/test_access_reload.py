"""A reload (SIGHUP, POST /admin/keys/reload) reads the policy and API keys files named at
startup again: a new API key and a changed scope apply at once, a removed key is refused,
and a file that does not read or parse refuses the whole reload (nothing changes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from signer_proxy.app import create_app
from tests.auth_support import API_KEYS, write_api_keys_file, write_policy_file
from tests.conftest import Anvil, KeyFactory, proxy_settings

pytestmark = pytest.mark.integration

TOKEN = "an-admin-token-of-32-characters!"


async def test_a_reload_reads_the_policy_and_the_api_keys_again(
    aiohttp_client: Any, anvil: Anvil, kms: Any, make_key: KeyFactory, tmp_path: Path
) -> None:
    key = make_key()
    (tmp_path / "admin-token").write_text(TOKEN + "\n")
    keys_file = write_api_keys_file(tmp_path, {"ci": API_KEYS["ci"]})
    policy_file = write_policy_file(tmp_path, {"clients": {"ci": {"keys": [key.address]}}})
    settings = proxy_settings(
        anvil.url, kms.url, key.arn,
        api_keys_file=str(keys_file), policy_file=str(policy_file),
        admin_token_file=str(tmp_path / "admin-token"),
    )  # fmt: skip
    client = await aiohttp_client(create_app(settings))

    async def accounts(who: str) -> tuple[int, Any]:
        response = await client.post(
            "/",
            data=json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_accounts", "params": []}),
            headers={"Authorization": f"Bearer {API_KEYS[who]}"},
        )
        return response.status, (await response.json()).get("result")

    async def reload() -> tuple[int, Any]:
        response = await client.post(
            "/admin/keys/reload", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        return response.status, await response.json()

    assert await accounts("ci") == (200, [key.address])
    assert (await accounts("dapp"))[0] == 401  # no API key yet

    write_api_keys_file(tmp_path, {"ci": API_KEYS["ci"], "dapp": API_KEYS["dapp"]})
    write_policy_file(tmp_path, {"clients": {"ci": {"keys": []}, "dapp": {"keys": [key.address]}}})
    status, report = await reload()
    assert status == 200 and report["access"] == {"policy_clients": 2, "api_key_clients": 2}
    assert await accounts("dapp") == (200, [key.address])  # a new key, a new scope
    assert await accounts("ci") == (200, [])  # its scope no longer lists the key

    policy_file.write_text("clients: [\n")  # a file that does not parse: nothing changes
    write_api_keys_file(tmp_path, {"ci": API_KEYS["ci"]})
    status, report = await reload()
    assert status == 422 and "nothing changed" in report["error"]
    assert "policy file" in report["error"]
    assert await accounts("dapp") == (200, [key.address])

    write_policy_file(tmp_path, {"clients": {"ci": {"keys": [key.address]}}})
    status, report = await reload()  # the API keys file without dapp's, read with it
    assert status == 200 and report["access"] == {"policy_clients": 1, "api_key_clients": 1}
    assert (await accounts("dapp"))[0] == 401
    assert await accounts("ci") == (200, [key.address])
    metrics = await (await client.get("/metrics")).text()
    assert 'signer_proxy_key_reloads_total{outcome="error",trigger="admin"} 1.0' in metrics
    for secret in (TOKEN, *API_KEYS.values()):
        assert secret not in json.dumps(report)
