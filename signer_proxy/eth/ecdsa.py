"""secp256k1 helpers shared by every signing backend: pure functions, no I/O.

A KMS returns an ASN.1 DER ECDSA signature with no recovery id and no low-S guarantee;
Ethereum wants (r, s, y_parity) with s in the lower half of the curve order. The steps are
kept separate so each can be tested on its own: `decode_der_signature` → `normalize_s` →
`recover_parity` (by trial against the key we already know, failing hard).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import coincurve
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_der_public_key,
)

try:  # pysha3's C keccak: ~1.5 us for a transaction, against ~6 us through pycryptodome
    from sha3 import keccak_256 as _keccak_256
except ImportError:  # pragma: no cover - safe-pysha3 does not build on this platform
    from eth_hash.auto import keccak as _eth_hash_keccak

    def _keccak(data: bytes) -> bytes:
        return _eth_hash_keccak(data)

else:

    def _keccak(data: bytes) -> bytes:
        digest: bytes = _keccak_256(data).digest()
        return digest


SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
SECP256K1_HALF_N = SECP256K1_N // 2


class SignatureError(ValueError):
    """A signature or key that cannot be used; callers wrap it with the key's name."""


@dataclass(frozen=True, slots=True)
class Signature:
    """A canonical recoverable signature: low-S, with the y parity of R (0 or 1)."""

    r: int
    s: int
    y_parity: int

    def to_bytes65(self, v_offset: int = 0) -> bytes:
        """r ‖ s ‖ (y_parity + v_offset), 32-byte big-endian each."""
        return (
            self.r.to_bytes(32, "big")
            + self.s.to_bytes(32, "big")
            + bytes([self.y_parity + v_offset])
        )


@dataclass(frozen=True, slots=True)
class ProvenSignature(Signature):
    """A Signature already proven to recover to `public_key` over `digest` (by
    `canonical_signature`'s trial recovery): `sign_checked` need not recover it again."""

    digest: bytes = field(default=b"", repr=False)
    public_key: bytes = field(default=b"", repr=False)


def proven_for(signature: Signature, digest: bytes, address: str) -> bool:
    """Whether `signature` carries a proof that it recovers to `address` over `digest`."""
    return (
        isinstance(signature, ProvenSignature)
        and signature.digest == digest
        and len(signature.public_key) == 65
        and keccak256(signature.public_key[1:])[-20:] == bytes.fromhex(address[2:])
    )


def keccak256(data: bytes) -> bytes:
    """Keccak-256 (Ethereum's, not NIST SHA3-256)."""
    return _keccak(data)


@functools.lru_cache(maxsize=8192)
def checksum_address(address: bytes) -> str:
    """EIP-55 mixed-case hex of a 20-byte address."""
    # Cached: every request checksums its from and to, and they repeat (~7 us each).
    lower = address.hex()
    digest = keccak256(lower.encode()).hex()
    return "0x" + "".join(
        c.upper() if int(d, 16) >= 8 else c for c, d in zip(lower, digest[:40], strict=True)
    )


def public_key_from_spki(der: bytes) -> bytes:
    """Uncompressed 65-byte secp256k1 key from DER SubjectPublicKeyInfo (KMS GetPublicKey)."""
    try:
        key = load_der_public_key(der)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise SignatureError(f"public key is not valid DER SubjectPublicKeyInfo: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256K1):
        raise SignatureError("public key is not on secp256k1")
    return key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)


def address_from_public_key(public_key: bytes) -> str:
    """EIP-55 checksummed address: last 20 bytes of keccak(X ‖ Y)."""
    if len(public_key) != 65 or public_key[0] != 4:
        raise SignatureError("expected a 65-byte uncompressed public key")
    return checksum_address(keccak256(public_key[1:])[-20:])


def compressed_public_key(public_key: bytes) -> bytes:
    """33-byte compressed form (0x02/0x03 ‖ X) of an uncompressed public key."""
    return coincurve.PublicKey(public_key).format(compressed=True)


def decode_der_signature(der: bytes) -> tuple[int, int]:
    """(r, s) from an ASN.1 DER ECDSA signature, whatever the INTEGER lengths; range-checked."""
    try:
        r, s = decode_dss_signature(der)
    except ValueError as exc:
        raise SignatureError(f"signature is not valid DER: {exc}") from exc
    if not (0 < r < SECP256K1_N and 0 < s < SECP256K1_N):
        raise SignatureError("signature r or s is outside the secp256k1 group order")
    return r, s


def normalize_s(s: int) -> int:
    """EIP-2: the lower of s and n - s."""
    return SECP256K1_N - s if s > SECP256K1_HALF_N else s


def recover_public_key(digest: bytes, r: int, s: int, y_parity: int) -> bytes | None:
    """The uncompressed public key that (r, s, y_parity) over `digest` recovers to, if any."""
    raw = r.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes([y_parity])
    try:
        recovered = coincurve.PublicKey.from_signature_and_message(raw, digest, hasher=None)
    except Exception:  # coincurve raises plain Exception for unrecoverable points
        return None
    return recovered.format(compressed=False)


def recover_parity(digest: bytes, r: int, s: int, public_key: bytes) -> int:
    """The y parity (0/1) under which (r, s) over `digest` recovers to `public_key`.

    Raises SignatureError when neither does: the signature is not over this digest or not by
    this key, and must never be used.
    """
    for parity in (0, 1):
        if recover_public_key(digest, r, s, parity) == public_key:
            return parity
    raise SignatureError("signature does not recover to the key's public key for this digest")


def proven_signature(r: int, s: int, digest: bytes, public_key: bytes) -> ProvenSignature:
    """(r, s) as any backend returns it → canonical (low-S) signature with its verified y
    parity. The one place every backend's signature is made canonical and proven: KMS, Cloud
    KMS (DER, `canonical_signature`), Key Vault and PKCS#11 (raw r ‖ s, `raw_signature`)."""
    if len(digest) != 32:
        raise SignatureError("digest must be 32 bytes")
    if not (0 < r < SECP256K1_N and 0 < s < SECP256K1_N):
        raise SignatureError("signature r or s is outside the secp256k1 group order")
    s = normalize_s(s)  # before the parity search: flipping s flips the parity
    # The trial recovery is the proof: it is carried along so it is not paid for twice.
    parity = recover_parity(digest, r, s, public_key)
    return ProvenSignature(r, s, parity, digest=digest, public_key=public_key)


def canonical_signature(der: bytes, digest: bytes, public_key: bytes) -> ProvenSignature:
    """DER signature from a KMS → canonical (low-S) signature with its verified y parity."""
    if len(digest) != 32:
        raise SignatureError("digest must be 32 bytes")
    r, s = decode_der_signature(der)
    return proven_signature(r, s, digest, public_key)


def raw_signature(raw: bytes, digest: bytes, public_key: bytes) -> ProvenSignature:
    """Raw r ‖ s (64 bytes: PKCS#11 CKM_ECDSA, JWS ES256K) → canonical signature with its
    verified y parity."""
    if len(raw) != 64:
        raise SignatureError(f"signature must be 64 bytes r ‖ s, got {len(raw)}")
    return proven_signature(
        int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"), digest, public_key
    )
