"""Bring-your-own-key in the KMS emulator: what moto lacks of AWS's key material import.

moto creates EXTERNAL-origin keys Enabled, with key material of its own, and has neither
GetParametersForImport nor ImportKeyMaterial. `apply_import_shim` makes the emulator behave as
AWS documents it: an EXTERNAL key is created PendingImport without material (no public key,
no signature); GetParametersForImport hands out a fresh RSA wrapping key and an import token
(valid 24 hours); ImportKeyMaterial unwraps the material with that RSA private key
(RSAES_OAEP_SHA_* directly, or RSA_AES_KEY_WRAP_SHA_*: an RSA-wrapped AES key, then RFC 5649
AES key wrap with padding), requires PKCS#8 DER of a private key on the key's curve, refuses
different material on a re-import, records the expiration model and enables the key.

The unwrapping is real cryptography, so `signer-proxy keys import` is proved end to end here
(the imported key's address must come back from GetPublicKey) without AWS.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

PARAMETERS_VALID_SECONDS = 24 * 3600
WRAPPING_ALGORITHMS = (
    "RSAES_OAEP_SHA_1",
    "RSAES_OAEP_SHA_256",
    "RSA_AES_KEY_WRAP_SHA_1",
    "RSA_AES_KEY_WRAP_SHA_256",
)
WRAPPING_KEY_SIZES = {"RSA_2048": 2048, "RSA_3072": 3072, "RSA_4096": 4096}

_lock = threading.Lock()
_applied = False


@dataclass(frozen=True)
class _Parameters:
    key_id: str
    algorithm: str
    wrapping_key: Any  # cryptography RSAPrivateKey
    valid_to: float


_tokens: dict[bytes, _Parameters] = {}
# RSA key generation is slow (RSA_4096: up to seconds); AWS hands out a fresh key each time,
# the emulator one per size per process, which the client cannot tell apart.
_wrapping_keys: dict[int, Any] = {}


def _error(code: str, message: str) -> Exception:
    from moto.core.exceptions import JsonRESTError

    return JsonRESTError(code, message)


def _hash(algorithm: str) -> Any:
    from cryptography.hazmat.primitives import hashes

    return hashes.SHA1() if algorithm.endswith("SHA_1") else hashes.SHA256()


def unwrap_key_material(wrapped: bytes, algorithm: str, wrapping_key: Any) -> bytes:
    """The key material inside `wrapped`, as KMS unwraps it; ValueError when it does not."""
    from cryptography.hazmat.primitives.asymmetric import padding
    from cryptography.hazmat.primitives.keywrap import aes_key_unwrap_with_padding

    oaep = padding.OAEP(mgf=padding.MGF1(_hash(algorithm)), algorithm=_hash(algorithm), label=None)
    if algorithm.startswith("RSAES_OAEP"):
        return bytes(wrapping_key.decrypt(wrapped, oaep))
    size = wrapping_key.key_size // 8
    aes_key = wrapping_key.decrypt(wrapped[:size], oaep)
    return bytes(aes_key_unwrap_with_padding(aes_key, wrapped[size:]))


def apply_import_shim() -> None:
    """Patch moto's KMS responses with AWS's key material import (idempotent)."""
    global _applied
    with _lock:
        if _applied:
            return
        from moto.kms.responses import KmsResponse

        original_create = KmsResponse.create_key
        original_describe = KmsResponse.describe_key
        original_public_key = KmsResponse.get_public_key

        def key_of(self: Any, key_ref: str) -> Any:
            backend = self.kms_backend
            try:
                return backend.describe_key(backend.get_key_id(key_ref))
            except KeyError:
                raise _error("NotFoundException", f"Key '{key_ref}' does not exist") from None

        def create_key(self: Any) -> str:
            answer = json.loads(original_create(self))
            if answer["KeyMetadata"].get("Origin") != "EXTERNAL":
                return json.dumps(answer)
            key = self.kms_backend.keys[answer["KeyMetadata"]["KeyId"]]
            key.key_state = "PendingImport"
            key.enabled = False
            key.imported = None  # no material yet: what ImportKeyMaterial brings
            return json.dumps(key.to_dict())

        def describe_key(self: Any) -> str:
            answer = json.loads(original_describe(self))
            key = key_of(self, self._get_param("KeyId"))
            imported = getattr(key, "imported", None)
            if key.origin == "EXTERNAL" and imported is not None:
                answer["KeyMetadata"]["ExpirationModel"] = imported["model"]
                if imported["valid_to"] is not None:
                    answer["KeyMetadata"]["ValidTo"] = imported["valid_to"]
            return json.dumps(answer)

        def get_public_key(self: Any) -> str:
            key = key_of(self, self._get_param("KeyId"))
            if key.key_state == "PendingImport":
                raise _error("KMSInvalidStateException", f"{key.arn} is pending import.")
            return str(original_public_key(self))

        def get_parameters_for_import(self: Any) -> str:
            from cryptography.hazmat.primitives import serialization
            from cryptography.hazmat.primitives.asymmetric import rsa

            key = key_of(self, self._get_param("KeyId"))
            algorithm = self._get_param("WrappingAlgorithm")
            spec = self._get_param("WrappingKeySpec")
            if key.origin != "EXTERNAL":
                raise _error(
                    "UnsupportedOperationException",
                    f"{key.arn} origin is {key.origin} which is not valid for this operation.",
                )
            if key.key_state == "PendingDeletion":
                raise _error("KMSInvalidStateException", f"{key.arn} is pending deletion.")
            if algorithm not in WRAPPING_ALGORITHMS or spec not in WRAPPING_KEY_SIZES:
                raise _error(
                    "ValidationException",
                    f"WrappingAlgorithm {algorithm} or WrappingKeySpec {spec} is not supported.",
                )
            size = WRAPPING_KEY_SIZES[spec]
            with _lock:
                if size not in _wrapping_keys:
                    _wrapping_keys[size] = rsa.generate_private_key(65537, size)
                wrapping_key = _wrapping_keys[size]
                token = os.urandom(64)
                valid_to = time.time() + PARAMETERS_VALID_SECONDS
                _tokens[token] = _Parameters(key.id, algorithm, wrapping_key, valid_to)
            public = wrapping_key.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            return json.dumps(
                {
                    "KeyId": key.arn,
                    "ImportToken": base64.b64encode(token).decode(),
                    "PublicKey": base64.b64encode(public).decode(),
                    "ParametersValidTo": valid_to,
                }
            )

        def import_key_material(self: Any) -> str:
            from cryptography.hazmat.primitives.asymmetric import ec
            from cryptography.hazmat.primitives.serialization import load_der_private_key

            key = key_of(self, self._get_param("KeyId"))
            token = base64.b64decode(self._get_param("ImportToken") or "")
            wrapped = base64.b64decode(self._get_param("EncryptedKeyMaterial") or "")
            model = self._get_param("ExpirationModel") or "KEY_MATERIAL_EXPIRES"
            valid_to = self._get_param("ValidTo")
            with _lock:
                parameters = _tokens.get(token)
            if parameters is None or parameters.key_id != key.id:
                raise _error("InvalidImportTokenException", "The import token is not valid.")
            if parameters.valid_to < time.time():
                raise _error("ExpiredImportTokenException", "The import token has expired.")
            if model == "KEY_MATERIAL_EXPIRES" and valid_to is None:
                raise _error("ValidationException", "ValidTo is required for KEY_MATERIAL_EXPIRES.")
            if model == "KEY_MATERIAL_DOES_NOT_EXPIRE" and valid_to is not None:
                raise _error(
                    "ValidationException",
                    "ValidTo must be omitted for KEY_MATERIAL_DOES_NOT_EXPIRE.",
                )
            try:
                material = unwrap_key_material(
                    wrapped, parameters.algorithm, parameters.wrapping_key
                )
            except ValueError:
                raise _error(
                    "InvalidCiphertextException",
                    "The key material could not be unwrapped with the import parameters.",
                ) from None
            try:
                private_key = load_der_private_key(material, None)
            except (ValueError, TypeError):
                raise _error(
                    "IncorrectKeyMaterialException", "The key material is not PKCS #8 DER."
                ) from None
            current = key.private_key.private_key
            if not isinstance(private_key, ec.EllipticCurvePrivateKey) or not isinstance(
                private_key.curve, type(current.curve)
            ):
                raise _error(
                    "IncorrectKeyMaterialException",
                    f"The key material does not match the key spec {key.key_spec}.",
                )
            previous = getattr(key, "imported", None)
            if previous is not None and (
                previous["scalar"] != private_key.private_numbers().private_value
            ):
                raise _error(
                    "IncorrectKeyMaterialException",
                    "The key material is different from the material imported before.",
                )
            key.private_key.private_key = private_key
            key.imported = {
                "model": model,
                "valid_to": valid_to,
                "scalar": private_key.private_numbers().private_value,
            }
            key.key_state = "Enabled"
            key.enabled = True
            return json.dumps({"KeyId": key.arn})

        KmsResponse.create_key = create_key  # type: ignore[method-assign]
        KmsResponse.describe_key = describe_key  # type: ignore[method-assign]
        KmsResponse.get_public_key = get_public_key  # type: ignore[method-assign]
        KmsResponse.get_parameters_for_import = get_parameters_for_import  # type: ignore[attr-defined]
        KmsResponse.import_key_material = import_key_material  # type: ignore[attr-defined]
        _applied = True
