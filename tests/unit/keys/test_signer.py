"""keys.signer: sign_checked lets through only signatures that recover to the signer's
address, recovering itself unless the backend already proved it for this digest and key."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import coincurve
import pytest

from signer_proxy.errors import SigningFailed
from signer_proxy.eth.ecdsa import (
    ProvenSignature,
    Signature,
    canonical_signature,
    keccak256,
)
from signer_proxy.keys.local import LocalKeySigner
from signer_proxy.keys.signer import sign_checked

KEY_SECRET, OTHER_SECRET = keccak256(b"signer test key"), keccak256(b"another test key")
KEY = LocalKeySigner(KEY_SECRET)
DIGEST = keccak256(b"the digest")
ELSEWHERE = keccak256(b"another digest")


def kms_style(secret: bytes, digest: bytes, *, over: bytes | None = None) -> Signature:
    """What KmsSigner returns: the key's DER signature over `over` (default `digest`), made
    canonical and proven against the key's public key for `over`."""
    signed = over or digest
    key = coincurve.PrivateKey(secret)
    der = key.sign(signed, hasher=None)
    return canonical_signature(der, signed, key.public_key.format(compressed=False))


def plain(secret: bytes, digest: bytes) -> Signature:
    """What LocalKeySigner returns: a recoverable signature with no proof attached."""
    raw = coincurve.PrivateKey(secret).sign_recoverable(digest, hasher=None)
    return Signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:64], "big"), raw[64])


@dataclass
class Answering:
    """Claims KEY's address and name; answers each digest with `answer(digest)`."""

    answer: Callable[[bytes], Signature]
    address: str = KEY.address
    key_name: str = "test/answering"

    async def sign_digest(self, digest: bytes) -> Signature:
        return self.answer(digest)


@pytest.mark.parametrize(
    ("answer", "accepted"),
    [
        pytest.param(lambda d: plain(KEY_SECRET, d), True, id="plain-by-the-key"),
        pytest.param(lambda d: kms_style(KEY_SECRET, d), True, id="proven-by-the-key"),
        pytest.param(lambda d: plain(OTHER_SECRET, d), False, id="plain-by-another-key"),
        pytest.param(lambda d: plain(KEY_SECRET, ELSEWHERE), False, id="plain-over-another-digest"),
        # A proof is only taken for the digest and the address it was made for: another key's
        # proven signature, or one proven over another digest, is recovered and refused.
        pytest.param(lambda d: kms_style(OTHER_SECRET, d), False, id="proven-by-another-key"),
        pytest.param(
            lambda d: kms_style(KEY_SECRET, d, over=ELSEWHERE),
            False,
            id="proven-over-another-digest",
        ),
        pytest.param(lambda d: Signature(1, 2, 0), False, id="plain-that-recovers-to-nothing"),
    ],
)
async def test_sign_checked_passes_only_signatures_that_recover_to_the_address(
    answer: Callable[[bytes], Signature], accepted: bool
) -> None:
    signer = Answering(answer)
    if accepted:
        signature = await sign_checked(signer, DIGEST)
        assert signature.r and signature.s and signature.y_parity in (0, 1)
        return
    with pytest.raises(SigningFailed) as refused:
        await sign_checked(signer, DIGEST)
    assert refused.value.message == (
        f"the signature from test/answering does not recover to {KEY.address}; nothing was sent"
    )


async def test_sign_checked_trusts_a_proof_for_this_digest_and_key_without_recovering() -> None:
    # The numbers are nonsense on purpose: recovery would refuse them, so acceptance shows the
    # backend's proof (made by canonical_signature's trial recovery) is used, not redone.
    unproven_numbers = ProvenSignature(1, 2, 0, digest=DIGEST, public_key=KEY.public_key)
    assert await sign_checked(Answering(lambda d: unproven_numbers), DIGEST) is unproven_numbers
