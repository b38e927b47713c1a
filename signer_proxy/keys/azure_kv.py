"""Azure Key Vault (and Managed HSM) keys: EC / EC-HSM keys on curve P-256K, signing ES256K.

Source: `azurekv://VAULT/keys/NAME[/VERSION]`. VAULT is a vault name (`myvault` →
https://myvault.vault.azure.net), or a host (`myhsm.managedhsm.azure.net`, `127.0.0.1:8443`
for the emulator). Without a version the key's current version is resolved once at load, so
every signature of one load comes from one key version (one address).

The calls go through the official async clients (`azure.keyvault.keys.aio.KeyClient`,
`azure.keyvault.keys.crypto.aio.CryptographyClient`) with `DefaultAzureCredential`
(environment, workload identity, managed identity). azure-core's retry policy honours 429
and 503 with Retry-After; the signature Key Vault returns is raw r ‖ s (64 bytes) with no
recovery id and no low-S guarantee, so it is normalised and its parity found by trial
recovery against the key's public key, as for AWS KMS: a signature that does not recover to
the key's address is never returned.

Discovery (`--azure-vault VAULT`, `--azure-tag K=V`): every enabled key of the vault whose
tags include all the filters is loaded; keys that are not P-256K signing keys are passed over.
Re-run on every reload.

Least privilege: the identity needs keys/get and keys/sign (RBAC: "Key Vault Crypto User",
or a custom role with Microsoft.KeyVault/vaults/keys/read and .../keys/sign/action), plus
keys/list for discovery.

Emulators: a vault's certificate may be trusted through --azure-ca-file; a vault on
127.0.0.1, being loopback, skips azure-keyvault's check that the challenge's resource is a
parent domain of the vault (an IP address has none). Real vaults keep every check.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from signer_proxy.errors import ConfigError, KeyLoadFailed, KmsUnavailable, SigningFailed
from signer_proxy.eth.ecdsa import (
    Signature,
    SignatureError,
    address_from_public_key,
    raw_signature,
)
from signer_proxy.keys.aws_kms import once_in_slot
from signer_proxy.keys.backends import LoadContext, LoadedKey, describe_filter, parse_filter
from signer_proxy.keys.signer import BackendSigner

if TYPE_CHECKING:
    from signer_proxy.config import Settings
    from signer_proxy.keys.signer import Signer

log = logging.getLogger(__name__)

SCHEME = "azurekv://"
REQUIRED_CURVE = "P-256K"
ALGORITHM = "ES256K"
PERMISSIONS = "keys/get and keys/sign (role Key Vault Crypto User)"

_NAME = re.compile(r"^[0-9A-Za-z-]{1,127}$")
_VERSION = re.compile(r"^[0-9A-Za-z]{1,64}$")
_VAULT_NAME = re.compile(r"^[A-Za-z][0-9A-Za-z-]{1,22}[0-9A-Za-z]$")
_HOST = re.compile(r"^[0-9A-Za-z.-]+(:\d{1,5})?$")


@dataclass(frozen=True, slots=True)
class AzureKeySpec:
    """One `azurekv://` source: the vault URL, the key name and (optionally) its version."""

    vault_url: str
    name: str
    version: str = ""

    @property
    def label(self) -> str:
        host = self.vault_url.removeprefix("https://")
        return f"{SCHEME}{host}/keys/{self.name}" + (f"/{self.version}" if self.version else "")


def parse_azure_key(text: str) -> AzureKeySpec:
    """`azurekv://VAULT/keys/NAME[/VERSION]` as an AzureKeySpec; ConfigError naming it."""
    example = (
        "e.g. azurekv://myvault/keys/signer or azurekv://myhsm.managedhsm.azure.net/keys/k/VERSION"
    )
    if not text.startswith(SCHEME):
        raise ConfigError(f"{text!r} is not an Azure Key Vault key: {example}")
    parts = text[len(SCHEME) :].split("/")
    if len(parts) not in (3, 4) or parts[1] != "keys":
        raise ConfigError(f"{text!r} must be azurekv://VAULT/keys/NAME[/VERSION], {example}")
    vault, name = parts[0], parts[2]
    version = parts[3] if len(parts) == 4 else ""
    vault_url = parse_vault(vault, repr(text))
    if not _NAME.match(name):
        raise ConfigError(f"{text!r}: key name {name!r} must be 1-127 letters, digits or -")
    if version and not _VERSION.match(version):
        raise ConfigError(f"{text!r}: key version {version!r} must be letters and digits")
    return AzureKeySpec(vault_url, name, version)


def parse_vault(vault: str, what: str) -> str:
    """A vault name (`myvault`), host (`myhsm.managedhsm.azure.net`, `127.0.0.1:8443`) or
    `azurekv://` either, as its https URL; ConfigError naming `what`."""
    vault = vault.removeprefix(SCHEME).rstrip("/")
    if "." in vault or ":" in vault:
        if not _HOST.match(vault):
            raise ConfigError(f"{what}: {vault!r} is not a host name")
        return f"https://{vault}"
    if _VAULT_NAME.match(vault):
        return f"https://{vault}.vault.azure.net"
    raise ConfigError(f"{what}: {vault!r} is not a vault name (3-24 letters, digits, -)")


def _text(value: object) -> str:
    """An azure enum member's wire value (str() of one is its qualified name), or the str."""
    return str(getattr(value, "value", value) or "")


