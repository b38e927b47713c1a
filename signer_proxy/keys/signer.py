"""The one seam every key backend implements, and the check every signature passes."""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar

from signer_proxy.errors import SigningFailed
from signer_proxy.eth.ecdsa import Signature, keccak256, proven_for, recover_public_key


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


def signer_backend(signer: Signer) -> str:
    """The key's backend as a label: the signer class's `backend` ("aws_kms", "pkcs11", …),
    "local" for keys in process memory (keystores, test keys)."""
    return str(getattr(signer, "backend", "local"))


async def sign_checked(signer: Signer, digest: bytes) -> Signature:
    """`signer`'s signature over `digest`, proven to recover to `signer.address` before use."""
    signature = await signer.sign_digest(digest)
    if proven_for(signature, digest, signer.address):
        # Proven by the backend's own trial recovery against this address's public key
        # (KMS): a second recovery (~40 us) would prove the same thing again.
        return signature
    recovered = recover_public_key(digest, signature.r, signature.s, signature.y_parity)
    if recovered is None or keccak256(recovered[1:])[-20:] != bytes.fromhex(signer.address[2:]):
        raise SigningFailed(
            f"the signature from {signer.key_name} does not recover to {signer.address}; "
            "nothing was sent"
        )
    return signature


class KeyInfo(Protocol):
    """What a backend learnt of one key at load: its address and what operators call it."""

    @property
    def address(self) -> str: ...

    @property
    def key_name(self) -> str: ...


InfoT = TypeVar("InfoT", bound=KeyInfo)


class BackendSigner(Generic[InfoT]):
    """Base for a backend's Signer over one key described by `info`: the address and the key
    name are the info's; subclasses set `backend` and implement `sign_digest`."""

    backend = "local"  # the metrics and the operator page name keys by this
    info: InfoT

    @property
    def address(self) -> str:
        return self.info.address

    @property
    def key_name(self) -> str:
        return self.info.key_name

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.address}, {self.key_name})"


class SignerWrapper:
    """Base for a Signer that adds to another (metrics, the policy guard): it keeps the inner
    signer's address and name; subclasses override `sign_digest`."""

    def __init__(self, inner: Signer) -> None:
        self._inner = inner

    @property
    def address(self) -> str:
        return self._inner.address

    @property
    def key_name(self) -> str:
        return self._inner.key_name

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._inner!r})"

    async def sign_digest(self, digest: bytes) -> Signature:
        return await self._inner.sign_digest(digest)
