"""The one seam every key backend implements."""

from __future__ import annotations

from typing import Protocol

from signer_proxy.ecdsa import Signature


class Signer(Protocol):
    """Signs 32-byte digests with one secp256k1 key; the result is verified, low-S, recoverable."""

    @property
    def address(self) -> str:
        """EIP-55 checksummed address of the key."""
        ...

    @property
    def key_name(self) -> str:
        """What operators call the key in logs and errors (a KMS key ARN, a keystore path)."""
        ...

    async def sign_digest(self, digest: bytes) -> Signature:
        """Sign `digest`; raise a SignerProxyError rather than return an unverified signature."""
        ...
