"""AWS KMS keys: load and verify them at startup, sign digests with one shared async client.

Only this module talks to KMS. Credentials come from the standard AWS chain (environment,
profile, web identity / IRSA, instance role); signer-proxy's own config never holds them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
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
from signer_proxy.errors import KeyLoadFailed, KmsUnavailable, SigningFailed

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


def state_advice(state: object) -> str:
    """What to do about a key in KMS key state `state` (anything but Enabled)."""
    return _STATE_ADVICE.get(str(state), _STATE_DEFAULT)


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


_REASON_BY_CODE = {
    "NotFoundException": "not_found",
    "AccessDeniedException": "access_denied",
    "UnrecognizedClientException": "access_denied",
    "InvalidSignatureException": "access_denied",
    "DisabledException": "state",
    "KMSInvalidStateException": "state",
    "InvalidKeyUsageException": "spec",
    "UnsupportedOperationException": "spec",
}


def load_failure(exc: BaseException, key_ref: str, region: str) -> KeyLoadFailed:
    """The KeyLoadFailed for a KMS call about `key_ref` that raised `exc`."""
    if isinstance(exc, ClientError):
        code = kms_error_code(exc)
        if exc.operation_name == "AssumeRole":  # fetching the key's role credentials failed
            return KeyLoadFailed(
                f"KMS key {key_ref}: its role cannot be assumed ({code}): the process's AWS "
                "identity needs sts:AssumeRole on the role, and the role must trust it",
                "access_denied",
                transient=code in RETRYABLE_KMS_ERRORS or code == "Throttling",
            )
        if code == "NotFoundException":
            return KeyLoadFailed(
                f"KMS key {key_ref} was not found in Region {region}: check the key id or alias "
                "and --aws-region",
                "not_found",
            )
        transient = code in RETRYABLE_KMS_ERRORS
        reason = "unreachable" if transient else _REASON_BY_CODE.get(code, "other")
        return KeyLoadFailed(describe_kms_error(code, key_ref), reason, transient=transient)
    if isinstance(exc, KeyError | TypeError):
        return KeyLoadFailed(
            f"KMS key {key_ref}: the KMS endpoint answered without the expected fields "
            f"({exc}); check --aws-endpoint-url",
            "invalid",
        )
    return KeyLoadFailed(
        f"KMS key {key_ref}: could not reach KMS in Region {region} ({exc}); check the "
        "network, --aws-endpoint-url and AWS credentials",
        "unreachable",
        transient=True,
    )


def check_metadata(key_ref: str, metadata: dict[str, Any]) -> None:
    """KeyLoadFailed naming every reason the described key cannot sign for Ethereum."""
    problems = []
    reason = "spec"
    if metadata.get("KeySpec") != REQUIRED_KEY_SPEC:
        problems.append(f"KeySpec is {metadata.get('KeySpec')}, needs {REQUIRED_KEY_SPEC}")
    if metadata.get("KeyUsage") != REQUIRED_KEY_USAGE:
        problems.append(f"KeyUsage is {metadata.get('KeyUsage')}, needs {REQUIRED_KEY_USAGE}")
    state = metadata.get("KeyState")
    if state != "Enabled":
        problems.append(f"KeyState is {state}: {state_advice(state)}")
        reason = "state" if len(problems) == 1 else reason
    if problems:
        raise KeyLoadFailed(
            f"KMS key {key_ref} ({metadata['Arn']}) cannot be used: " + "; ".join(problems),
            reason,
        )


async def load_key(
    client: Any,
    key_ref: str,
    region: str,
    known_public_keys: Mapping[str, bytes] | None = None,
) -> KmsKeyInfo:
    """DescribeKey + GetPublicKey for one configured key; KeyLoadFailed naming it when unusable.

    A public key already known for the described ARN (an earlier load) is reused: KMS never
    changes an asymmetric key's material, so a reload costs one DescribeKey per key.
    """
    arn_region = region_of_arn(key_ref)
    if arn_region is not None and arn_region != region:
        raise KeyLoadFailed(
            f"KMS key {key_ref} is in Region {arn_region} but --aws-region is {region}: "
            f"set --aws-region to the key's Region, or give the key its own: "
            f"{key_ref}?region={arn_region}",
            "region",
        )
    try:
        metadata = (await client.describe_key(KeyId=key_ref))["KeyMetadata"]
        check_metadata(key_ref, metadata)
        arn = metadata["Arn"]
        public_key = (known_public_keys or {}).get(arn)
        if public_key is None:
            der = (await client.get_public_key(KeyId=arn))["PublicKey"]
            public_key = public_key_from_spki(der)
    except KeyLoadFailed:
        raise
    except SignatureError as exc:
        raise KeyLoadFailed(f"KMS key {key_ref}: {exc}", "invalid") from exc
    except (ClientError, KeyError, TypeError, TimeoutError, BotoCoreError, OSError) as exc:
        raise load_failure(exc, key_ref, region) from exc
    return KmsKeyInfo(
        ref=key_ref, arn=arn, public_key=public_key, address=address_from_public_key(public_key)
    )
