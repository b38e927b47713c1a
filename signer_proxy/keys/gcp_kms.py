"""Google Cloud KMS keys: key versions with algorithm EC_SIGN_SECP256K1_SHA256.

Source: `gcpkms://projects/P/locations/L/keyRings/R/cryptoKeys/K/cryptoKeyVersions/N`; a key
version, since an asymmetric Cloud KMS key has no primary version (each version is its own
key pair, so its own address).

The calls go through the official async client (`google.cloud.kms_v1`'s
KeyManagementServiceAsyncClient, gRPC) with Application Default Credentials (workload
identity, the metadata server, GOOGLE_APPLICATION_CREDENTIALS). As Google asks, every
request carries the CRC32C of what it sends (`digest_crc32c`) and every answer's checksums are
checked (`verified_digest_crc32c`, `signature_crc32c`, `pem_crc32c`, and the version name):
an answer that fails them is never used. The DER signature is normalised to low-S and its
parity found by trial recovery, as for AWS KMS.

Discovery (`--gcp-key-ring projects/P/locations/L/keyRings/R`, `--gcp-label K=V`): every
enabled version of the ring's EC_SIGN_SECP256K1_SHA256 keys whose labels include all the
filters. Re-run on every reload.

Emulators: an endpoint override (--gcp-kms-endpoint) must be 127.0.0.1:PORT and is reached
with gRPC local credentials; Cloud KMS itself keeps every check.

Least privilege: roles/cloudkms.signerVerifier (cloudkms.cryptoKeyVersions.useToSign,
.viewPublicKey) on the key or key ring, plus roles/cloudkms.viewer on the key ring for
discovery (cryptoKeys.list, cryptoKeyVersions.list).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import google_crc32c

from signer_proxy.errors import ConfigError, KeyLoadFailed, KmsUnavailable, SigningFailed
from signer_proxy.eth.ecdsa import (
    Signature,
    SignatureError,
    address_from_public_key,
    canonical_signature,
)
from signer_proxy.keys.aws_kms import once_in_slot
from signer_proxy.keys.backends import LoadContext, LoadedKey, describe_filter, parse_filter
from signer_proxy.keys.signer import BackendSigner

if TYPE_CHECKING:
    from signer_proxy.config import Settings
    from signer_proxy.keys.signer import Signer

log = logging.getLogger(__name__)

SCHEME = "gcpkms://"
ALGORITHM = "EC_SIGN_SECP256K1_SHA256"
ROLES = "roles/cloudkms.signerVerifier on the key (and roles/cloudkms.viewer for discovery)"

_SEGMENT = r"[A-Za-z0-9_-]{1,63}"
_VERSION_NAME = re.compile(
    rf"^projects/[a-z0-9-]{{4,30}}/locations/[a-z0-9-]{{1,63}}/keyRings/{_SEGMENT}"
    rf"/cryptoKeys/{_SEGMENT}/cryptoKeyVersions/[1-9][0-9]{{0,9}}$"
)
_KEY_RING = re.compile(
    rf"^projects/[a-z0-9-]{{4,30}}/locations/[a-z0-9-]{{1,63}}/keyRings/{_SEGMENT}$"
)

# gRPC status codes (by name) that a later attempt may get past.
RETRYABLE = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "INTERNAL"})


def crc32c(data: bytes) -> int:
    return int(google_crc32c.value(data))


@dataclass(frozen=True, slots=True)
class GcpKeySpec:
    """One `gcpkms://` source: the full resource name of a key version."""

    name: str

    @property
    def label(self) -> str:
        return SCHEME + self.name


def parse_gcp_key(text: str) -> GcpKeySpec:
    """`gcpkms://projects/…/cryptoKeyVersions/N` as a GcpKeySpec; ConfigError naming it."""
    example = (
        "e.g. gcpkms://projects/my-project/locations/global/keyRings/signers/cryptoKeys/"
        "treasury/cryptoKeyVersions/1"
    )
    if not text.startswith(SCHEME):
        raise ConfigError(f"{text!r} is not a Google Cloud KMS key version: {example}")
    name = text[len(SCHEME) :]
    if not _VERSION_NAME.match(name):
        raise ConfigError(
            f"{text!r} must name a key version, projects/P/locations/L/keyRings/R/cryptoKeys/K/"
            f"cryptoKeyVersions/N, {example}"
        )
    return GcpKeySpec(name)


def parse_key_ring(text: str) -> str:
    """A key ring for discovery, `projects/P/locations/L/keyRings/R` (gcpkms:// optional)."""
    name = text.removeprefix(SCHEME)
    if not _KEY_RING.match(name):
        raise ConfigError(
            f"{text!r} is not a key ring: projects/P/locations/L/keyRings/R, e.g. "
            "projects/my-project/locations/global/keyRings/signers"
        )
    return name


def _status(exc: BaseException) -> str:
    code = getattr(exc, "grpc_status_code", None)
    return str(getattr(code, "name", "") or type(exc).__name__)


def _load_failure(exc: BaseException, label: str) -> KeyLoadFailed:
    status = _status(exc)
    if status == "NOT_FOUND":
        return KeyLoadFailed(f"Cloud KMS key {label} was not found: check the name", "not_found")
    if status in ("PERMISSION_DENIED", "UNAUTHENTICATED"):
        return KeyLoadFailed(
            f"Cloud KMS key {label}: {status}: the identity needs {ROLES}", "access_denied"
        )
    if status == "FAILED_PRECONDITION":
        return KeyLoadFailed(
            f"Cloud KMS key {label}: FAILED_PRECONDITION: the key version is not enabled "
            "(disabled, destroyed or pending): enable it or remove it",
            "state",
        )
    transient = status in RETRYABLE or isinstance(exc, OSError | TimeoutError)
    return KeyLoadFailed(
        f"Cloud KMS key {label}: {status}",
        "unreachable" if transient else "other",
        transient=transient,
    )


@dataclass(frozen=True, slots=True)
class GcpKeyInfo:
    ref: str
    name: str
    public_key: bytes
    address: str

    @property
    def key_name(self) -> str:
        return self.name


def public_key_from_pem(pem: str, label: str) -> bytes:
    """Uncompressed secp256k1 key from the PEM SubjectPublicKeyInfo GetPublicKey returns."""
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        PublicFormat,
        load_pem_public_key,
    )

    from signer_proxy.eth.ecdsa import public_key_from_spki

    try:
        der = load_pem_public_key(pem.encode()).public_bytes(
            Encoding.DER, PublicFormat.SubjectPublicKeyInfo
        )
        return public_key_from_spki(der)
    except (ValueError, SignatureError) as exc:
        raise KeyLoadFailed(f"Cloud KMS key {label}: public key unusable: {exc}", "spec") from None


