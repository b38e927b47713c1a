"""Azure Key Vault and Google Cloud KMS keys named in --kms-key by their scheme.

`azurekv://VAULT/keys/NAME[/VERSION]` (keys/azure_kv.py) and `gcpkms://projects/…/
cryptoKeyVersions/N` (keys/gcp_kms.py) ride along the AWS KMS keys of --kms-key; the loader
hands them here (`is_cloud_ref` / `load_cloud_key`). The clients live as long as the
KmsClients of the load (one DefaultAzureCredential, one client per vault, one Cloud KMS
client) and close with it.

Emulators: an Azure vault's certificate may be trusted through --azure-ca-file; one on
127.0.0.1, being loopback, skips azure's check that
the challenge's resource is a parent domain of the vault (an IP address has none); a Cloud KMS
endpoint (--gcp-kms-endpoint) must be 127.0.0.1:PORT and is reached with gRPC local
credentials. Real services keep every check.
"""

from __future__ import annotations

import weakref
from typing import Any

from signer_proxy.errors import ConfigError, KeyLoadFailed
from signer_proxy.keys.azure_kv import SCHEME as AZURE_SCHEME
from signer_proxy.keys.azure_kv import AzureKvSigner, AzureVault, parse_azure_key
from signer_proxy.keys.gcp_kms import SCHEME as GCP_SCHEME
from signer_proxy.keys.gcp_kms import GcpKms, GcpKmsSigner, parse_gcp_key
from signer_proxy.keys.signer import Signer

CLOUD_SCHEMES = (AZURE_SCHEME, GCP_SCHEME)


def is_cloud_ref(ref: str) -> bool:
    return ref.startswith(CLOUD_SCHEMES)


def gcp_client(endpoint: str) -> Any:
    """The official Cloud KMS async client with ADC; at `endpoint` (loopback only) if given."""
    from google.cloud import kms_v1

    if not endpoint:
        return kms_v1.KeyManagementServiceAsyncClient()
    host, _, port = endpoint.rpartition(":")
    if host != "127.0.0.1" or not port.isdigit():
        raise ConfigError(
            f"--gcp-kms-endpoint {endpoint!r} must be 127.0.0.1:PORT (an emulator); leave it "
            "empty for Cloud KMS"
        )
    import google.auth

    from signer_proxy.dev.gcp_kms_emulator import emulator_client

    credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloudkms"])
    return emulator_client(endpoint, credentials)


class CloudClients:
    """The Azure and Google clients of one KmsClients; `aclose` closes them all."""

    def __init__(
        self, gcp_endpoint: str = "", azure_ca_file: str = "", attempts: int = 4,
        backoff: float = 0.05,
    ) -> None:  # fmt: skip
        self._gcp_endpoint = gcp_endpoint
        self._azure_ca_file = azure_ca_file
        self._attempts, self._backoff = attempts, backoff
        self._credential: Any = None
        self._vaults: dict[str, AzureVault] = {}
        self._gcp: GcpKms | None = None

    def vault(self, vault_url: str) -> AzureVault:
        vault = self._vaults.get(vault_url)
        if vault is None:
            if self._credential is None:
                from azure.identity.aio import DefaultAzureCredential

                self._credential = DefaultAzureCredential()
            loopback = vault_url.startswith("https://127.0.0.1:")
            options: dict[str, Any] = {"verify_challenge_resource": False} if loopback else {}
            if self._azure_ca_file:
                options["connection_verify"] = self._azure_ca_file
            vault = AzureVault(vault_url, self._credential, **options)
            self._vaults[vault_url] = vault
        return vault

    def gcp(self) -> GcpKms:
        if self._gcp is None:
            self._gcp = GcpKms(
                gcp_client(self._gcp_endpoint), attempts=self._attempts, backoff=self._backoff
            )
        return self._gcp

    async def load(self, ref: str, calls: Any = None) -> Signer:
        """The signer of one azurekv:// or gcpkms:// key; KeyLoadFailed when it cannot sign."""
        try:
            if ref.startswith(AZURE_SCHEME):
                spec = parse_azure_key(ref)
                vault = self.vault(spec.vault_url)
                return AzureKvSigner(vault, await vault.load(spec), calls)
            gcp_spec = parse_gcp_key(ref)
            kms = self.gcp()
            return GcpKmsSigner(kms, await kms.load(gcp_spec), calls)
        except KeyLoadFailed:
            raise
        except ConfigError as exc:
            raise KeyLoadFailed(str(exc), "invalid") from None

    async def aclose(self) -> None:
        for vault in self._vaults.values():
            await vault.aclose()
        self._vaults.clear()
        if self._credential is not None:
            await self._credential.close()
            self._credential = None
        if self._gcp is not None:
            await self._gcp.aclose()
            self._gcp = None


_BY_KMS_CLIENTS: weakref.WeakKeyDictionary[Any, CloudClients] = weakref.WeakKeyDictionary()


def cloud_clients(kms_clients: Any) -> CloudClients:
    """The CloudClients that live and close with `kms_clients` (keys/aws_clients.KmsClients)."""
    cloud = _BY_KMS_CLIENTS.get(kms_clients)
    if cloud is None:
        settings = getattr(kms_clients, "_settings", None)
        cloud = CloudClients(
            str(getattr(settings, "gcp_kms_endpoint", "") or ""),
            str(getattr(settings, "azure_ca_file", "") or ""),
            backoff=float(getattr(settings, "kms_backoff_base", 0.05)),
        )
        _BY_KMS_CLIENTS[kms_clients] = cloud
        stack = getattr(kms_clients, "_stack", None)
        if stack is not None:
            stack.push_async_callback(cloud.aclose)
    return cloud


async def load_cloud_key(ref: str, kms_clients: Any) -> Signer:
    """Load `ref` (is_cloud_ref) with the clients of this load; KeyLoadFailed on failure."""
    return await cloud_clients(kms_clients).load(ref, getattr(kms_clients, "calls", None))


async def verify_cloud_key(ref: str, kms_clients: Any) -> Any:
    """`keys verify` for one azurekv:// or gcpkms:// key: it loads (reachable, right curve and
    algorithm, enabled) and a test signature recovers to its address (keys/verify.KeyReport)."""
    from signer_proxy.keys.verify import Check, KeyReport, signature_check

    source = "azure" if ref.startswith(AZURE_SCHEME) else "gcp"
    try:
        signer = await load_cloud_key(ref, kms_clients)
    except KeyLoadFailed as exc:
        report = KeyReport(ref, source)
        report.checks.append(Check("load", False, str(exc), "fix what the message names"))
        return report
    report = KeyReport(ref, source, "", signer.key_name, signer.address)
    report.checks.append(Check("load", True, "found, enabled, secp256k1 signing key"))
    report.checks.append(await signature_check(signer))
    return report
