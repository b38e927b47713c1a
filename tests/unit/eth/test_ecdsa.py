"""ecdsa: DER decoding, low-S, recovery id by trial, public keys and EIP-55 addresses.

Signatures come from real signers (coincurve's RFC 6979, OpenSSL through `cryptography` the
way KMS signs a DIGEST) and are checked against independent code: eth_keys' pure-Python
backend for recovery, eth_account and eth_utils for addresses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import coincurve
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    Prehashed,
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from eth_account import Account
from eth_keys import KeyAPI
from eth_keys.backends import NativeECCBackend
from eth_utils import to_checksum_address

from signer_proxy.eth.ecdsa import (
    SECP256K1_HALF_N,
    SECP256K1_N,
    Signature,
    SignatureError,
    address_from_public_key,
    canonical_signature,
    checksum_address,
    compressed_public_key,
    decode_der_signature,
    keccak256,
    normalize_s,
    proven_for,
    public_key_from_spki,
    recover_parity,
    recover_public_key,
)

# Pure-Python secp256k1: an oracle that shares no code with coincurve / libsecp256k1.
NATIVE = KeyAPI(NativeECCBackend)

PRIVATE_KEYS = [
    bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"),
    bytes.fromhex("ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d4ed8ff2a80"),
    (1).to_bytes(32, "big"),
    (SECP256K1_N - 1).to_bytes(32, "big"),
    keccak256(b"signer-proxy test key"),
]


def _digest(i: int) -> bytes:
    return keccak256(b"digest %d" % i)


def _der_int_length(der: bytes, index: int) -> int:
    """Length byte of the index-th (0 = r, 1 = s) INTEGER in a short-form DER signature."""
    assert der[0] == 0x30 and der[2] == 0x02
    r_len = der[3]
    return r_len if index == 0 else der[4 + r_len + 1]


def _spki(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def _uncompressed(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)


def _kms_like_sign(key: ec.EllipticCurvePrivateKey, digest: bytes) -> bytes:
    """What KMS Sign does with MessageType=DIGEST, ECDSA_SHA_256: sign the 32 bytes as they are."""
    return key.sign(digest, ec.ECDSA(Prehashed(hashes.SHA256())))


def _oracle_address(digest: bytes, sig: Signature) -> str:
    recovered = NATIVE.Signature(vrs=(sig.y_parity, sig.r, sig.s))
    return recovered.recover_public_key_from_msg_hash(digest).to_checksum_address()


@pytest.fixture(scope="module")
def kms_like_key() -> ec.EllipticCurvePrivateKey:
    return ec.derive_private_key(0xC0FFEE, ec.SECP256K1())


@pytest.fixture(scope="module")
def coincurve_key() -> coincurve.PrivateKey:
    return coincurve.PrivateKey(PRIVATE_KEYS[0])


# --- DER INTEGER sizes (SIGNING.md 2) -------------------------------------------------


@pytest.mark.parametrize(
    ("r", "s", "r_len", "s_len"),
    [
        pytest.param(2**255 + 12345, 0x1234 << 200, 33, 27, id="r-high-bit-33-bytes"),
        pytest.param(0x77 << 240, SECP256K1_N - 1, 31, 33, id="s-high-bit-33-bytes"),
        pytest.param(0x42, 0x0100, 1, 2, id="tiny-r-and-s"),
        pytest.param(2**246 + 1, 2**238 + 7, 31, 30, id="leading-zeros-dropped"),
        pytest.param(2**256 - 2**224, 2**255, 33, 33, id="both-33-bytes"),
    ],
)
def test_decode_der_signature_handles_every_integer_length(
    r: int, s: int, r_len: int, s_len: int
) -> None:
    der = encode_dss_signature(r, s)
    assert (_der_int_length(der, 0), _der_int_length(der, 1)) == (r_len, s_len)
    assert decode_der_signature(der) == (r, s)


def _find_coincurve_signature(
    key: coincurve.PrivateKey, wanted: Callable[[bytes], bool]
) -> tuple[bytes, bytes]:
    """The first (digest, DER) of a deterministic digest sequence that `wanted` accepts."""
    for i in range(20_000):
        digest = _digest(i)
        der = key.sign(digest, hasher=None)
        if wanted(der):
            return digest, der
    raise AssertionError("no signature of the wanted shape in 20,000 tries")


@pytest.mark.parametrize(
    "wanted",
    [
        pytest.param(lambda der: _der_int_length(der, 0) == 33, id="real-r-33-bytes"),
        pytest.param(lambda der: _der_int_length(der, 0) <= 31, id="real-r-31-bytes-or-less"),
        pytest.param(lambda der: _der_int_length(der, 1) <= 31, id="real-s-31-bytes-or-less"),
        pytest.param(lambda der: _der_int_length(der, 1) == 32, id="real-s-32-bytes"),
    ],
)
def test_canonical_signature_real_der_of_every_size_recovers_to_the_key(
    coincurve_key: coincurve.PrivateKey, wanted: Callable[[bytes], bool]
) -> None:
    digest, der = _find_coincurve_signature(coincurve_key, wanted)
    public_key = coincurve_key.public_key.format(compressed=False)

    sig = canonical_signature(der, digest, public_key)

    assert (sig.r, sig.s) == decode_dss_signature(der)  # libsecp256k1 is already low-S
    assert _oracle_address(digest, sig) == address_from_public_key(public_key)


def test_canonical_signature_real_high_s_33_byte_der_is_flipped_and_verifies(
    kms_like_key: ec.EllipticCurvePrivateKey,
) -> None:
    # OpenSSL, like KMS, does not normalise s: about half its signatures are high-S, and a
    # high-S s always encodes as 33 bytes.
    for i in range(200):
        digest = _digest(i)
        der = _kms_like_sign(kms_like_key, digest)
        if _der_int_length(der, 1) == 33:
            break
    else:
        raise AssertionError("OpenSSL gave no high-S signature in 200 tries")
    _, raw_s = decode_dss_signature(der)
    public_key = _uncompressed(kms_like_key)

    sig = canonical_signature(der, digest, public_key)

    assert raw_s > SECP256K1_HALF_N
    assert sig.s == SECP256K1_N - raw_s
    assert _oracle_address(digest, sig) == address_from_public_key(public_key)


# --- Low-S (SIGNING.md 3) --------------------------------------------------------------


@pytest.mark.parametrize(
    ("s", "expected"),
    [
        pytest.param(1, 1, id="one-kept"),
        pytest.param(SECP256K1_HALF_N - 1, SECP256K1_HALF_N - 1, id="below-half-kept"),
        pytest.param(SECP256K1_HALF_N, SECP256K1_HALF_N, id="exactly-n-div-2-kept"),
        pytest.param(SECP256K1_HALF_N + 1, SECP256K1_HALF_N, id="n-div-2-plus-1-flipped"),
        pytest.param(SECP256K1_N - 1, 1, id="n-minus-1-flipped"),
    ],
)
def test_normalize_s_flips_only_above_n_div_2(s: int, expected: int) -> None:
    assert normalize_s(s) == expected


def test_normalize_s_boundary_uses_integer_division() -> None:
    # n is odd, so n / 2 (a float) would sit between n // 2 and n // 2 + 1 and, rounded,
    # misplace the boundary; the integer one is exact.
    assert SECP256K1_N % 2 == 1
    assert SECP256K1_HALF_N == (SECP256K1_N - 1) // 2
    assert int(SECP256K1_N / 2) != SECP256K1_HALF_N  # float division is off by thousands
    assert normalize_s(SECP256K1_HALF_N) + normalize_s(SECP256K1_HALF_N + 1) == SECP256K1_N - 1


def test_canonical_signature_high_s_flips_parity_too(coincurve_key: coincurve.PrivateKey) -> None:
    public_key = coincurve_key.public_key.format(compressed=False)
    digest, der = _find_coincurve_signature(coincurve_key, lambda der: True)
    r, s = decode_dss_signature(der)
    low = canonical_signature(der, digest, public_key)
    high_der = encode_dss_signature(r, SECP256K1_N - s)  # the same signature, high-S

    from_high = canonical_signature(high_der, digest, public_key)

    assert from_high == low
    assert from_high.s <= SECP256K1_HALF_N
    # Had the parity been searched before normalising, the high-S pair would have found
    # the other parity.
    assert recover_parity(digest, r, SECP256K1_N - s, public_key) == 1 - low.y_parity


# --- Recovery id by trial (SIGNING.md 4) -----------------------------------------------


def test_recover_parity_both_parities_seen_and_each_verified(
    kms_like_key: ec.EllipticCurvePrivateKey,
) -> None:
    public_key = _uncompressed(kms_like_key)
    address = address_from_public_key(public_key)
    seen = set()
    for i in range(40):  # each parity is a coin flip: both show up in 40 with p > 1 - 1e-11
        digest = _digest(i)
        sig = canonical_signature(_kms_like_sign(kms_like_key, digest), digest, public_key)

        assert recover_parity(digest, sig.r, sig.s, public_key) == sig.y_parity
        assert recover_public_key(digest, sig.r, sig.s, 1 - sig.y_parity) != public_key
        assert _oracle_address(digest, sig) == address
        seen.add(sig.y_parity)
    assert seen == {0, 1}


def test_canonical_signature_carries_its_proof_for_that_digest_and_address_only(
    kms_like_key: ec.EllipticCurvePrivateKey,
) -> None:
    public_key = _uncompressed(kms_like_key)
    address = address_from_public_key(public_key)
    other_address = address_from_public_key(_uncompressed(ec.derive_private_key(7, ec.SECP256K1())))
    sig = canonical_signature(_kms_like_sign(kms_like_key, _digest(5)), _digest(5), public_key)

    assert proven_for(sig, _digest(5), address)
    assert proven_for(sig, _digest(5), address.lower())
    assert not proven_for(sig, _digest(6), address)
    assert not proven_for(sig, _digest(5), other_address)
    assert not proven_for(Signature(sig.r, sig.s, sig.y_parity), _digest(5), address)
    assert _oracle_address(_digest(5), sig) == address


def test_canonical_signature_over_another_digest_is_refused(
    kms_like_key: ec.EllipticCurvePrivateKey,
) -> None:
    der = _kms_like_sign(kms_like_key, _digest(1))

    with pytest.raises(SignatureError, match="does not recover"):
        canonical_signature(der, _digest(2), _uncompressed(kms_like_key))


def test_canonical_signature_by_another_key_is_refused(
    kms_like_key: ec.EllipticCurvePrivateKey,
) -> None:
    other = ec.derive_private_key(0xBEEF, ec.SECP256K1())
    der = _kms_like_sign(other, _digest(3))

    with pytest.raises(SignatureError, match="does not recover"):
        canonical_signature(der, _digest(3), _uncompressed(kms_like_key))


def test_recover_public_key_r_not_on_the_curve_is_none() -> None:
    # The smallest x for which x^3 + 7 has no square root mod p: no point has it, so no
    # (r, s) with that r recovers under either parity.
    p = 2**256 - 2**32 - 977
    r = next(x for x in range(1, 100) if pow(x**3 + 7, (p - 1) // 2, p) == p - 1)

    assert recover_public_key(_digest(0), r, 1, 0) is None
    assert recover_public_key(_digest(0), r, 1, 1) is None


@pytest.mark.parametrize(
    ("der", "message"),
    [
        pytest.param(encode_dss_signature(0, 5), "outside", id="r-zero"),
        pytest.param(encode_dss_signature(5, 0), "outside", id="s-zero"),
        pytest.param(encode_dss_signature(SECP256K1_N, 5), "outside", id="r-equals-n"),
        pytest.param(encode_dss_signature(5, SECP256K1_N), "outside", id="s-equals-n"),
        pytest.param(encode_dss_signature(5, 2**256 + 1), "outside", id="s-over-256-bits"),
        pytest.param(b"", "not valid DER", id="empty"),
        pytest.param(b"\x30\x00", "not valid DER", id="empty-sequence"),
        pytest.param(b"\x30\x06\x02\x01\xff\x02\x01\x01", "not valid DER", id="negative-r"),
        pytest.param(encode_dss_signature(7, 9) + b"\x00", "not valid DER", id="trailing-byte"),
        pytest.param(encode_dss_signature(7, 9)[:-1], "not valid DER", id="truncated"),
        pytest.param(bytes(64), "not valid DER", id="raw-r-s-not-der"),
    ],
)
def test_decode_der_signature_rejects_bad_input(der: bytes, message: str) -> None:
    with pytest.raises(SignatureError, match=message):
        decode_der_signature(der)


def test_canonical_signature_refuses_a_raw_mode_signature(
    kms_like_key: ec.EllipticCurvePrivateKey,
) -> None:
    # MessageType=RAW makes KMS sign SHA-256(message): a signature over the wrong digest,
    # which must fail hard rather than be sent.
    digest = _digest(4)
    raw_mode = kms_like_key.sign(digest, ec.ECDSA(hashes.SHA256()))

    with pytest.raises(SignatureError, match="does not recover"):
        canonical_signature(raw_mode, digest, _uncompressed(kms_like_key))


def test_canonical_signature_rejects_digest_of_wrong_length(
    kms_like_key: ec.EllipticCurvePrivateKey,
) -> None:
    der = _kms_like_sign(kms_like_key, _digest(0))
    with pytest.raises(SignatureError, match="32 bytes"):
        canonical_signature(der, _digest(0)[:31], _uncompressed(kms_like_key))


def test_canonical_signature_kms_digest_end_to_end(
    kms_like_key: ec.EllipticCurvePrivateKey,
) -> None:
    """keccak digest → KMS-style DER (random k, any S) → canonical, low-S, recovering."""
    public_key = public_key_from_spki(_spki(kms_like_key))
    address = address_from_public_key(public_key)
    for i in range(32):
        digest = keccak256(b"transaction payload %d" % i)
        sig = canonical_signature(_kms_like_sign(kms_like_key, digest), digest, public_key)

        assert 0 < sig.s <= SECP256K1_HALF_N
        assert sig.y_parity in (0, 1)
        assert recover_public_key(digest, sig.r, sig.s, sig.y_parity) == public_key
        assert _oracle_address(digest, sig) == address


# --- Public key and address (SIGNING.md 7, 10) -----------------------------------------


def test_public_key_from_spki_reads_an_88_byte_secp256k1_spki(
    kms_like_key: ec.EllipticCurvePrivateKey,
) -> None:
    der = _spki(kms_like_key)

    public_key = public_key_from_spki(der)

    assert len(der) == 88
    assert public_key == _uncompressed(kms_like_key)
    assert len(public_key) == 65 and public_key[0] == 4


def _p256_spki() -> bytes:
    return _spki(ec.derive_private_key(5, ec.SECP256R1()))


def _rsa_spki() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    return key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def _ed25519_spki() -> bytes:
    key = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(32))
    return key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        pytest.param(_p256_spki, "not on secp256k1", id="p256"),
        pytest.param(_ed25519_spki, "not on secp256k1", id="ed25519"),
        pytest.param(_rsa_spki, "not on secp256k1", id="rsa"),
        pytest.param(lambda: b"not a key at all", "not valid DER", id="garbage"),
        pytest.param(lambda: b"", "not valid DER", id="empty"),
        pytest.param(
            lambda: _spki(ec.derive_private_key(9, ec.SECP256K1()))[:-1],
            "not valid DER",
            id="truncated-secp256k1",
        ),
    ],
)
def test_public_key_from_spki_rejects_other_keys_and_garbage(
    make: Callable[[], bytes], message: str
) -> None:
    with pytest.raises(SignatureError, match=message):
        public_key_from_spki(make())


@pytest.mark.parametrize("private_key", PRIVATE_KEYS, ids=lambda k: k.hex()[:8])
def test_address_from_public_key_matches_eth_account(private_key: bytes) -> None:
    public_key = coincurve.PrivateKey(private_key).public_key.format(compressed=False)

    assert address_from_public_key(public_key) == Account.from_key(private_key).address


@pytest.mark.parametrize(
    "public_key",
    [
        pytest.param(bytes(64), id="64-bytes-no-prefix"),
        pytest.param(b"\x04" + bytes(63), id="too-short"),
        pytest.param(
            coincurve.PrivateKey(PRIVATE_KEYS[0]).public_key.format(compressed=True),
            id="compressed",
        ),
        pytest.param(b"\x05" + bytes(64), id="wrong-prefix"),
    ],
)
def test_address_from_public_key_rejects_non_uncompressed_keys(public_key: bytes) -> None:
    with pytest.raises(SignatureError, match="65-byte uncompressed"):
        address_from_public_key(public_key)


def test_compressed_public_key_round_trips() -> None:
    key = coincurve.PrivateKey(PRIVATE_KEYS[1])
    assert compressed_public_key(key.public_key.format(compressed=False)) == (
        key.public_key.format(compressed=True)
    )


def _checksum_cases() -> Iterator[object]:
    # EIP-55's own test vectors, by shape.
    vectors = {
        "all-caps-1": "0x52908400098527886E0F7030069857D2E4169EE7",
        "all-caps-2": "0x8617E340B3D01FA5F11F306F4090FD50E238070D",
        "all-lower-1": "0xde709f2102306220921060314715629080e2fb77",
        "all-lower-2": "0x27b1fdb04752bbc536007a920d24acb045561c26",
        "mixed-1": "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        "mixed-2": "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
        "mixed-3": "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
        "mixed-4": "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
        "all-digits": "0x1234567890123456789012345678901234567890",
        "zero-address": "0x0000000000000000000000000000000000000000",
        "all-f": "0xFFfFfFffFFfffFFfFFfFFFFFffFFFffffFfFFFfF",
        "dead": "0x000000000000000000000000000000000000dEaD",
    }
    for name, address in vectors.items():
        yield pytest.param(address, id=name)


@pytest.mark.parametrize("address", list(_checksum_cases()))
def test_checksum_address_matches_eth_utils(address: str) -> None:
    raw = bytes.fromhex(address[2:])

    result = checksum_address(raw)

    assert result == to_checksum_address(address)
    assert result == address  # the vectors are already in EIP-55 form


def test_signature_to_bytes65_layout() -> None:
    sig = Signature(r=1, s=2, y_parity=1)

    assert sig.to_bytes65() == (1).to_bytes(32, "big") + (2).to_bytes(32, "big") + b"\x01"
    assert sig.to_bytes65(27)[-1] == 28
