"""Address → Signer lookup; immutable, so a reload can swap a whole registry atomically."""

from __future__ import annotations

from collections.abc import Iterable

from signer_proxy.errors import UnknownAccount
from signer_proxy.keys.signer import Signer


class KeyRegistry:
    """The keys this proxy signs with, looked up by address (case-insensitive, EIP-55 out)."""

    def __init__(self, signers: Iterable[Signer]) -> None:
        self._by_address: dict[str, Signer] = {}
        for signer in signers:
            self._by_address.setdefault(signer.address.lower(), signer)
        self.addresses: tuple[str, ...] = tuple(s.address for s in self._by_address.values())

    def __len__(self) -> int:
        return len(self._by_address)

    def get(self, address: str) -> Signer:
        """The signer for `address`, or UnknownAccount naming it."""
        signer = self._by_address.get(address.lower())
        if signer is None:
            raise UnknownAccount(
                f"{address} is not an account this proxy holds a key for; "
                "eth_accounts lists the addresses it can sign for"
            )
        return signer
