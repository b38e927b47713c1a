"""Key management in KMS for the CLI: create a signing key, read a key's address."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from signer_proxy.errors import KeyCommandFailed
from signer_proxy.eth.ecdsa import SignatureError, address_from_public_key, public_key_from_spki
from signer_proxy.keys.aws_kms import (
    REQUIRED_KEY_SPEC,
    REQUIRED_KEY_USAGE,
    describe_kms_error,
    kms_error_code,
)

DEFAULT_DESCRIPTION = "Ethereum signing key (signer-proxy)"


def _failure(exc: BaseException, step: str, key: str) -> KeyCommandFailed:
    if isinstance(exc, ClientError):
        return KeyCommandFailed(f"{step}: {describe_kms_error(kms_error_code(exc), key)}")
    return KeyCommandFailed(f"{step} for {key}: could not reach KMS ({exc})")


async def create_signing_key(
    client: Any, alias: str, tags: dict[str, str], description: str = DEFAULT_DESCRIPTION
) -> tuple[str, str]:
    """A new ECC_SECG_P256K1 SIGN_VERIFY key with `alias` and `tags`: (key ARN, address)."""
    try:
        metadata = (
            await client.create_key(
                KeySpec=REQUIRED_KEY_SPEC,
                KeyUsage=REQUIRED_KEY_USAGE,
                Description=description,
                Tags=[{"TagKey": k, "TagValue": v} for k, v in tags.items()],
            )
        )["KeyMetadata"]
    except (ClientError, BotoCoreError, OSError) as exc:
        raise _failure(exc, "CreateKey", alias) from exc
    arn = str(metadata["Arn"])
    try:
        await client.create_alias(AliasName=alias, TargetKeyId=metadata["KeyId"])
    except (ClientError, BotoCoreError, OSError) as exc:
        failure = _failure(exc, "CreateAlias", alias)
        raise KeyCommandFailed(
            f"{failure}; the key {arn} was created without the alias: add one with "
            "aws kms create-alias, or schedule its deletion"
        ) from exc
    return arn, await key_address(client, arn)


async def key_address(client: Any, key: str) -> str:
    """The checksummed address of KMS key `key` (GetPublicKey); KeyCommandFailed when it has
    none an Ethereum account could use."""
    return (await key_identity(client, key))[0]


async def key_identity(client: Any, key: str) -> tuple[str, str]:
    """(address, key ARN) of KMS key `key`, from one GetPublicKey; as `key_address`."""
    try:
        answer = await client.get_public_key(KeyId=key)
    except (ClientError, BotoCoreError, OSError) as exc:
        raise _failure(exc, "GetPublicKey", key) from exc
    spec = answer.get("KeySpec") or answer.get("CustomerMasterKeySpec")
    if spec != REQUIRED_KEY_SPEC:
        raise KeyCommandFailed(
            f"KMS key {key} is {spec}, not {REQUIRED_KEY_SPEC}: it has no Ethereum address"
        )
    try:
        address = address_from_public_key(public_key_from_spki(answer["PublicKey"]))
    except (SignatureError, KeyError) as exc:
        raise KeyCommandFailed(f"KMS key {key}: unusable public key ({exc})") from exc
    arn = str(answer.get("KeyId") or "")
    if not arn.startswith("arn:"):  # KMS answers the ARN; an emulator may answer the id
        try:
            arn = str((await client.describe_key(KeyId=key))["KeyMetadata"]["Arn"])
        except (ClientError, BotoCoreError, OSError) as exc:
            raise _failure(exc, "DescribeKey", key) from exc
    return address, arn
