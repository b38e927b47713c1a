"""Azure Key Vault and Google Cloud KMS keys behind the proxy: eth_sendTransaction from each,
signed through the official clients against the emulators, mined on real anvil, and the
raw transaction recovers to the key's address."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from signer_proxy.dev.azure_kv_emulator import AzureKeyVaultEmulator
from signer_proxy.dev.gcp_kms_emulator import GcpKmsEmulator, emulator_client
from signer_proxy.keys.azure_kv import AzureKvSigner, AzureVault, parse_azure_key
from signer_proxy.keys.gcp_kms import GcpKms, GcpKmsSigner, parse_gcp_key
from tests.conftest import Anvil, ProxyFactory, proxy_settings
from tests.integration.test_transactions import SINK, mined, send

pytestmark = pytest.mark.integration


async def test_cloud_keys_send_transactions_mined_on_anvil(
    start_proxy: ProxyFactory, anvil: Anvil, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import google.auth
    from azure.identity.aio import ManagedIdentityCredential

    azure, gcp = AzureKeyVaultEmulator(), GcpKmsEmulator()
    await azure.start()
    await gcp.start()
    closers: list[Any] = [azure.stop, gcp.stop]
    try:
        for name, value in azure.credential_env().items():
            monkeypatch.setenv(name, value)
        credential = ManagedIdentityCredential()
        vault = AzureVault(
            azure.vault_url, credential, connection_verify=azure.ca_file,
            verify_challenge_resource=False,
        )  # fmt: skip
        closers[:0] = [vault.aclose, credential.close]
        azure.create_key("treasury")
        host = azure.vault_url.removeprefix("https://")
        az = AzureKvSigner(
            vault, await vault.load(parse_azure_key(f"azurekv://{host}/keys/treasury"))
        )

        adc = tmp_path / "adc.json"
        adc.write_text(json.dumps(gcp.adc()))
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(adc))
        creds, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloudkms"])
        kms = GcpKms(emulator_client(gcp.target, creds.with_token_uri(gcp.token_uri)))
        closers[:0] = [kms.aclose]
        version = gcp.create_key("treasury")
        gc = GcpKmsSigner(kms, await kms.load(parse_gcp_key("gcpkms://" + version.name)))

        for signer in (az, gc):
            anvil.fund(signer.address)
        proxy = await start_proxy(proxy_settings(anvil.url, "http://127.0.0.1:9"), signers=[az, gc])
        assert {a.lower() for a in await proxy.result("eth_accounts")} == {
            az.address.lower(),
            gc.address.lower(),
        }
        for signer in (az, gc):
            for value in ("0x1", "0x2"):  # two in a row: consecutive nonces
                tx_hash = await send(proxy, {"from": signer.address, "to": SINK, "value": value})
                mined(anvil, tx_hash, signer.address)
        assert azure.sign_calls == 2 and gcp.sign_calls == 2
    finally:
        for close in closers:
            await close()


async def test_kms_key_names_cloud_keys_by_scheme_at_startup(
    start_proxy: ProxyFactory, anvil: Anvil, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The configuration path: --kms-key azurekv://… gcpkms://… loaded at startup with the
    default credential chains (Azure managed identity, a Google service-account ADC file)."""
    azure, gcp = AzureKeyVaultEmulator(), GcpKmsEmulator()
    await azure.start()
    await gcp.start()
    try:
        for name, value in azure.credential_env().items():
            monkeypatch.setenv(name, value)
        adc = tmp_path / "sa.json"
        adc.write_text(json.dumps(gcp.service_account_adc()))
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(adc))
        az_key = azure.create_key("hot")
        version = gcp.create_key("hot")
        host = azure.vault_url.removeprefix("https://")
        settings = proxy_settings(
            anvil.url,
            "http://127.0.0.1:9",
            f"azurekv://{host}/keys/hot",
            "gcpkms://" + version.name,
            azure_ca_file=azure.ca_file,
            gcp_kms_endpoint=gcp.target,
        )
        from signer_proxy.eth.ecdsa import address_from_public_key

        addresses = [
            address_from_public_key(azure.public_key(az_key)),
            address_from_public_key(gcp.public_key(version)),
        ]
        for address in addresses:
            anvil.fund(address)
        proxy = await start_proxy(settings)
        accounts = {a.lower() for a in await proxy.result("eth_accounts")}
        assert accounts == {a.lower() for a in addresses}
        for address in addresses:
            mined(anvil, await send(proxy, {"from": address, "to": SINK, "value": "0x1"}), address)
        assert azure.sign_calls == 1 and gcp.sign_calls == 1
        assert gcp.tokens  # the service-account JWT grant ran against the emulator
    finally:
        await azure.stop()
        await gcp.stop()


