"""hedera: the Hedera-native ECDSA form (keccak-256 of the bytes, 64-byte r ‖ s, compressed
key), checked against eth-keys (RFC 6979, same key) and verified by `cryptography`."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_der_public_key,
)
from eth_keys import keys

from signer_proxy.ecdsa import SECP256K1_HALF_N, Signature, keccak256
from signer_proxy.errors import SigningFailed
from signer_proxy.hedera import (
    HEDERA_CHAIN_IDS,
    hedera_digest,
    raw_signature,
    sign_hedera,
)
from signer_proxy.keys.local import LocalKeySigner

PRIVATE_KEY = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")

BODIES = [
    pytest.param(b"", id="empty"),
    pytest.param(bytes.fromhex("0a1c0a0c08c8f6b8a806100a18"), id="protobuf-prefix"),
    pytest.param(bytes(range(256)) * 20, id="5k-body"),
]


# X.509 SubjectPublicKeyInfo header for a compressed secp256k1 key (what `cryptography` reads).
X509_PREFIX = bytes.fromhex("3036301006072a8648ce3d020106052b8104000a032200")


def _verify(public_key: bytes, signature: bytes, digest: bytes) -> None:
    """Raises InvalidSignature unless `signature` (r ‖ s) is valid over `digest`."""
    key = load_der_public_key(X509_PREFIX + public_key)
    assert isinstance(key, ec.EllipticCurvePublicKey)
    der = encode_dss_signature(
        int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    )
    # Prehashed only needs a 32-byte digest: the keccak-256 is passed through unchanged.
    key.verify(der, digest, ec.ECDSA(Prehashed(hashes.SHA256())))


def test_hedera_chain_ids() -> None:
    assert set(HEDERA_CHAIN_IDS) == {295, 296, 297}


@pytest.mark.parametrize("body", BODIES)
def test_hedera_digest_is_keccak256_of_the_bytes(body: bytes) -> None:
    assert hedera_digest(body) == keccak256(body)


def test_raw_signature_is_64_bytes_r_then_s_zero_padded() -> None:
    assert raw_signature(Signature(1, 2, 1)) == (1).to_bytes(32, "big") + (2).to_bytes(32, "big")


@pytest.mark.parametrize("body", BODIES)
async def test_sign_hedera_matches_eth_keys_and_verifies(body: bytes) -> None:
    private = keys.PrivateKey(PRIVATE_KEY)

    result = await sign_hedera(LocalKeySigner(PRIVATE_KEY), body)

    expected = private.sign_msg_hash(keccak256(body))
    assert result.digest == keccak256(body)
    assert result.signature == expected.to_bytes()[:64]
    assert len(result.signature) == 64
    assert int.from_bytes(result.signature[32:], "big") <= SECP256K1_HALF_N
    assert result.public_key == private.public_key.to_compressed_bytes()
    assert result.public_key_hex == private.public_key.to_compressed_bytes().hex()
    _verify(result.public_key, result.signature, result.digest)


async def test_sign_hedera_public_key_der_is_hedera_short_der_of_the_compressed_key() -> None:
    result = await sign_hedera(LocalKeySigner(PRIVATE_KEY), b"x")

    key = load_der_public_key(X509_PREFIX + result.public_key)

    assert result.public_key_der_hex == "302d300706052b8104000a032200" + result.public_key_hex
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert key.public_bytes(Encoding.X962, PublicFormat.CompressedPoint) == result.public_key
    assert result.public_key[0] in (2, 3) and len(result.public_key) == 33


class WrongKeySigner:
    """A Signer whose signatures come from another key than its address says."""

    def __init__(self) -> None:
        self._inner = LocalKeySigner(b"\x01" * 32)
        self.address = LocalKeySigner(PRIVATE_KEY).address
        self.key_name = "wrong"

    async def sign_digest(self, digest: bytes) -> Signature:
        return await self._inner.sign_digest(digest)


async def test_sign_hedera_refuses_a_signature_that_is_not_the_signers() -> None:
    with pytest.raises(SigningFailed, match="does not recover to"):
        await sign_hedera(WrongKeySigner(), b"body")