def public_key_from_jwk(jwk: Any, label: str) -> bytes:
    """Uncompressed secp256k1 key from a Key Vault JsonWebKey; KeyLoadFailed when not P-256K."""
    kty, crv = _text(getattr(jwk, "kty", "")), _text(getattr(jwk, "crv", ""))
    if kty not in ("EC", "EC-HSM") or crv != REQUIRED_CURVE:
        raise KeyLoadFailed(
            f"Azure key {label} is {kty or '?'} {crv or ''}".rstrip()
            + f": it must be EC or EC-HSM on curve {REQUIRED_CURVE} (create it with "
            f"--kty EC-HSM --curve {REQUIRED_CURVE})",
            "spec",
        )
    ops = getattr(jwk, "key_ops", None)
    if ops is not None and "sign" not in [_text(o) for o in ops]:
        raise KeyLoadFailed(f"Azure key {label} does not permit the sign operation", "spec")
    x, y = bytes(jwk.x or b""), bytes(jwk.y or b"")
    if len(x) != 32 or len(y) != 32:
        raise KeyLoadFailed(f"Azure key {label} has a malformed public key", "invalid")
    public_key = b"\x04" + x + y
    try:
        address_from_public_key(public_key)
        import coincurve

        coincurve.PublicKey(public_key)
    except (SignatureError, ValueError) as exc:
        raise KeyLoadFailed(
            f"Azure key {label}: public key is not on secp256k1", "invalid"
        ) from exc
    return public_key


def _load_failure(exc: BaseException, label: str) -> KeyLoadFailed:
    from azure.core.exceptions import (
        ClientAuthenticationError,
        HttpResponseError,
        ResourceNotFoundError,
        ServiceRequestError,
    )

    if isinstance(exc, ResourceNotFoundError):
        return KeyLoadFailed(
            f"Azure key {label} was not found: check the vault and key name", "not_found"
        )
    if isinstance(exc, ClientAuthenticationError):
        return KeyLoadFailed(
            f"Azure key {label}: authentication failed ({type(exc).__name__}): "
            "check the managed/workload identity or AZURE_* environment",
            "access_denied",
        )
    if isinstance(exc, HttpResponseError):
        status = exc.status_code or 0
        if status == 403:
            return KeyLoadFailed(
                f"Azure key {label}: access denied: the identity needs {PERMISSIONS}",
                "access_denied",
            )
        transient = status == 429 or status >= 500
        return KeyLoadFailed(
            f"Azure key {label}: Key Vault answered HTTP {status}",
            "unreachable" if transient else "other",
            transient=transient,
        )
    if isinstance(exc, ServiceRequestError | OSError | TimeoutError):
        return KeyLoadFailed(
            f"Azure key {label}: Key Vault is unreachable ({type(exc).__name__})",
            "unreachable",
            transient=True,
        )
    return KeyLoadFailed(f"Azure key {label}: {type(exc).__name__}", "other")


@dataclass(frozen=True, slots=True)
class AzureKeyInfo:
    """A loaded key: its label, full key id (with version), public key and address."""

    ref: str
    key_id: str
    public_key: bytes
    address: str
    tags: Mapping[str, str]

    @property
    def key_name(self) -> str:
        return self.key_id


