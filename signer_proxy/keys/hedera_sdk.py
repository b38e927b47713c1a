"""A signer for Hedera's own Python SDK (`hiero-sdk-python`) backed by any of the proxy's keys.

The SDK signs through `Transaction.sign_with(public_key, signer)`, calling `signer(body_bytes)`
synchronously for every transaction body and expecting the raw 64-byte r ‖ s of keccak-256 of
those bytes (keys/hedera.py computes exactly that form, checked against the signer's address).
Our signers are asynchronous (KMS is a network call), so the SDK runs in a worker thread and
each body is signed on the event loop that owns the signer: `await sign_transaction(tx)`.

This is the seed's `create_hedera_signer()`: build it with `await HederaSdkSigner.create(...)`.
For a KMS key, the seed's start-up checks (key spec ECC_SECG_P256K1, usage SIGN_VERIFY, state
Enabled) are those `keys.aws_kms.load_key` applies to every key before a signer exists.
"""

from __future__ import annotations

import asyncio
from typing import Any

from hiero_sdk_python import PublicKey, Transaction

from signer_proxy.errors import SigningFailed
from signer_proxy.keys.hedera import HEDERA_ECDSA_DER_PREFIX, sign_hedera
from signer_proxy.keys.signer import Signer

# What a signer signs once to learn its public key when none is given (Signer has none).
_KEY_PROBE = b"signer-proxy: which Hedera public key is this?"


class HederaSdkSigner:
    """`signer(body_bytes) -> 64-byte r ‖ s` for the SDK, plus the key in the SDK's forms."""

    def __init__(
        self,
        signer: Signer,
        public_key: bytes,
        loop: asyncio.AbstractEventLoop,
        sign_timeout: float = 30.0,
    ) -> None:
        if len(public_key) != 33:
            raise ValueError("public_key must be the 33-byte compressed secp256k1 key")
        self._signer = signer
        self._loop = loop
        self._sign_timeout = sign_timeout
        self.public_key_bytes = public_key
        self.public_key: Any = PublicKey.from_bytes_ecdsa(public_key)

    @classmethod
    async def create(cls, signer: Signer, public_key: bytes | None = None) -> HederaSdkSigner:
        """The SDK signer for `signer`; without `public_key` one probe signature finds it."""
        if public_key is None:
            public_key = (await sign_hedera(signer, _KEY_PROBE)).public_key
        return cls(signer, public_key, asyncio.get_running_loop())

    @property
    def public_key_hex(self) -> str:
        """The compressed key, as Hedera accounts and the SDK's to_string_raw show it."""
        return self.public_key_bytes.hex()

    @property
    def public_key_der_hex(self) -> str:
        """The key as the SDKs print it in DER (to_string_der)."""
        return (HEDERA_ECDSA_DER_PREFIX + self.public_key_bytes).hex()

    def __call__(self, body_bytes: bytes) -> bytes:
        """Called by the SDK from a worker thread, never from the signer's own event loop."""
        future = asyncio.run_coroutine_threadsafe(
            sign_hedera(self._signer, bytes(body_bytes)), self._loop
        )
        result = future.result(self._sign_timeout)
        if result.public_key != self.public_key_bytes:
            raise SigningFailed(
                f"{self._signer.key_name} signed with another key than {self.public_key_hex}"
            )
        return result.signature

    async def sign_transaction(self, transaction: Any) -> Any:
        """Add this key's signature to every body of a frozen SDK transaction; returns it."""
        await asyncio.to_thread(transaction.sign_with, self.public_key, self)
        return transaction

    async def sign_transaction_bytes(self, transaction_bytes: bytes) -> bytes:
        """A serialized SDK transaction (Transaction.to_bytes) returned with this signature."""
        try:
            transaction = Transaction.from_bytes(transaction_bytes)
        except Exception as exc:  # the SDK raises several kinds on bytes it cannot parse
            raise ValueError(
                f"these bytes are not a serialized Hedera SDK transaction: {exc}"
            ) from None
        await self.sign_transaction(transaction)
        return bytes(transaction.to_bytes())
