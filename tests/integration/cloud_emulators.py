"""The Azure Key Vault and Google Cloud KMS emulators started together, with the credential
environment a process needs to reach them (Azure managed identity, a Google service-account
ADC file) and the settings that trust them."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from signer_proxy.dev.azure_kv_emulator import AzureKeyVaultEmulator
from signer_proxy.dev.gcp_kms_emulator import GcpKmsEmulator


@dataclass
class CloudEmulators:
    azure: AzureKeyVaultEmulator
    gcp: GcpKmsEmulator
    env: dict[str, str]  # credentials: for a subprocess, or this process (monkeypatch)

    @property
    def vault_host(self) -> str:
        return self.azure.vault_url.removeprefix("https://")

    @property
    def settings(self) -> dict[str, str]:
        """Settings fields that trust the emulators."""
        return {"azure_ca_file": self.azure.ca_file, "gcp_kms_endpoint": self.gcp.target}

    @property
    def settings_env(self) -> dict[str, str]:
        """`env` plus the same settings as SIGNER_PROXY_* variables, for the CLI."""
        return {
            **self.env,
            "SIGNER_PROXY_AZURE_CA_FILE": self.azure.ca_file,
            "SIGNER_PROXY_GCP_KMS_ENDPOINT": self.gcp.target,
        }


@asynccontextmanager
async def cloud_emulators(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch | None = None
) -> AsyncIterator[CloudEmulators]:
    """Both emulators, stopped at the end; with `monkeypatch`, this process's credential
    environment points at them too."""
    azure, gcp = AzureKeyVaultEmulator(), GcpKmsEmulator()
    await azure.start()
    await gcp.start()
    try:
        adc = tmp_path / "gcp-service-account.json"
        adc.write_text(json.dumps(gcp.service_account_adc()))
        env = {**azure.credential_env(), "GOOGLE_APPLICATION_CREDENTIALS": str(adc)}
        if monkeypatch is not None:
            for name, value in env.items():
                monkeypatch.setenv(name, value)
        yield CloudEmulators(azure, gcp, env)
    finally:
        await azure.stop()
        await gcp.stop()