class AzureVault:
    """The clients of one vault, shared by its keys: `aclose` when done.

    `credential` is an azure-core AsyncTokenCredential (DefaultAzureCredential by default);
    `client_options` go to the azure clients (`connection_verify`, retry settings...)."""

    def __init__(self, vault_url: str, credential: Any = None, **client_options: Any) -> None:
        from azure.keyvault.keys.aio import KeyClient

        if credential is None:
            from azure.identity.aio import DefaultAzureCredential

            credential = DefaultAzureCredential()
            self._own_credential = True
        else:
            self._own_credential = False
        self.vault_url = vault_url
        self.credential = credential
        self.options = {"retry_total": 4, "retry_backoff_factor": 0.2, **client_options}
        self.keys = KeyClient(vault_url, credential, **self.options)
        self._crypto: dict[str, Any] = {}

    def crypto(self, key_id: str) -> Any:
        client = self._crypto.get(key_id)
        if client is None:
            from azure.keyvault.keys.crypto.aio import CryptographyClient

            client = CryptographyClient(key_id, self.credential, **self.options)
            self._crypto[key_id] = client
        return client

    async def load(self, spec: AzureKeySpec) -> AzureKeyInfo:
        """Fetch, check and identify one key; KeyLoadFailed says what is wrong."""
        label = spec.label
        try:
            key = await self.keys.get_key(spec.name, spec.version or None)
        except Exception as exc:  # the azure-core error family, mapped to a reason
            log.debug("get_key failed", exc_info=True)
            raise _load_failure(exc, label) from None
        if key.properties.enabled is False:
            raise KeyLoadFailed(f"Azure key {label} is disabled: enable it or remove it", "state")
        public_key = public_key_from_jwk(key.key, label)
        return AzureKeyInfo(
            label, str(key.id), public_key, address_from_public_key(public_key),
            dict(key.properties.tags or {}),
        )  # fmt: skip

    async def discover(
        self, tags: Mapping[str, str]
    ) -> list[tuple[AzureKeyInfo | None, str, KeyLoadFailed | None]]:
        """Every enabled key of the vault whose tags include all of `tags`, loaded.

        Returns (info, label, failure) per matching key; KeyLoadFailed when listing fails."""
        matching: list[str] = []
        try:
            async for props in self.keys.list_properties_of_keys():
                have = props.tags or {}
                if props.enabled is not False and all(have.get(k) == v for k, v in tags.items()):
                    matching.append(str(props.name))
        except Exception as exc:
            failure = _load_failure(exc, f"{SCHEME}{self.vault_url.removeprefix('https://')}")
            raise KeyLoadFailed(
                f"listing keys failed: {failure}", "listing", transient=failure.transient
            ) from None

        async def one(name: str) -> tuple[AzureKeyInfo | None, str, KeyLoadFailed | None]:
            spec = AzureKeySpec(self.vault_url, name)
            try:
                return await self.load(spec), spec.label, None
            except KeyLoadFailed as exc:
                return None, spec.label, exc

        return list(await asyncio.gather(*(one(n) for n in sorted(matching))))

    async def aclose(self) -> None:
        for client in self._crypto.values():
            await client.close()
        await self.keys.close()
        if self._own_credential:
            await self.credential.close()


class AzureKvSigner(BackendSigner[AzureKeyInfo]):
    """Signs with one Key Vault key version (ES256K); every signature proven before return."""

    backend = "azure_kv"

    def __init__(self, vault: AzureVault, info: AzureKeyInfo, calls: Any = None) -> None:
        self._vault = vault
        self.info = info
        # keys/aws_kms.KmsCalls: the process-wide cap on key-service requests in flight, the
        # attempt timeout and the request deadline (azure-core does the retries).
        self._calls = calls

    async def sign_digest(self, digest: bytes) -> Signature:
        from azure.core.exceptions import HttpResponseError, ServiceRequestError
        from azure.keyvault.keys.crypto import SignatureAlgorithm

        if len(digest) != 32:
            raise SigningFailed("the digest to sign must be 32 bytes")
        client = self._vault.crypto(self.info.key_id)

        async def request() -> Any:
            return await client.sign(SignatureAlgorithm.es256_k, digest)

        try:
            result = await once_in_slot(self._calls, self.info.ref, request)
        except HttpResponseError as exc:
            status = exc.status_code or 0
            if status == 429 or status >= 500:
                raise KmsUnavailable(
                    f"Azure Key Vault is unavailable for {self.info.ref} (HTTP {status}) "
                    "after retries; retry later"
                ) from None
            raise SigningFailed(
                f"Azure Key Vault refused to sign with {self.info.ref} (HTTP {status}): "
                f"the identity needs {PERMISSIONS}"
            ) from None
        except (ServiceRequestError, OSError, TimeoutError) as exc:
            raise KmsUnavailable(
                f"Azure Key Vault is unreachable for {self.info.ref} ({type(exc).__name__})"
            ) from None
        try:
            return raw_signature(bytes(result.signature), digest, self.info.public_key)
        except SignatureError as exc:
            raise SigningFailed(
                f"the signature from {self.info.ref} is not usable ({exc}); nothing was sent"
            ) from None


