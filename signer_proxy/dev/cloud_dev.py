"""`signer-proxy dev --backend azure|gcp`: the keys live in the local Azure Key Vault or Cloud
KMS emulator instead of the AWS one, and the proxy reaches them as a deployment would (the
official clients, azure-identity's managed identity / a Google service-account ADC file)."""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

from signer_proxy.eth.ecdsa import address_from_public_key

BACKENDS = ("aws", "azure", "gcp")


@dataclass(frozen=True)
class CloudDevKeys:
    refs: tuple[str, ...]  # --key values (azurekv://…, gcpkms://…)
    addresses: tuple[str, ...]
    settings: dict[str, Any]  # Settings overrides (azure_ca_file / gcp_kms_endpoint)
    url: str  # where the emulator listens, for the banner
    name: str = ""  # the backend, for the banner


async def start_cloud_keys(backend: str, count: int, stack: AsyncExitStack) -> CloudDevKeys:
    """Start `backend`'s emulator with `count` keys (stopped by `stack`); point this process's
    credential chain at it."""
    if backend == "azure":
        from signer_proxy.dev.azure_kv_emulator import AzureKeyVaultEmulator

        azure = AzureKeyVaultEmulator()
        await azure.start()
        stack.push_async_callback(azure.stop)
        os.environ.update(azure.credential_env())
        keys = [azure.create_key(f"dev-{i}") for i in range(count)]
        host = azure.vault_url.removeprefix("https://")
        return CloudDevKeys(
            tuple(f"azurekv://{host}/keys/{key.name}" for key in keys),
            tuple(address_from_public_key(azure.public_key(key)) for key in keys),
            {"azure_ca_file": azure.ca_file},
            azure.vault_url,
            "the Azure Key Vault emulator",
        )
    from signer_proxy.dev.gcp_kms_emulator import GcpKmsEmulator

    gcp = GcpKmsEmulator()
    await gcp.start()
    stack.push_async_callback(gcp.stop)
    directory = tempfile.TemporaryDirectory(prefix="signer-proxy-dev-gcp-")
    stack.callback(directory.cleanup)
    adc = os.path.join(directory.name, "service-account.json")
    descriptor = os.open(adc, os.O_WRONLY | os.O_CREAT, 0o600)  # the key stays private
    os.write(descriptor, json.dumps(gcp.service_account_adc()).encode())
    os.close(descriptor)
    os.environ["GOOGLE_APPLICATION_CREDENTIALS"] = adc
    versions = [gcp.create_key(f"dev-{i}") for i in range(count)]
    return CloudDevKeys(
        tuple("gcpkms://" + version.name for version in versions),
        tuple(address_from_public_key(gcp.public_key(version)) for version in versions),
        {"gcp_kms_endpoint": gcp.target},
        gcp.target,
        "the Google Cloud KMS emulator",
    )