class GcpKms:
    """One Cloud KMS client shared by every key; `aclose` when done.

    With no `client`, the official async client with Application Default Credentials;
    `client_options` / `transport` may point it elsewhere (the emulator)."""

    def __init__(
        self, client: Any = None, *, attempts: int = 4, backoff: float = 0.1, timeout: float = 10.0
    ) -> None:
        if client is None:
            from google.cloud import kms_v1

            client = kms_v1.KeyManagementServiceAsyncClient()
        self.client = client
        self.attempts = attempts
        self.backoff = backoff
        self.timeout = timeout

    async def _call(self, method: str, request: Any) -> Any:
        """One RPC with retries (capped exponential backoff) on transient statuses."""
        for attempt in range(self.attempts):
            try:
                # retry=None: the client's own default retries (up to 60 s) would hide the
                # deadline and the backoff here.
                return await getattr(self.client, method)(
                    request=request, retry=None, timeout=self.timeout
                )
            except Exception as exc:
                if _status(exc) not in RETRYABLE or attempt == self.attempts - 1:
                    raise
                await asyncio.sleep(self.backoff * (1 << attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    async def load(self, spec: GcpKeySpec) -> GcpKeyInfo:
        """Fetch and check one key version's public key; KeyLoadFailed says what is wrong."""
        from google.cloud import kms_v1

        label = spec.label
        try:
            answer = await self._call("get_public_key", kms_v1.GetPublicKeyRequest(name=spec.name))
        except Exception as exc:  # google.api_core exceptions, mapped to a reason
            log.debug("get_public_key failed", exc_info=True)
            raise _load_failure(exc, label) from None
        if answer.name != spec.name or crc32c(answer.pem.encode()) != answer.pem_crc32c:
            raise KeyLoadFailed(
                f"Cloud KMS key {label}: the public key failed its integrity check (CRC32C "
                "or name); retry",
                "unreachable",
                transient=True,
            )
        algorithm = kms_v1.CryptoKeyVersion.CryptoKeyVersionAlgorithm(answer.algorithm).name
        if algorithm != ALGORITHM:
            raise KeyLoadFailed(
                f"Cloud KMS key {label} is {algorithm}: it must be {ALGORITHM} "
                "(purpose ASYMMETRIC_SIGN)",
                "spec",
            )
        public_key = public_key_from_pem(answer.pem, label)
        return GcpKeyInfo(label, spec.name, public_key, address_from_public_key(public_key))

    async def discover(
        self, key_ring: str, labels: Mapping[str, str]
    ) -> list[tuple[GcpKeyInfo | None, str, KeyLoadFailed | None]]:
        """Every enabled secp256k1 version of the ring's keys whose labels include `labels`."""
        from google.cloud import kms_v1

        algorithm = kms_v1.CryptoKeyVersion.CryptoKeyVersionAlgorithm.EC_SIGN_SECP256K1_SHA256
        names: list[str] = []
        try:
            keys = await self.client.list_crypto_keys(
                request=kms_v1.ListCryptoKeysRequest(parent=key_ring)
            )
            async for key in keys:
                have = dict(key.labels)
                if not all(have.get(k) == v for k, v in labels.items()):
                    continue
                if key.version_template.algorithm != algorithm:
                    continue
                versions = await self.client.list_crypto_key_versions(
                    request=kms_v1.ListCryptoKeyVersionsRequest(
                        parent=key.name, filter="state=ENABLED"
                    )
                )
                async for version in versions:
                    if version.state == kms_v1.CryptoKeyVersion.CryptoKeyVersionState.ENABLED:
                        names.append(version.name)
        except Exception as exc:
            failure = _load_failure(exc, SCHEME + key_ring)
            raise KeyLoadFailed(
                f"listing keys failed: {failure}", "listing", transient=failure.transient
            ) from None

        async def one(name: str) -> tuple[GcpKeyInfo | None, str, KeyLoadFailed | None]:
            spec = GcpKeySpec(name)
            try:
                return await self.load(spec), spec.label, None
            except KeyLoadFailed as exc:
                return None, spec.label, exc

        return list(await asyncio.gather(*(one(n) for n in sorted(names))))

    async def aclose(self) -> None:
        transport = getattr(self.client, "transport", None)
        if transport is not None:
            await transport.close()


class GcpKmsSigner(BackendSigner[GcpKeyInfo]):
    """Signs with one Cloud KMS key version; every answer's CRC32C and signature checked."""

    backend = "gcp_kms"

    def __init__(self, kms: GcpKms, info: GcpKeyInfo, calls: Any = None) -> None:
        self._kms = kms
        self.info = info
        # keys/aws_kms.KmsCalls: the process-wide cap on key-service requests in flight, the
        # attempt timeout and the request deadline (GcpKms._call does the retries).
        self._calls = calls

    async def sign_digest(self, digest: bytes) -> Signature:
        from google.cloud import kms_v1

        if len(digest) != 32:
            raise SigningFailed("the digest to sign must be 32 bytes")
        request = kms_v1.AsymmetricSignRequest(
            name=self.info.name,
            digest=kms_v1.Digest(sha256=digest),
            digest_crc32c=crc32c(digest),
        )

        async def call() -> Any:
            return await self._kms._call("asymmetric_sign", request)

        try:
            answer = await once_in_slot(self._calls, self.info.ref, call)
        except KmsUnavailable:  # every request slot stayed busy (KmsCalls)
            raise
        except Exception as exc:
            status = _status(exc)
            if status in RETRYABLE or isinstance(exc, OSError | TimeoutError):
                raise KmsUnavailable(
                    f"Cloud KMS is unavailable for {self.info.ref} ({status}) after retries; "
                    "retry later"
                ) from None
            raise SigningFailed(
                f"Cloud KMS refused to sign with {self.info.ref} ({status}): the identity "
                f"needs {ROLES}, and the version must be enabled"
            ) from None
        if (
            not answer.verified_digest_crc32c
            or answer.name != self.info.name
            or crc32c(answer.signature) != answer.signature_crc32c
        ):
            raise KmsUnavailable(
                f"the answer of Cloud KMS for {self.info.ref} failed its integrity check "
                "(CRC32C); nothing was sent, retry"
            )
        try:
            return canonical_signature(answer.signature, digest, self.info.public_key)
        except SignatureError as exc:
            raise SigningFailed(
                f"the signature from {self.info.ref} is not usable ({exc}); nothing was sent"
            ) from None


# --- the backend source (keys/backends.py) -------------------------------------------------


def check_endpoint(endpoint: str) -> str:
    """--gcp-kms-endpoint: empty (Cloud KMS) or 127.0.0.1:PORT (an emulator)."""
    host, _, port = endpoint.rpartition(":")
    if endpoint and (host != "127.0.0.1" or not port.isdigit()):
        raise ConfigError(
            f"--gcp-kms-endpoint {endpoint!r} must be 127.0.0.1:PORT (an emulator); leave it "
            "empty for Cloud KMS"
        )
    return endpoint


def gcp_client(endpoint: str) -> Any:
    """The official Cloud KMS async client with ADC; at `endpoint` (loopback only) if given."""
    from google.cloud import kms_v1

    if not check_endpoint(endpoint):
        return kms_v1.KeyManagementServiceAsyncClient()
    import google.auth

    from signer_proxy.dev.gcp_kms_emulator import emulator_client

    credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloudkms"])
    return emulator_client(endpoint, credentials)


@dataclass(frozen=True, slots=True)
class _Where:
    endpoint: str = ""
    backoff: float = 0.05

    def kms(self, context: LoadContext) -> GcpKms:
        """The process's Cloud KMS client (a LoadContext's `shared` object); KeyLoadFailed
        when there are no Application Default Credentials to make it with."""
        try:
            return context.shared(
                ("gcp", self.endpoint),
                lambda: GcpKms(gcp_client(self.endpoint), backoff=self.backoff),
            )
        except Exception as exc:  # google.auth's DefaultCredentialsError and kin
            raise KeyLoadFailed(
                f"Cloud KMS: no client ({type(exc).__name__}): set up Application Default "
                "Credentials (workload identity, GOOGLE_APPLICATION_CREDENTIALS)",
                "access_denied",
            ) from None


def _where(settings: Settings | None) -> _Where:
    if settings is None:
        return _Where()
    return _Where(check_endpoint(settings.gcp_kms_endpoint), settings.kms_backoff_base)


def _signer(before: Signer | None, kms: GcpKms, info: GcpKeyInfo, calls: Any) -> Signer:
    if isinstance(before, GcpKmsSigner) and before.info == info:
        return before
    return GcpKmsSigner(kms, info, calls)


def _location(name: str) -> str:
    """projects/P/locations/L of a key ring, key or version name."""
    return "/".join(name.split("/")[:4])


class GcpKeySource:
    """One `gcpkms://…/cryptoKeyVersions/N` key version."""

    def __init__(self, spec: GcpKeySpec, where: _Where) -> None:
        self.spec = spec
        self._where = where

    @property
    def label(self) -> str:
        return self.spec.label

    async def load(self, previous: Mapping[str, Signer], context: LoadContext) -> list[LoadedKey]:
        location = _location(self.spec.name)
        try:
            kms = self._where.kms(context)
            info = await kms.load(self.spec)
        except KeyLoadFailed as exc:
            return [LoadedKey(self.label, location=location, failure=exc)]
        signer = _signer(previous.get(self.label), kms, info, context.calls)
        return [LoadedKey(self.label, info.name, location, signer)]


class GcpDiscoverySource:
    """Every enabled secp256k1 key version of one key ring whose key's labels include all of
    `labels`."""

    def __init__(self, key_ring: str, labels: tuple[tuple[str, str], ...], where: _Where) -> None:
        self.key_ring = key_ring
        self.labels = labels
        self._where = where

    @property
    def label(self) -> str:
        return f"{SCHEME}{self.key_ring} ({describe_filter(self.labels, 'labels')})"

    async def load(self, previous: Mapping[str, Signer], context: LoadContext) -> list[LoadedKey]:
        location = _location(self.key_ring)
        kms = self._where.kms(context)
        keys: list[LoadedKey] = []
        for info, label, failure in await kms.discover(self.key_ring, dict(self.labels)):
            if info is not None:
                signer = _signer(previous.get(label), kms, info, context.calls)
                keys.append(LoadedKey(label, info.name, location, signer, required=False))
            elif failure is not None:
                keys.append(LoadedKey(label, location=location, failure=failure, required=False))
        return keys


def parse_source(text: str, settings: Settings | None) -> GcpKeySource:
    """The backends.BACKENDS entry point: one `gcpkms://` key version."""
    return GcpKeySource(parse_gcp_key(text), _where(settings))


def discovery_sources(settings: Settings) -> list[GcpDiscoverySource]:
    """One source per --gcp-key-ring, each selecting by every --gcp-label."""
    labels = parse_filter(settings.gcp_discover_labels, "--gcp-label")
    where = _where(settings)
    return [GcpDiscoverySource(parse_key_ring(ring), labels, where)
            for ring in settings.gcp_discover_key_rings]  # fmt: skip