# --- the backend source (keys/backends.py) -------------------------------------------------


class AzureVaults:
    """The process's vault clients, sharing one DefaultAzureCredential (a LoadContext's
    `shared` object: kept across reloads, closed at the end)."""

    def __init__(self, ca_file: str = "") -> None:
        self._ca_file = ca_file
        self._credential: Any = None
        self._vaults: dict[str, AzureVault] = {}

    def vault(self, vault_url: str) -> AzureVault:
        vault = self._vaults.get(vault_url)
        if vault is None:
            if self._credential is None:
                from azure.identity.aio import DefaultAzureCredential

                self._credential = DefaultAzureCredential()
            loopback = vault_url.startswith("https://127.0.0.1:")
            options: dict[str, Any] = {"verify_challenge_resource": False} if loopback else {}
            if self._ca_file:
                options["connection_verify"] = self._ca_file
            vault = self._vaults[vault_url] = AzureVault(vault_url, self._credential, **options)
        return vault

    async def aclose(self) -> None:
        for vault in self._vaults.values():
            await vault.aclose()
        self._vaults.clear()
        if self._credential is not None:
            await self._credential.close()
            self._credential = None


def _vault(context: LoadContext, ca_file: str, vault_url: str) -> AzureVault:
    return context.shared(("azure", ca_file), lambda: AzureVaults(ca_file)).vault(vault_url)


def _signer(before: Signer | None, vault: AzureVault, info: AzureKeyInfo, calls: Any) -> Signer:
    """The previous load's signer when it is the same key version, else a new one."""
    if isinstance(before, AzureKvSigner) and before.info == info:
        return before
    return AzureKvSigner(vault, info, calls)


class AzureKeySource:
    """One `azurekv://VAULT/keys/NAME[/VERSION]` key."""

    def __init__(self, spec: AzureKeySpec, ca_file: str = "") -> None:
        self.spec = spec
        self._ca_file = ca_file

    @property
    def label(self) -> str:
        return self.spec.label

    async def load(self, previous: Mapping[str, Signer], context: LoadContext) -> list[LoadedKey]:
        host = self.spec.vault_url.removeprefix("https://")
        vault = _vault(context, self._ca_file, self.spec.vault_url)
        try:
            info = await vault.load(self.spec)
        except KeyLoadFailed as exc:
            return [LoadedKey(self.label, location=host, failure=exc)]
        signer = _signer(previous.get(self.label), vault, info, context.calls)
        return [LoadedKey(self.label, info.key_id, host, signer)]


class AzureDiscoverySource:
    """Every enabled P-256K key of one vault whose tags include all of `tags`."""

    def __init__(
        self, vault_url: str, tags: tuple[tuple[str, str], ...], ca_file: str = ""
    ) -> None:
        self.vault_url = vault_url
        self.tags = tags
        self._ca_file = ca_file

    @property
    def label(self) -> str:
        host = self.vault_url.removeprefix("https://")
        return f"{SCHEME}{host} ({describe_filter(self.tags, 'tags')})"

    async def load(self, previous: Mapping[str, Signer], context: LoadContext) -> list[LoadedKey]:
        host = self.vault_url.removeprefix("https://")
        vault = _vault(context, self._ca_file, self.vault_url)
        keys: list[LoadedKey] = []
        for info, label, failure in await vault.discover(dict(self.tags)):
            if info is not None:
                signer = _signer(previous.get(label), vault, info, context.calls)
                keys.append(LoadedKey(label, info.key_id, host, signer, required=False))
            elif failure is not None and failure.reason != "spec":  # not a signing key: pass
                keys.append(LoadedKey(label, location=host, failure=failure, required=False))
        return keys


def parse_source(text: str, settings: Settings | None) -> AzureKeySource:
    """The backends.BACKENDS entry point: one `azurekv://` key."""
    return AzureKeySource(parse_azure_key(text), settings.azure_ca_file if settings else "")


def discovery_sources(settings: Settings) -> list[AzureDiscoverySource]:
    """One source per --azure-vault, each selecting by every --azure-tag."""
    tags = parse_filter(settings.azure_discover_tags, "--azure-tag")
    return [
        AzureDiscoverySource(parse_vault(vault, f"--azure-vault {vault!r}"), tags,
                             settings.azure_ca_file)
        for vault in settings.azure_discover_vaults
    ]  # fmt: skip