async def cli(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    """`signer-proxy ARGS` as a subprocess, awaited (the emulators serve from this loop)."""
    import asyncio
    import os
    import sys

    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "signer_proxy", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **env},
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, out.decode(), err.decode()


async def test_keys_list_and_verify_cli_with_cloud_keys(tmp_path: Path) -> None:
    azure, gcp = AzureKeyVaultEmulator(), GcpKmsEmulator()
    await azure.start()
    await gcp.start()
    try:
        adc = tmp_path / "sa.json"
        adc.write_text(json.dumps(gcp.service_account_adc()))
        env = {
            **azure.credential_env(),
            "GOOGLE_APPLICATION_CREDENTIALS": str(adc),
            "SIGNER_PROXY_AZURE_CA_FILE": azure.ca_file,
            "SIGNER_PROXY_GCP_KMS_ENDPOINT": gcp.target,
        }
        azure.create_key("good")
        azure.create_key("p256", curve="P-256", kty="EC")
        version = gcp.create_key("good")
        host = azure.vault_url.removeprefix("https://")
        refs = [
            f"azurekv://{host}/keys/good",
            f"azurekv://{host}/keys/p256",
            "gcpkms://" + version.name,
        ]
        code, out, err = await cli("keys", "verify", *refs, "--json", env=env)
        assert code != 0, (out, err)  # the P-256 key fails
        verdicts = {k["key"]: k["ok"] for k in json.loads(out)["keys"]}
        assert verdicts == {refs[0]: True, refs[1]: False, refs[2]: True}
        assert azure.sign_calls == 1 and gcp.sign_calls == 1  # one test signature each
        flags = [f"--kms-key={refs[0]}", f"--kms-key={refs[2]}"]
        code, out, err = await cli("keys", "list", *flags, "--json", env=env)
        assert code == 0, (out, err)
        from signer_proxy.eth.ecdsa import address_from_public_key

        listed = json.dumps(json.loads(out))
        assert address_from_public_key(gcp.public_key(version)) in listed
        # `address` of each (issue 16, item 3): the address and the key's full name.
        az_address = address_from_public_key(azure.public_key(azure.keys["good"][0]))
        code, out, err = await cli("address", refs[0], env=env)
        assert code == 0, err
        assert out.split() == [az_address, f"{azure.vault_url}/keys/good/"
                               f"{azure.keys['good'][0].version}"]  # fmt: skip
        code, out, err = await cli("address", refs[2], env=env)
        assert code == 0, err
        assert out.split() == [address_from_public_key(gcp.public_key(version)), version.name]
        code, out, err = await cli("address", refs[1], env=env)  # a P-256 key has no address
        assert code == 1 and "must be EC or EC-HSM on curve P-256K" in err, err
        for secret in [*azure.tokens, *gcp.tokens, azure.identity_header]:
            assert secret not in out + err
    finally:
        await azure.stop()
        await gcp.stop()


def test_signing_metrics_name_the_cloud_backend() -> None:
    from signer_proxy.ops.metrics import signer_backend

    assert signer_backend(AzureKvSigner.__new__(AzureKvSigner)) == "azure_kv"
    assert signer_backend(GcpKmsSigner.__new__(GcpKmsSigner)) == "gcp_kms"


async def test_cloud_signers_share_the_kms_request_slots(tmp_path: Path) -> None:
    """Given the process's KmsCalls, a cloud signature waits for a request slot like a KMS
    one, and fails as unavailable when none frees up before the request deadline."""
    from google.oauth2 import service_account

    from signer_proxy.deadline import deadline_scope
    from signer_proxy.errors import KmsUnavailable
    from signer_proxy.eth.ecdsa import keccak256
    from signer_proxy.keys.aws_kms import KmsCalls
    from signer_proxy.keys.signer import sign_checked

    gcp = GcpKmsEmulator()
    await gcp.start()
    creds = service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
        gcp.service_account_adc(), scopes=["https://www.googleapis.com/auth/cloudkms"]
    )
    kms = GcpKms(emulator_client(gcp.target, creds))
    try:
        version = gcp.create_key("slots")
        calls = KmsCalls(max_in_flight=1)
        signer = GcpKmsSigner(kms, await kms.load(parse_gcp_key("gcpkms://" + version.name)), calls)
        await sign_checked(signer, keccak256(b"a free slot"))
        await calls._slots.acquire()  # another request holds the only slot
        with deadline_scope(0.2), pytest.raises(KmsUnavailable, match="slots stayed busy"):
            await signer.sign_digest(keccak256(b"no slot"))
        calls._slots.release()
        await sign_checked(signer, keccak256(b"free again"))
        assert gcp.sign_calls == 2
    finally:
        await kms.aclose()
        await gcp.stop()
