"""One keyring, every backend (issue 16): an AWS KMS key (the moto emulator), a SoftHSM2
token key (real PKCS#11), an Azure Key Vault key and a Google Cloud KMS key (our emulators,
reached through the official clients) served by one proxy, each signing a transaction mined
on anvil; the same address held by two backends refused at load naming both; and /ready
naming the keys whose service went away at a reload, clean again once it is back."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from signer_proxy.config import Settings
from signer_proxy.dev.azure_kv_emulator import AzureKeyVaultEmulator, EmulatedKey
from signer_proxy.dev.gcp_kms_emulator import GcpKmsEmulator
from signer_proxy.dev.softhsm import SoftHsmToken, make_token
from signer_proxy.errors import ConfigError
from signer_proxy.eth.ecdsa import address_from_public_key, keccak256
from tests.conftest import Anvil, KeyFactory, ProxyFactory, proxy_settings
from tests.integration.cloud_emulators import cloud_emulators
from tests.integration.test_transactions import SINK, mined, send

pytestmark = pytest.mark.integration

TOKEN = "an-admin-token-of-32-characters!"


@dataclass
class Backends:
    azure: AzureKeyVaultEmulator
    gcp: GcpKmsEmulator
    token: SoftHsmToken
    settings: dict[str, Any]  # Settings fields every backend needs (CA, endpoint, module, PIN)

    def azure_ref(self, key: EmulatedKey) -> str:
        return f"azurekv://{self.azure.vault_url.removeprefix('https://')}/keys/{key.name}"

    async def pkcs11_key(self, label: str, private_key: bytes | None = None) -> tuple[str, str]:
        """(URI, address) of a new key on the token (imported when `private_key` is given)."""
        from signer_proxy.keys.pkcs11_keys import parse_uri
        from signer_proxy.keys.pkcs11_manage import make_key

        spec = parse_uri(f"pkcs11:token={self.token.label}", self.settings_object())
        made = await make_key(spec, label, private_key)
        return f"pkcs11:token={self.token.label};object={label}", made.address

    def settings_object(self) -> Settings:
        return Settings(**self.settings)


@pytest.fixture
async def backends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Backends]:
    from signer_proxy.keys.pkcs11_keys import module

    async with cloud_emulators(tmp_path, monkeypatch) as clouds:
        # A label of its own: token pools live as long as the process, by module and label.
        token = make_token(tmp_path / "softhsm", f"mixed-{uuid.uuid4().hex[:8]}")
        monkeypatch.setenv("SOFTHSM2_CONF", str(token.conf))
        loaded = module(token.module)  # this process may have met SoftHSM2 under another conf
        loaded.reinitialize(loaded.generation)
        settings = {
            **clouds.settings,
            "pkcs11_module": token.module,
            "pkcs11_pin_file": str(token.pin_file),
        }
        yield Backends(clouds.azure, clouds.gcp, token, settings)


async def test_one_proxy_signs_with_kms_softhsm_azure_and_gcp_keys(
    start_proxy: ProxyFactory, anvil: Anvil, kms: Any, make_key: KeyFactory, backends: Backends
) -> None:
    kms_key = make_key()
    uri, token_address = await backends.pkcs11_key("mixed-1")
    az_key = backends.azure.create_key("mixed")
    version = backends.gcp.create_key("mixed")
    addresses = {
        "kms": kms_key.address,
        "pkcs11": token_address,
        "azure": address_from_public_key(backends.azure.public_key(az_key)),
        "gcp": address_from_public_key(backends.gcp.public_key(version)),
    }
    settings = proxy_settings(
        anvil.url, kms.url, kms_key.arn,
        key_sources=(uri, backends.azure_ref(az_key), "gcpkms://" + version.name),
        **backends.settings,
    )  # fmt: skip
    for address in addresses.values():
        anvil.fund(address)
    proxy = await start_proxy(settings)
    accounts = {a.lower() for a in await proxy.result("eth_accounts")}
    assert accounts == {a.lower() for a in addresses.values()}
    for address in addresses.values():
        tx_hash = await send(proxy, {"from": address, "to": SINK, "value": "0x1"})
        mined(anvil, tx_hash, address)  # mined, and its signature recovers to `address`
    assert backends.azure.sign_calls == 1 and backends.gcp.sign_calls == 1


async def test_one_address_in_two_backends_is_refused_at_load_naming_both(
    backends: Backends,
) -> None:
    from signer_proxy.keys.aws_clients import KmsClients
    from signer_proxy.keys.loading import load_keys
    from signer_proxy.keys.sources import key_sources

    secret = keccak256(b"one key, two backends")
    uri, address = await backends.pkcs11_key("twice", secret)
    az_key = backends.azure.create_key("twice")
    az_key.secret = secret  # the same private key in the vault as on the token
    settings = backends.settings_object()
    sources = key_sources((), others=(uri, backends.azure_ref(az_key)), settings=settings)
    async with KmsClients(settings) as clients:
        with pytest.raises(ConfigError) as refused:
            await load_keys(sources, clients, strict=True)
        lenient = await load_keys(sources, clients)
    message = str(refused.value)
    assert message.startswith(f"{address} is held by both {uri};id=")  # the token's key …
    assert f" (pkcs11) and {backends.azure.vault_url}/keys/twice/{az_key.version} (azure)" in (
        message
    )  # … and the vault's, each with its backend
    assert [s.address for s in lenient.signers] == [address]  # without strict: the first signs
    assert [s.reason for s in lenient.statuses if not s.ok] == ["duplicate"]


async def test_ready_names_the_keys_whose_service_went_away_and_clears_when_back(
    start_proxy: ProxyFactory, anvil: Anvil, backends: Backends, tmp_path: Path
) -> None:
    token_file = tmp_path / "admin-token"
    token_file.write_text(TOKEN + "\n")
    uri, token_address = await backends.pkcs11_key("ready-1")
    az_key = backends.azure.create_key("ready")
    version = backends.gcp.create_key("ready")
    refs = [uri, backends.azure_ref(az_key), "gcpkms://" + version.name]
    addresses = [
        token_address,
        address_from_public_key(backends.azure.public_key(az_key)),
        address_from_public_key(backends.gcp.public_key(version)),
    ]
    settings = proxy_settings(
        anvil.url, "http://127.0.0.1:9", key_sources=tuple(refs),
        admin_token_file=str(token_file), **backends.settings,
    )  # fmt: skip
    for address in addresses:
        anvil.fund(address)
    proxy = await start_proxy(settings)
    headers = {"Authorization": f"Bearer {TOKEN}"}

    async def ready() -> str:
        response = await proxy.client.get("/ready")
        body = await response.json()
        assert response.status == 200, body  # the keys still sign once their service is back
        detail: str = body["checks"]["keys"]["detail"]
        return detail

    assert await ready() == "3 keys loaded"

    # Every key service goes away: the vault and Cloud KMS answer 503 / UNAVAILABLE, the
    # token's directory disappears (as a pulled-out token).
    backends.azure.down = backends.gcp.down = True
    away = backends.token.directory / "tokens.away"
    (backends.token.directory / "tokens").rename(away)
    try:
        failed = await proxy.call("eth_sendTransaction", [{"from": addresses[1], "to": SINK}])
        assert failed["error"]["code"] == -32011, failed  # unavailable: retry later
        response = await proxy.client.post("/admin/keys/reload", headers=headers)
        assert response.status == 200
        report = await response.json()
        assert sorted(k["key"] for k in report["kept"]) == sorted(refs)
        detail = await ready()
        assert detail.startswith("3 keys loaded; not loaded: ")
        for ref in refs:
            assert f"{ref}: kept from the previous load after: " in detail
        assert "HTTP 503" in detail and "UNAVAILABLE" in detail and "CKR_" in detail
        assert backends.token.pin_file.read_text().strip() not in detail
    finally:
        backends.azure.down = backends.gcp.down = False
        if away.exists():
            away.rename(backends.token.directory / "tokens")

    response = await proxy.client.post("/admin/keys/reload", headers=headers)
    assert (await response.json())["kept"] == []
    assert await ready() == "3 keys loaded"
    for address in addresses:
        mined(anvil, await send(proxy, {"from": address, "to": SINK, "value": "0x1"}), address)
