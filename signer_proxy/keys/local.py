"""A signer holding a raw private key in memory: for tests and oracles, never for production."""

from __future__ import annotations

import coincurve

from signer_proxy.eth.ecdsa import Signature, address_from_public_key


class LocalKeySigner:
    """Deterministic (RFC 6979) secp256k1 signer over a private key held in process memory."""

    def __init__(self, private_key: bytes, name: str = "local key") -> None:
        self._key = coincurve.PrivateKey(private_key)
        self.public_key = self._key.public_key.format(compressed=False)
        self._address = address_from_public_key(self.public_key)
        self._name = name

    @property
    def address(self) -> str:
        return self._address

    @property
    def key_name(self) -> str:
        return self._name

    def __repr__(self) -> str:  # never the key itself
        return f"LocalKeySigner({self._address})"

    async def sign_digest(self, digest: bytes) -> Signature:
        raw = self._key.sign_recoverable(digest, hasher=None)
        return Signature(
            int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:64], "big"), raw[64]
        )
