"""Hedera: its chain ids, and the Hedera-native signature form for ECDSA(secp256k1) keys.

Through the JSON-RPC relay Hedera is an EVM chain like any other and the proxy signs ordinary
Ethereum transactions for it. Hedera's own (HAPI) transactions are signed differently: the
signature covers keccak-256 of the transaction body bytes, and is the bare 64-byte r ‖ s (no
recovery id); the account's key is the 33-byte compressed secp256k1 public key. This module
gives that form for any `Signer`, so a KMS key can sign HAPI transactions too.
"""

from __future__ import annotations

from dataclasses import dataclass

from signer_proxy.errors import SigningFailed
from signer_proxy.eth.ecdsa import (
    Signature,
    address_from_public_key,
    compressed_public_key,
    keccak256,
    recover_public_key,
)
from signer_proxy.keys.signer import Signer

HEDERA_CHAIN_IDS = {295: "mainnet", 296: "testnet", 297: "previewnet"}
# The DER header Hedera's SDKs put in front of a compressed ECDSA(secp256k1) key when they print
# it "as DER" (toStringDer: "302d3007..."): it names only the curve OID, not id-ecPublicKey,
# so it is not X.509 SubjectPublicKeyInfo (SDKs accept that "3036..." form on input too).
HEDERA_ECDSA_DER_PREFIX = bytes.fromhex("302d300706052b8104000a032200")


@dataclass(frozen=True, slots=True)
class HederaSignature:
    """A Hedera-native ECDSA signature: 64-byte r ‖ s and the signer's compressed key."""

    digest: bytes
    signature: bytes
    public_key: bytes  # 33 bytes, compressed

    @property
    def public_key_hex(self) -> str:
        """Hex of the compressed key, as Hedera accounts and the SDK's toStringRaw show it."""
        return self.public_key.hex()

    @property
    def public_key_der_hex(self) -> str:
        """Hex of the key as Hedera's SDKs print it in DER (their toStringDer)."""
        return (HEDERA_ECDSA_DER_PREFIX + self.public_key).hex()


def hedera_digest(transaction_bytes: bytes) -> bytes:
    """keccak-256 of the transaction body bytes: what a Hedera ECDSA key signs."""
    return keccak256(transaction_bytes)


def raw_signature(signature: Signature) -> bytes:
    """r ‖ s, 32 bytes each, big-endian; Hedera has no recovery id."""
    return signature.r.to_bytes(32, "big") + signature.s.to_bytes(32, "big")


async def sign_hedera(signer: Signer, transaction_bytes: bytes) -> HederaSignature:
    """Sign Hedera transaction bytes with `signer`; the result is checked against its address."""
    digest = hedera_digest(transaction_bytes)
    signature = await signer.sign_digest(digest)
    # The Signer seam has no public key; the signature recovers it, and the address check
    # proves it is this signer's.
    public_key = recover_public_key(digest, signature.r, signature.s, signature.y_parity)
    if public_key is None or address_from_public_key(public_key) != signer.address:
        raise SigningFailed(
            f"the signature from {signer.key_name} does not recover to {signer.address}; "
            "nothing was produced"
        )
    return HederaSignature(digest, raw_signature(signature), compressed_public_key(public_key))
