"""Bring your own key: import a secp256k1 private key into an EXTERNAL-origin KMS key.

The steps are AWS's (SIGNING.md 12): GetParametersForImport hands out an RSA wrapping key
and an import token; the 32-byte key goes in as PKCS#8 DER, wrapped with RSAES_OAEP_SHA_256
(directly) or RSA_AES_KEY_WRAP_SHA_256 (a fresh AES-256 key wrapped with RSA-OAEP, the
material wrapped with that key by RFC 5649 AES key wrap with padding); ImportKeyMaterial
takes it with a deliberate expiration model. Success is only reported once KMS proves it
holds that key: GetPublicKey's address equals the private key's, and a test signature from
KMS recovers to it.

The private key never appears in a message, a log line or an exception from here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from signer_proxy.errors import KeyCommandFailed
from signer_proxy.eth.ecdsa import SECP256K1_N, address_from_public_key, public_key_from_spki
from signer_proxy.keys.aws_kms import (
    REQUIRED_KEY_SPEC,
    REQUIRED_KEY_USAGE,
    KmsKeyInfo,
    KmsSigner,
    describe_kms_error,
    kms_error_code,
)
from signer_proxy.keys.verify import signature_check

WRAPPING_ALGORITHMS = ("RSAES_OAEP_SHA_256", "RSA_AES_KEY_WRAP_SHA_256")
WRAPPING_KEY_SPECS = ("RSA_4096", "RSA_3072", "RSA_2048")

_IMPORT_ADVICE = {
    "InvalidImportTokenException": "the import token does not belong to this key: run the "
    "import again",
    "ExpiredImportTokenException": "the import parameters expired (24 hours): run the import again",
    "InvalidCiphertextException": "KMS could not unwrap the key material: run the import again",
    "IncorrectKeyMaterialException": "KMS refused the key material: a key that held material "
    "once only takes the same material again",
    "UnsupportedOperationException": "the key does not accept imported material: it must "
    "have Origin EXTERNAL",
}


@dataclass(frozen=True, slots=True)
class ImportResult:
    """What an import left in KMS."""

    key_arn: str
    address: str
    expiration_model: str
    valid_to: str  # ISO 8601, empty when the material does not expire
    imported: bool  # False: the key already held this very key, nothing was sent


def private_key_from_text(data: bytes, source: str) -> bytes:
    """The 32-byte secp256k1 key in `data`: 64 hex digits (0x optional) or an unencrypted PEM
    EC key. KeyCommandFailed naming `source`, never showing what it holds."""
    text = data.strip()
    if text.startswith(b"-----BEGIN"):
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        try:
            key = load_pem_private_key(text, None)
        except TypeError:
            raise KeyCommandFailed(
                f"{source} is an encrypted PEM key: decrypt it first, or use a V3 keystore"
            ) from None
        except ValueError:
            raise KeyCommandFailed(f"{source} is not a readable PEM private key") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(
            key.curve, ec.SECP256K1
        ):
            raise KeyCommandFailed(f"{source} holds a key that is not on secp256k1")
        return key.private_numbers().private_value.to_bytes(32, "big")
    hex_text = text[2:] if text[:2].lower() == b"0x" else text
    try:
        if len(hex_text) != 64:
            raise ValueError
        raw = bytes.fromhex(hex_text.decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        raise KeyCommandFailed(
            f"{source} must hold a private key as 64 hex digits (0x optional) or a PEM EC key"
        ) from None
    return check_private_key(raw, source)


def check_private_key(raw: bytes, source: str) -> bytes:
    """`raw` if it is a valid secp256k1 private key (1 ≤ d < n)."""
    if len(raw) != 32 or not 0 < int.from_bytes(raw, "big") < SECP256K1_N:
        raise KeyCommandFailed(f"{source} does not hold a valid secp256k1 private key")
    return raw


def key_address(private_key: bytes) -> str:
    import coincurve

    return address_from_public_key(
        coincurve.PrivateKey(private_key).public_key.format(compressed=False)
    )


def pkcs8_der(private_key: bytes) -> bytes:
    """The key as KMS takes asymmetric material: PKCS#8 DER (RFC 5208) of the EC key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.derive_private_key(int.from_bytes(private_key, "big"), ec.SECP256K1())
    return key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def wrap_key_material(material: bytes, wrapping_public_key_der: bytes, algorithm: str) -> bytes:
    """`material` wrapped for ImportKeyMaterial with the wrapping key GetParametersForImport
    returned (DER SubjectPublicKeyInfo), by `algorithm`."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa
    from cryptography.hazmat.primitives.keywrap import aes_key_wrap_with_padding
    from cryptography.hazmat.primitives.serialization import load_der_public_key

    if algorithm not in WRAPPING_ALGORITHMS:
        raise ValueError(f"unsupported wrapping algorithm {algorithm}")
    wrapping_key = load_der_public_key(wrapping_public_key_der)
    if not isinstance(wrapping_key, rsa.RSAPublicKey):
        raise KeyCommandFailed("KMS returned a wrapping key that is not RSA")
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    if algorithm == "RSAES_OAEP_SHA_256":
        return wrapping_key.encrypt(material, oaep)
    aes_key = os.urandom(32)
    return wrapping_key.encrypt(aes_key, oaep) + aes_key_wrap_with_padding(aes_key, material)


def _failure(exc: BaseException, step: str, key: str) -> KeyCommandFailed:
    if isinstance(exc, ClientError):
        code = kms_error_code(exc)
        advice = _IMPORT_ADVICE.get(code)
        message = f"KMS key {key}: {code}: {advice}" if advice else describe_kms_error(code, key)
        return KeyCommandFailed(f"{step} failed: {message}")
    return KeyCommandFailed(f"{step} failed for KMS key {key}: could not reach KMS ({exc})")


async def create_external_key(
    client: Any, alias: str, tags: dict[str, str], description: str
) -> str:
    """A new EXTERNAL-origin ECC_SECG_P256K1 SIGN_VERIFY key (PendingImport); its ARN."""
    try:
        metadata = (
            await client.create_key(
                KeySpec=REQUIRED_KEY_SPEC,
                KeyUsage=REQUIRED_KEY_USAGE,
                Origin="EXTERNAL",
                Description=description,
                Tags=[{"TagKey": k, "TagValue": v} for k, v in tags.items()],
            )
        )["KeyMetadata"]
        if alias:
            await client.create_alias(AliasName=alias, TargetKeyId=metadata["KeyId"])
    except (ClientError, BotoCoreError, OSError) as exc:
        raise _failure(exc, "CreateKey", alias or "(new)") from exc
    return str(metadata["Arn"])


async def _describe(client: Any, key: str) -> dict[str, Any]:
    try:
        return dict((await client.describe_key(KeyId=key))["KeyMetadata"])
    except (ClientError, BotoCoreError, OSError) as exc:
        raise _failure(exc, "DescribeKey", key) from exc


async def _kms_address(client: Any, arn: str) -> str:
    try:
        der = (await client.get_public_key(KeyId=arn))["PublicKey"]
    except (ClientError, BotoCoreError, OSError) as exc:
        raise _failure(exc, "GetPublicKey", arn) from exc
    return address_from_public_key(public_key_from_spki(der))


async def import_private_key(
    client: Any,
    key: str,
    private_key: bytes,
    *,
    algorithm: str = "RSAES_OAEP_SHA_256",
    wrapping_key_spec: str = "RSA_4096",
    valid_to: datetime | None = None,
) -> ImportResult:
    """Import `private_key` into the EXTERNAL-origin KMS key `key` and prove KMS holds it."""
    expected = key_address(private_key)
    metadata = await _describe(client, key)
    arn = str(metadata["Arn"])
    problems = []
    if metadata.get("Origin") != "EXTERNAL":
        problems.append(
            f"its Origin is {metadata.get('Origin')}: KMS made its material; import needs a "
            "key created with Origin EXTERNAL (leave out --key-id to create one)"
        )
    if metadata.get("KeySpec") != REQUIRED_KEY_SPEC:
        problems.append(f"KeySpec is {metadata.get('KeySpec')}, needs {REQUIRED_KEY_SPEC}")
    if metadata.get("KeyUsage") != REQUIRED_KEY_USAGE:
        problems.append(f"KeyUsage is {metadata.get('KeyUsage')}, needs {REQUIRED_KEY_USAGE}")
    state = metadata.get("KeyState")
    if state not in ("PendingImport", "Enabled"):
        problems.append(f"KeyState is {state}: enable it (or cancel its deletion) first")
    if problems:
        raise KeyCommandFailed(
            f"KMS key {key} ({arn}) cannot take this key: " + "; ".join(problems)
        )
    model = "KEY_MATERIAL_EXPIRES" if valid_to else "KEY_MATERIAL_DOES_NOT_EXPIRE"
    if state == "Enabled":  # it holds material already: only this very key may be re-imported
        held = await _kms_address(client, arn)
        if held != expected:
            raise KeyCommandFailed(
                f"KMS key {key} ({arn}) already holds the key of {held}, not {expected}: KMS "
                "never replaces an asymmetric key's material; import into a new key"
            )
        await _prove_signing(client, arn, expected)
        return ImportResult(
            arn, held, str(metadata.get("ExpirationModel", "")), _iso(metadata.get("ValidTo")),
            imported=False,
        )  # fmt: skip
    try:
        parameters = await client.get_parameters_for_import(
            KeyId=arn, WrappingAlgorithm=algorithm, WrappingKeySpec=wrapping_key_spec
        )
    except (ClientError, BotoCoreError, OSError) as exc:
        raise _failure(exc, "GetParametersForImport", arn) from exc
    wrapped = wrap_key_material(pkcs8_der(private_key), parameters["PublicKey"], algorithm)
    request: dict[str, Any] = {
        "KeyId": arn,
        "ImportToken": parameters["ImportToken"],
        "EncryptedKeyMaterial": wrapped,
        "ExpirationModel": model,
    }
    if valid_to is not None:
        request["ValidTo"] = valid_to
    try:
        await client.import_key_material(**request)
    except (ClientError, BotoCoreError, OSError) as exc:
        raise _failure(exc, "ImportKeyMaterial", arn) from exc
    after = await _describe(client, arn)
    if after.get("KeyState") != "Enabled":
        raise KeyCommandFailed(
            f"KMS key {arn} is {after.get('KeyState')} after ImportKeyMaterial, not Enabled"
        )
    held = await _kms_address(client, arn)
    if held != expected:
        raise KeyCommandFailed(
            f"KMS key {arn} signs for {held}, not for the imported key's {expected}: do not "
            "use it; schedule its deletion and import into a new key"
        )
    await _prove_signing(client, arn, expected)
    return ImportResult(arn, held, model, valid_to.isoformat() if valid_to else "", imported=True)


async def _prove_signing(client: Any, arn: str, address: str) -> None:
    """A test signature from KMS must recover to the imported key's address."""
    der = (await client.get_public_key(KeyId=arn))["PublicKey"]
    public_key = public_key_from_spki(der)
    signer = KmsSigner(client, KmsKeyInfo(ref=arn, arn=arn, public_key=public_key, address=address))
    check = await signature_check(signer)
    if not check.ok:
        raise KeyCommandFailed(f"KMS key {arn}: the test signature failed: {check.detail}")


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    return ""
