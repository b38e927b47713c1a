"""keys.byok: the key material KMS takes (PKCS#8 DER) and its wrapping, unwrapped here with the
RSA private key as KMS would — written from AWS's description, not from byok's code."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap_with_padding
from eth_account import Account

from signer_proxy.errors import KeyCommandFailed
from signer_proxy.eth.ecdsa import SECP256K1_N
from signer_proxy.keys.byok import (
    key_address,
    pkcs8_der,
    private_key_from_text,
    wrap_key_material,
)

KEY = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")
SECRET_HEX = KEY.hex()


@pytest.fixture(scope="module")
def wrapping_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(65537, 2048)


def spki(private: rsa.RSAPrivateKey) -> bytes:
    return private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def oaep_sha256() -> padding.OAEP:
    return padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def test_pkcs8_der_is_the_secp256k1_key_itself() -> None:
    der = pkcs8_der(KEY)
    loaded = serialization.load_der_private_key(der, None)
    assert isinstance(loaded, ec.EllipticCurvePrivateKey)
    assert isinstance(loaded.curve, ec.SECP256K1)
    assert loaded.private_numbers().private_value == int.from_bytes(KEY, "big")
    # PKCS#8 (a SEQUENCE, version 0, the id-ecPublicKey algorithm), not SEC1's ECPrivateKey.
    assert der[0] == 0x30
    assert bytes.fromhex("06072a8648ce3d0201") in der  # OID 1.2.840.10045.2.1
    assert bytes.fromhex("06052b8104000a") in der  # secp256k1, 1.3.132.0.10


def test_pkcs8_der_left_pads_a_short_key() -> None:
    short = (1).to_bytes(32, "big")
    loaded = serialization.load_der_private_key(pkcs8_der(short), None)
    assert isinstance(loaded, ec.EllipticCurvePrivateKey)
    assert loaded.private_numbers().private_value == 1


def test_rsaes_oaep_sha_256_unwraps_with_the_wrapping_key(wrapping_key: rsa.RSAPrivateKey) -> None:
    material = pkcs8_der(KEY)
    wrapped = wrap_key_material(material, spki(wrapping_key), "RSAES_OAEP_SHA_256")
    assert len(wrapped) == 256  # one RSA-2048 block
    assert wrapping_key.decrypt(wrapped, oaep_sha256()) == material


def test_rsa_aes_key_wrap_sha_256_unwraps_in_two_steps(wrapping_key: rsa.RSAPrivateKey) -> None:
    material = pkcs8_der(KEY)
    wrapped = wrap_key_material(material, spki(wrapping_key), "RSA_AES_KEY_WRAP_SHA_256")
    # RSA-OAEP(SHA-256) of a 256-bit AES key, then RFC 5649 AES key wrap with padding.
    aes_key = wrapping_key.decrypt(wrapped[:256], oaep_sha256())
    assert len(aes_key) == 32
    assert aes_key_unwrap_with_padding(aes_key, wrapped[256:]) == material
    again = wrap_key_material(material, spki(wrapping_key), "RSA_AES_KEY_WRAP_SHA_256")
    assert again != wrapped  # a fresh AES key every time


def test_wrapping_refuses_sha_1_and_a_wrapping_key_that_is_not_rsa() -> None:
    with pytest.raises(ValueError, match="unsupported wrapping algorithm"):
        wrap_key_material(b"x", b"", "RSAES_OAEP_SHA_1")
    ec_public = ec.generate_private_key(ec.SECP256R1()).public_key()
    der = ec_public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(KeyCommandFailed, match="not RSA"):
        wrap_key_material(b"x", der, "RSAES_OAEP_SHA_256")


def pem(key: bytes, password: bytes | None = None) -> bytes:
    private = ec.derive_private_key(int.from_bytes(key, "big"), ec.SECP256K1())
    encryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(SECRET_HEX.encode(), id="hex"),
        pytest.param(b"0x" + SECRET_HEX.encode() + b"\n", id="0x-newline"),
        pytest.param(b"  0X" + SECRET_HEX.upper().encode() + b"  ", id="upper"),
        pytest.param(pem(KEY), id="pem"),
    ],
)
def test_private_key_from_text(data: bytes) -> None:
    assert private_key_from_text(data, "--private-key-file k") == KEY
    assert key_address(KEY) == Account.from_key(KEY).address


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        pytest.param(SECRET_HEX[:-2].encode(), "64 hex digits", id="short"),
        pytest.param(SECRET_HEX.encode() + b"00", "64 hex digits", id="long"),
        pytest.param(b"zz" + SECRET_HEX[2:].encode(), "64 hex digits", id="not-hex"),
        pytest.param(b"00" * 32, "not hold a valid secp256k1", id="zero"),
        pytest.param(SECP256K1_N.to_bytes(32, "big").hex().encode(), "valid secp256k1", id="n"),
        pytest.param(pem(KEY, b"pw"), "encrypted PEM", id="encrypted-pem"),
        pytest.param(b"-----BEGIN PRIVATE KEY-----\nnope\n", "not a readable PEM", id="bad-pem"),
    ],
)
def test_private_key_from_text_refuses_without_showing_the_key(data: bytes, fragment: str) -> None:
    with pytest.raises(KeyCommandFailed) as info:
        private_key_from_text(data, "--private-key-file k")
    message = str(info.value)
    assert fragment in message and "--private-key-file k" in message
    assert SECRET_HEX[:16] not in message.lower()
    assert data.decode(errors="replace").strip()[:20] not in message


def test_private_key_from_text_refuses_another_curve() -> None:
    p256 = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(KeyCommandFailed, match="not on secp256k1"):
        private_key_from_text(p256, "f")
