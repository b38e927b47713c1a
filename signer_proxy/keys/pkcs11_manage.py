"""Key management on a PKCS#11 token for the CLI: generate a secp256k1 pair, import one.

Both make a private key that is a token object, private, sensitive and never extractable
(CKA_TOKEN, CKA_PRIVATE, CKA_SENSITIVE true; CKA_EXTRACTABLE false) with CKA_SIGN, and its
public key with the same CKA_LABEL and CKA_ID. Success is reported only once the token has
signed a test digest that recovers to the key's address.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import Any

import coincurve

from signer_proxy.errors import KeyCommandFailed, KeyLoadFailed
from signer_proxy.eth.ecdsa import (
    SignatureError,
    address_from_public_key,
    raw_signature,
    recover_public_key,
)
from signer_proxy.keys.pkcs11_keys import (
    SECP256K1_OID_DER,
    Pkcs11Spec,
    ckr_name,
    key_uri,
    module,
    public_key_from_ec_point,
    read_pin,
)


@dataclass(frozen=True, slots=True)
class MadeKey:
    uri: str
    address: str
    label: str
    id: str  # hex


def _ec_point(public_key: bytes) -> bytes:
    return b"\x04\x41" + public_key  # DER OCTET STRING of the uncompressed point


def _token(spec: Pkcs11Spec) -> Any:
    lib = module(spec.module).lib
    if spec.token:
        return lib.get_token(token_label=spec.token)
    for slot in lib.get_slots(token_present=True):
        token = slot.get_token()
        if token.serial.rstrip(b"\0 ") == spec.serial.encode():
            return token
    raise KeyCommandFailed(f"PKCS#11: no token with serial {spec.serial}")


def _make(spec: Pkcs11Spec, label: str, private_key: bytes | None) -> MadeKey:
    with module(spec.module).calls:  # one call at a time per module (see pkcs11_keys)
        return _make_serialised(spec, label, private_key)


def _make_serialised(spec: Pkcs11Spec, label: str, private_key: bytes | None) -> MadeKey:
    from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
    from pkcs11.exceptions import UserAlreadyLoggedIn

    key_id = os.urandom(8)
    pin = read_pin(spec)
    token = _token(spec)
    try:
        session = token.open(rw=True, user_pin=pin)
    except UserAlreadyLoggedIn:  # this process signs with the token too: its login serves
        session = token.open(rw=True)
    del pin
    try:
        if list(session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY,
                                     Attribute.LABEL: label})):  # fmt: skip
            raise KeyCommandFailed(
                f"PKCS#11 {spec.token_name}: a private key labelled {label!r} exists already: "
                "choose another --label"
            )
        common = {
            Attribute.TOKEN: True, Attribute.LABEL: label, Attribute.ID: key_id,
            Attribute.KEY_TYPE: KeyType.EC, Attribute.EC_PARAMS: SECP256K1_OID_DER,
        }  # fmt: skip
        private_template = {
            Attribute.PRIVATE: True, Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False,
            Attribute.SIGN: True,
        }  # fmt: skip
        if private_key is None:
            from pkcs11.util.ec import encode_named_curve_parameters

            parameters = session.create_domain_parameters(
                KeyType.EC,
                {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256k1")},
                local=True,
            )
            public, private = parameters.generate_keypair(
                store=True, label=label, id=key_id,
                public_template={Attribute.VERIFY: True},
                private_template=private_template,
            )  # fmt: skip
            public_key = public_key_from_ec_point(bytes(public[Attribute.EC_POINT]))
        else:
            public_key = coincurve.PrivateKey(private_key).public_key.format(compressed=False)
            private = session.create_object({
                **common, **private_template, Attribute.CLASS: ObjectClass.PRIVATE_KEY,
                Attribute.VALUE: private_key,
            })  # fmt: skip
            session.create_object({
                **common, Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.VERIFY: True,
                Attribute.EC_POINT: _ec_point(public_key),
            })  # fmt: skip
        address = address_from_public_key(public_key)
        digest = os.urandom(32)
        raw = bytes(private.sign(digest, mechanism=Mechanism.ECDSA))
        signature = raw_signature(raw, digest, public_key)
        recovered = recover_public_key(digest, signature.r, signature.s, signature.y_parity)
        if recovered != public_key:
            raise KeyCommandFailed(f"PKCS#11 key {label}: the test signature does not recover")
    finally:
        session.close()
    return MadeKey(key_uri(spec.token_name, label, key_id), address, label, key_id.hex())


async def make_key(spec: Pkcs11Spec, label: str, private_key: bytes | None = None) -> MadeKey:
    """Generate (no `private_key`) or import a secp256k1 pair labelled `label` on the token."""
    if not label:
        raise KeyCommandFailed("PKCS#11 keys need a --label")
    try:
        return await asyncio.to_thread(_make, spec, label, private_key)
    except KeyCommandFailed:
        raise
    except KeyLoadFailed as exc:
        raise KeyCommandFailed(str(exc)) from None
    except SignatureError as exc:
        raise KeyCommandFailed(f"PKCS#11 key {label}: {exc}") from None
    except Exception as exc:
        raise KeyCommandFailed(
            f"PKCS#11 {spec.token_name}: {'import' if private_key else 'key generation'} of "
            f"{label} failed: {ckr_name(exc)}"
        ) from None
