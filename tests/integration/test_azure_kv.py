"""Azure Key Vault keys through the official azure clients, against the local emulator
(signer_proxy/dev/azure_kv_emulator.py): what it refuses, and that signatures recover."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator

import aiohttp
import pytest

from signer_proxy.dev.azure_kv_emulator import AzureKeyVaultEmulator
from signer_proxy.errors import KeyLoadFailed, KmsUnavailable
from signer_proxy.eth.ecdsa import SECP256K1_HALF_N, keccak256, recover_public_key
from signer_proxy.keys.azure_kv import AzureKvSigner, AzureVault, parse_azure_key
from signer_proxy.keys.signer import sign_checked

pytestmark = pytest.mark.integration


@pytest.fixture
async def emulator(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[AzureKeyVaultEmulator]:
    emu = AzureKeyVaultEmulator()
    await emu.start()
    for name, value in emu.credential_env().items():
        monkeypatch.setenv(name, value)
    try:
        yield emu
    finally:
        await emu.stop()


@pytest.fixture
async def vault(emulator: AzureKeyVaultEmulator) -> AsyncIterator[AzureVault]:
    from azure.identity.aio import ManagedIdentityCredential

    credential = ManagedIdentityCredential()
    # A challenge for 127.0.0.1 cannot be a parent domain of the vault host: off for the
    # emulator only (production keeps azure's check).
    vault = AzureVault(
        emulator.vault_url,
        credential,
        connection_verify=emulator.ca_file,
        verify_challenge_resource=False,
        retry_backoff_factor=0.01,
    )
    try:
        yield vault
    finally:
        await vault.aclose()
        await credential.close()


def source(emulator: AzureKeyVaultEmulator, name: str, version: str = "") -> str:
    host = emulator.vault_url.removeprefix("https://")
    return f"azurekv://{host}/keys/{name}" + (f"/{version}" if version else "")


async def raw(
    emulator: AzureKeyVaultEmulator, method: str, path: str, **kwargs: object
) -> tuple[int, dict[str, str], str]:
    context = ssl.create_default_context(cafile=emulator.ca_file)
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, emulator.vault_url + path, ssl=context, **kwargs) as response,  # type: ignore[arg-type]
    ):
        return response.status, dict(response.headers), await response.text()


async def token(emulator: AzureKeyVaultEmulator, resource: str) -> str:
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            emulator.identity_endpoint,
            params={"api-version": "2019-08-01", "resource": resource},
            headers={"X-IDENTITY-HEADER": emulator.identity_header},
        ) as response,
    ):
        assert response.status == 200
        return str((await response.json())["access_token"])


async def test_emulator_refuses_what_key_vault_refuses(emulator: AzureKeyVaultEmulator) -> None:
    key = emulator.create_key("k")
    other = emulator.create_key("p256", curve="P-256", kty="EC")
    status, _, body = await raw(emulator, "GET", "/keys/k")
    assert status == 400 and "api-version" in body
    status, _, _ = await raw(emulator, "GET", "/keys/k?api-version=1.0")
    assert status == 400
    status, headers, _ = await raw(emulator, "GET", "/keys/k?api-version=7.4")
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer authorization=")
    bad = {"Authorization": "Bearer not-a-token"}
    status, _, _ = await raw(emulator, "GET", "/keys/k?api-version=7.4", headers=bad)
    assert status == 401
    wrong_audience = {"Authorization": "Bearer " + await token(emulator, "https://other.example")}
    status, _, _ = await raw(emulator, "GET", "/keys/k?api-version=7.4", headers=wrong_audience)
    assert status == 401
    good = {"Authorization": "Bearer " + await token(emulator, "https://127.0.0.1")}
    status, _, body = await raw(emulator, "GET", "/keys/k?api-version=7.4", headers=good)
    assert status == 200 and "P-256K" in body
    status, _, _ = await raw(emulator, "GET", "/keys/nope?api-version=7.4", headers=good)
    assert status == 404
    sign = f"/keys/k/{key.version}/sign?api-version=7.4"
    status, _, body = await raw(
        emulator, "POST", sign, headers=good, json={"alg": "ES256K", "value": "AAAA"}
    )
    assert status == 400 and "digest length" in body
    status, _, _ = await raw(
        emulator, "POST", sign, headers=good, json={"alg": "ES256", "value": "A" * 43}
    )
    assert status == 400
    status, _, _ = await raw(
        emulator, "POST", f"/keys/p256/{other.version}/sign?api-version=7.4", headers=good,
        json={"alg": "ES256K", "value": "A" * 43},
    )  # fmt: skip
    assert status == 400
    status, _, _ = await raw(emulator, "POST", sign, headers=good, data=b"not json")
    assert status == 400
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            emulator.identity_endpoint,
            params={"api-version": "2019-08-01", "resource": "https://127.0.0.1"},
            headers={"X-IDENTITY-HEADER": "wrong"},
        ) as response,
    ):
        assert response.status == 401


async def test_signatures_from_key_vault_recover_low_s(
    emulator: AzureKeyVaultEmulator, vault: AzureVault
) -> None:
    key = emulator.create_key("signer")
    info = await vault.load(parse_azure_key(source(emulator, "signer")))
    assert info.key_id.endswith(f"/keys/signer/{key.version}")
    assert info.public_key == emulator.public_key(key)
    signer = AzureKvSigner(vault, info)
    for i in range(8):  # the emulator returns high-S half of the time
        digest = keccak256(bytes([i]))
        signature = await sign_checked(signer, digest)
        assert signature.s <= SECP256K1_HALF_N
        recovered = recover_public_key(digest, signature.r, signature.s, signature.y_parity)
        assert recovered == info.public_key
    assert emulator.sign_calls == 8


async def test_a_pinned_version_signs_with_that_version(
    emulator: AzureKeyVaultEmulator, vault: AzureVault
) -> None:
    first = emulator.create_key("rotated")
    emulator.create_key("rotated")  # a newer version: another key, another address
    info = await vault.load(parse_azure_key(source(emulator, "rotated", first.version)))
    assert info.public_key == emulator.public_key(first)
    await sign_checked(AzureKvSigner(vault, info), keccak256(b"pinned"))


async def test_throttling_is_retried_after_retry_after(
    emulator: AzureKeyVaultEmulator, vault: AzureVault
) -> None:
    emulator.create_key("busy")
    info = await vault.load(parse_azure_key(source(emulator, "busy")))
    emulator.throttle_next = 2
    await sign_checked(AzureKvSigner(vault, info), keccak256(b"after 429"))
    assert emulator.throttle_next == 0 and emulator.sign_calls == 1
    emulator.retry_after_seconds = 0
    emulator.throttle_next = 100  # beyond the retry budget: unavailable, not a bad key
    with pytest.raises(KmsUnavailable, match="HTTP 429"):
        await AzureKvSigner(vault, info).sign_digest(keccak256(b"still busy"))


async def test_keys_that_cannot_sign_for_ethereum_are_refused_at_load(
    emulator: AzureKeyVaultEmulator, vault: AzureVault
) -> None:
    emulator.create_key("p256", curve="P-256", kty="EC")
    with pytest.raises(KeyLoadFailed, match="P-256K") as refused:
        await vault.load(parse_azure_key(source(emulator, "p256")))
    assert refused.value.reason == "spec"
    with pytest.raises(KeyLoadFailed, match="not found") as missing:
        await vault.load(parse_azure_key(source(emulator, "absent")))
    assert missing.value.reason == "not_found"
    emulator.create_key("off").enabled = False
    with pytest.raises(KeyLoadFailed, match="disabled"):
        await vault.load(parse_azure_key(source(emulator, "off")))


async def test_discovery_by_tag_loads_only_matching_keys(
    emulator: AzureKeyVaultEmulator, vault: AzureVault
) -> None:
    a = emulator.create_key("a", tags={"signer": "yes", "env": "prod"})
    emulator.create_key("b", tags={"signer": "yes", "env": "test"})
    emulator.create_key("c")
    emulator.create_key("d", tags={"signer": "yes", "env": "prod"}, curve="P-256", kty="EC")
    found = await vault.discover({"signer": "yes", "env": "prod"})
    loaded = [info for info, _, failure in found if info is not None]
    failed = [(label, failure) for info, label, failure in found if failure is not None]
    assert [info.public_key for info in loaded] == [emulator.public_key(a)]
    assert len(failed) == 1 and failed[0][0].endswith("/keys/d")


async def test_no_token_reaches_errors_or_reprs(
    emulator: AzureKeyVaultEmulator, vault: AzureVault
) -> None:
    emulator.create_key("quiet")
    info = await vault.load(parse_azure_key(source(emulator, "quiet")))
    signer = AzureKvSigner(vault, info)
    await sign_checked(signer, keccak256(b"x"))
    emulator.retry_after_seconds = 0
    emulator.throttle_next = 100
    with pytest.raises(KmsUnavailable) as failure:
        await signer.sign_digest(keccak256(b"y"))
    text = f"{failure.value} {signer!r} {info.ref}"
    assert emulator.tokens and not any(t in text for t in emulator.tokens)
    assert emulator.identity_header not in text
