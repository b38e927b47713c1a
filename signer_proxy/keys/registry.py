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

    def narrowed(self, addresses: frozenset[str], chain: str) -> KeyRegistry:
        """Only the keys of `addresses` (lower-case): a chain's `keys:` list. Another of this
        registry's keys is refused by a message naming the chain."""
        return ChainKeys(self, addresses, chain)


class ChainKeys(KeyRegistry):
    """A registry narrowed to one chain's keys."""

    def __init__(self, whole: KeyRegistry, addresses: frozenset[str], chain: str) -> None:
        super().__init__(s for s in whole._by_address.values() if s.address.lower() in addresses)
        self._whole = whole
        self._chain = chain

    def get(self, address: str) -> Signer:
        if address.lower() not in self._by_address and address.lower() in self._whole._by_address:
            raise UnknownAccount(
                f"{address} does not sign on chain {self._chain}: that chain's keys list leaves "
                "it out; eth_accounts on this chain lists the addresses that do"
            )
        return super().get(address)
