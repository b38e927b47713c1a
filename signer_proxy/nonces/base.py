"""The `NonceManager` seam and its `Lease`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

PendingCount = Callable[[str], Awaitable[int]]


class Lease(Protocol):
    """One reserved nonce: commit it once used (or possibly used), release it if surely not."""

    @property
    def nonce(self) -> int: ...

    async def record(self, raw: bytes) -> None:
        """Keep the signed transaction about to be sent for this nonce; raises
        NonceLeaseExpired (send nothing) when the nonce may already be someone else's."""
        ...

    async def commit(self, *, sent: bool = True) -> None:
        """The nonce is used; sent=False: by something else, so forget the recorded bytes."""
        ...

    async def release(self) -> bool:
        """The nonce is unused: hand it out again and forget the recorded bytes. False when
        that could not be done (the lease ran out and was reaped, or the store failed): the
        recorded bytes then stay with the store, which may send them."""
        ...


class NonceManager(Protocol):
    """Hands out nonces per address."""

    async def reserve(self, address: str) -> Lease:
        """A nonce no other live lease holds, and no lower than the node's pending count."""
        ...

    async def next_nonce(self, address: str) -> int:
        """The nonce the address's next reservation would get, reserving nothing: nonces
        leased or sent and not yet at the node count (an EIP-7702 authorization signs for
        it)."""
        ...

    async def resync(self, address: str) -> None:
        """Re-read the node after it said a nonce was wrong; leases out stay valid."""
        ...

    async def replaced(self, address: str, nonce: int, raw: bytes) -> None:
        """Our transaction at `nonce` was replaced (a fee bump or a cancel sent by the
        tracker): the bytes kept for a node that forgets its pool become `raw`, or the
        original would be sent again in their place."""
        ...
