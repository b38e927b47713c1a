"""How a policy file may name a key (address, key ARN or file, --kms-key as given), resolved
to the key's address over the keys loaded so far."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from signer_proxy.keys.aws_kms import KmsSigner
from signer_proxy.keys.signer import Signer


def key_names(signers: Sequence[Signer]) -> dict[str, str]:
    """How the policy file may name each key: address, key ARN or file, or as given in
    --kms-key (with or without its ?options)."""
    names: dict[str, str] = {}
    for signer in signers:
        names[signer.address.lower()] = signer.address
        names[signer.key_name] = signer.address
        if isinstance(signer, KmsSigner):
            names[signer.info.ref] = signer.address
            names.setdefault(signer.info.ref.partition("?")[0], signer.address)
    return names


def key_resolver(signers: Sequence[Signer]) -> Callable[[str], str | None]:
    """Resolve a policy file's key reference to an address over `signers`."""
    names = key_names(signers)
    return lambda ref: names.get(ref.lower() if ref.startswith("0x") else ref)


class KeyNames:
    """Policy key references over every load so far, the newest winning: a reload re-binds
    the policy with it, so a retargeted alias follows its new key, and a reference whose key
    left keeps its old address (which no longer signs: the rule fails closed)."""

    def __init__(self) -> None:
        self._names: dict[str, str] = {}

    def learn(self, signers: Sequence[Signer]) -> None:
        self._names.update(key_names(signers))

    def resolve(self, ref: str) -> str | None:
        return self._names.get(ref.lower() if ref.startswith("0x") else ref)
