"""AWS KMS keys: load and verify them at startup, sign digests with one shared async client.

Only this module talks to KMS. Credentials come from the standard AWS chain (environment,
profile, web identity / IRSA, instance role); signer-proxy's own config never holds them.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from signer_proxy.ecdsa import (
    Signature,
    SignatureError,
    address_from_public_key,
    canonical_signature,
    public_key_from_spki,
)
from signer_proxy.errors import ConfigError, KmsUnavailable, SigningFailed

log = logging.getLogger(__name__)

REQUIRED_KEY_SPEC = "ECC_SECG_P256K1"
REQUIRED_KEY_USAGE = "SIGN_VERIFY"
IAM_ACTIONS = "kms:DescribeKey, kms:GetPublicKey and kms:Sign"

# KMS error codes that a later attempt may get past; everything else needs an operator.
RETRYABLE_KMS_ERRORS = frozenset(
    {
        "ThrottlingException",
        "DependencyTimeoutException",
        "KMSInternalException",
        "KeyUnavailableException",
    }
)

_KMS_ERROR_ADVICE = {
    "ThrottlingException": "KMS is throttling Sign requests (ECC quota is shared per account "
    "and Region); retry later or raise the quota",
    "DependencyTimeoutException": "KMS timed out; retry",
    "KMSInternalException": "KMS had an internal error; retry",
    "KeyUnavailableException": "the key is temporarily unavailable; retry",
    "DisabledException": "the key is disabled: enable it or remove it from --kms-key",
    "KMSInvalidStateException": "the key is not in a usable state (pending deletion or "
    "import?): check its state in KMS",
    "NotFoundException": "the key was not found: check the key id and --aws-region",
    "InvalidKeyUsageException": f"the key cannot sign: it must be {REQUIRED_KEY_SPEC} with "
    f"usage {REQUIRED_KEY_USAGE}",
    "AccessDeniedException": f"access denied: the AWS identity needs {IAM_ACTIONS} on this key",
    "UnrecognizedClientException": "the AWS credentials are not valid for this Region",
    "InvalidSignatureException": "the AWS credentials are not valid",
}


_STATE_DEFAULT = "enable it or remove it from --kms-key"
_STATE_ADVICE = {
    "PendingImport": "import its key material (BYOK) or remove it from --kms-key",
    "PendingDeletion": "cancel its scheduled deletion (kms cancel-key-deletion) and enable it, "
    "or remove it from --kms-key",
    "Unavailable": "its custom key store is disconnected: reconnect it",
}


def describe_kms_error(error_code: str, key: str) -> str:
    """An operator-facing sentence for a KMS error code on `key`."""
    advice = _KMS_ERROR_ADVICE.get(error_code, "see the signer-proxy log")
    return f"KMS key {key}: {error_code}: {advice}"


def kms_error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "Unknown"))


def region_of_arn(key_ref: str) -> str | None:
    """The Region named in a KMS key or alias ARN, else None."""
    parts = key_ref.split(":")
    if len(parts) >= 6 and parts[0] == "arn" and parts[2] == "kms":
        return parts[3]
    return None


@dataclass(frozen=True, slots=True)
class KmsKeyInfo:
    """What startup learned about one configured key."""

    ref: str  # as the operator wrote it: id, ARN, alias or alias ARN
    arn: str
    public_key: bytes
    address: str


class KmsSigner:
    """Signs digests with one KMS key through a shared aioboto3 client."""

    def __init__(self, client: Any, info: KmsKeyInfo) -> None:
        self._client = client
        self.info = info

    @property
    def address(self) -> str:
        return self.info.address

    @property
    def key_name(self) -> str:
        return self.info.arn

    def __repr__(self) -> str:
        return f"KmsSigner({self.info.address}, {self.info.arn})"

    async def sign_digest(self, digest: bytes) -> Signature:
        try:
            response = await self._client.sign(
                KeyId=self.info.arn,
                Message=digest,
                MessageType="DIGEST",
                SigningAlgorithm="ECDSA_SHA_256",
            )
        except ClientError as exc:
            code = kms_error_code(exc)
            error_class = KmsUnavailable if code in RETRYABLE_KMS_ERRORS else SigningFailed
            raise error_class(describe_kms_error(code, self.info.arn)) from exc
        except (TimeoutError, BotoCoreError, OSError) as exc:
            raise KmsUnavailable(
                f"KMS key {self.info.arn}: could not reach KMS ({type(exc).__name__}); retry"
            ) from exc
        try:
            return canonical_signature(response.get("Signature", b""), digest, self.info.public_key)
        except SignatureError as exc:
            log.error("KMS key %s returned an unusable signature: %s", self.info.arn, exc)
            raise SigningFailed(
                f"KMS key {self.info.arn} returned a signature that does not verify for "
                f"{self.info.address} ({exc}); nothing was sent"
            ) from exc


async def load_key(client: Any, key_ref: str, region: str) -> KmsKeyInfo:
    """DescribeKey + GetPublicKey for one configured key; ConfigError naming it when unusable."""
    arn_region = region_of_arn(key_ref)
    if arn_region is not None and arn_region != region:
        raise ConfigError(
            f"KMS key {key_ref} is in Region {arn_region} but --aws-region is {region}: "
            "set --aws-region to the key's Region"
        )
    try:
        metadata = (await client.describe_key(KeyId=key_ref))["KeyMetadata"]
        problems = []
        if metadata.get("KeySpec") != REQUIRED_KEY_SPEC:
            problems.append(f"KeySpec is {metadata.get('KeySpec')}, needs {REQUIRED_KEY_SPEC}")
        if metadata.get("KeyUsage") != REQUIRED_KEY_USAGE:
            problems.append(f"KeyUsage is {metadata.get('KeyUsage')}, needs {REQUIRED_KEY_USAGE}")
        state = metadata.get("KeyState")
        if state != "Enabled":
            problems.append(f"KeyState is {state}: {_STATE_ADVICE.get(state, _STATE_DEFAULT)}")
        if problems:
            raise ConfigError(
                f"KMS key {key_ref} ({metadata['Arn']}) cannot be used: " + "; ".join(problems)
            )
        arn = metadata["Arn"]
        der = (await client.get_public_key(KeyId=arn))["PublicKey"]
    except ClientError as exc:
        code = kms_error_code(exc)
        if code == "NotFoundException":
            raise ConfigError(
                f"KMS key {key_ref} was not found in Region {region}: check the key id or alias "
                "and --aws-region"
            ) from exc
        raise ConfigError(describe_kms_error(code, key_ref)) from exc
    except (KeyError, TypeError) as exc:
        raise ConfigError(
            f"KMS key {key_ref}: the KMS endpoint answered without the expected fields "
            f"({exc}); check --aws-endpoint-url"
        ) from exc
    except (TimeoutError, BotoCoreError, OSError) as exc:
        raise ConfigError(
            f"KMS key {key_ref}: could not reach KMS in Region {region} ({exc}); check the "
            "network, --aws-endpoint-url and AWS credentials"
        ) from exc
    try:
        public_key = public_key_from_spki(der)
    except SignatureError as exc:
        raise ConfigError(f"KMS key {key_ref} ({arn}): {exc}") from exc
    return KmsKeyInfo(
        ref=key_ref, arn=arn, public_key=public_key, address=address_from_public_key(public_key)
    )


async def load_signers(
    client: Any, key_refs: tuple[str, ...], region: str, sign_client: Any = None
) -> list[KmsSigner]:
    """Load every configured key concurrently; the first unusable one stops startup.

    `sign_client` (e.g. a LeanKmsClient) serves the signers' Sign calls; default `client`."""
    infos = await asyncio.gather(*(load_key(client, ref, region) for ref in key_refs))
    signers: dict[str, KmsSigner] = {}
    for info in infos:  # an alias and its id name one key: one signer
        signers.setdefault(info.arn, KmsSigner(sign_client or client, info))
        log.info("loaded KMS key %s (%s) as %s", info.ref, info.arn, info.address)
    return list(signers.values())
