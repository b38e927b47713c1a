"""Azure Key Vault and Google Cloud KMS discovery (--azure-vault/--azure-tag,
--gcp-key-ring/--gcp-label) against our emulators through the official clients: a key tagged
or labelled in is loaded, one that is not is not, a reload picks up a new one, and
`keys list` shows what discovery found."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from signer_proxy.eth.ecdsa import address_from_public_key
from tests.conftest import Anvil, ProxyFactory, proxy_settings
from tests.integration.cloud_emulators import cloud_emulators
from tests.integration.test_cloud_keys_proxy import cli
from tests.integration.test_transactions import SINK, mined, send

pytestmark = pytest.mark.integration

TOKEN = "an-admin-token-of-32-characters!"


async def test_discovery_loads_the_tagged_and_labelled_keys_and_a_reload_finds_new_ones(
    start_proxy: ProxyFactory, anvil: Anvil, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with cloud_emulators(tmp_path, monkeypatch) as clouds:
        azure, gcp = clouds.azure, clouds.gcp
        token_file = tmp_path / "admin-token"
        token_file.write_text(TOKEN + "\n")

        az_in = azure.create_key("hot", tags={"signer": "prod", "team": "a"})
        azure.create_key("staging", tags={"signer": "dev"})  # another tag value: not loaded
        azure.create_key("untagged")  # no tags: not loaded
        azure.create_key("p256", tags={"signer": "prod"}, curve="P-256", kty="EC")  # passed over
        gcp_in = gcp.create_key("hot", labels={"signer": "prod"})
        gcp.create_key("staging", labels={"signer": "dev"})
        gcp.create_key("elsewhere", ring="other", labels={"signer": "prod"})  # another ring
        settings = proxy_settings(
            anvil.url, "http://127.0.0.1:9",
            azure_discover_vaults=(clouds.vault_host,), azure_discover_tags=("signer=prod",),
            gcp_discover_key_rings=(gcp.key_ring(),), gcp_discover_labels=("signer=prod",),
            admin_token_file=str(token_file), **clouds.settings,
        )  # fmt: skip
        first = [
            address_from_public_key(azure.public_key(az_in)),
            address_from_public_key(gcp.public_key(gcp_in)),
        ]
        proxy = await start_proxy(settings)
        assert sorted(await proxy.result("eth_accounts")) == sorted(first)
        ready = await (await proxy.client.get("/ready")).json()
        assert ready["checks"]["keys"]["detail"] == "2 keys loaded"  # the P-256 key is no failure

        az_new = azure.create_key("new", tags={"signer": "prod"})
        gcp_new = gcp.create_key("new", labels={"signer": "prod"})
        added = [
            address_from_public_key(azure.public_key(az_new)),
            address_from_public_key(gcp.public_key(gcp_new)),
        ]
        response = await proxy.client.post(
            "/admin/keys/reload", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        report = await response.json()
        assert response.status == 200, report
        assert sorted(report["added"]) == sorted(added) and report["removed"] == []
        assert sorted(await proxy.result("eth_accounts")) == sorted(first + added)
        for address in added:  # the keys a reload found sign, mined on anvil
            anvil.fund(address)
            mined(anvil, await send(proxy, {"from": address, "to": SINK, "value": "0x1"}), address)


async def test_keys_list_shows_what_cloud_discovery_found(tmp_path: Path) -> None:
    async with cloud_emulators(tmp_path) as clouds:
        azure, gcp, env = clouds.azure, clouds.gcp, clouds.settings_env
        az_in = azure.create_key("listed", tags={"env": "prod"})
        azure.create_key("hidden", tags={"env": "test"})
        gcp_in = gcp.create_key("listed", labels={"env": "prod"})
        gcp.create_key("hidden", labels={"env": "test"})
        host = clouds.vault_host
        code, out, err = await cli(
            "keys", "list", "--azure-vault", host, "--azure-tag", "env=prod",
            "--gcp-key-ring", gcp.key_ring(), "--gcp-label", "env=prod", "--json", env=env,
        )  # fmt: skip
        assert code == 0, (out, err)
        rows = {(k["source"], k["address"], k["state"]) for k in json.loads(out)["keys"]}
        assert rows == {
            ("azure", address_from_public_key(azure.public_key(az_in)), "Enabled"),
            ("gcp", address_from_public_key(gcp.public_key(gcp_in)), "Enabled"),
        }
        code, out, err = await cli(
            "keys", "list", "--azure-vault", host, "--azure-tag", "env", env=env
        )
        assert code == 2 and "--azure-tag 'env' must be KEY=VALUE" in err, err
