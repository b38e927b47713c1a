"""keys.registry: address → Signer lookup, case-insensitive in, EIP-55 out."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from eth_account import Account
from eth_utils import to_checksum_address

from signer_proxy.errors import InvalidParams, UnknownAccount
from signer_proxy.eth.ecdsa import keccak256
from signer_proxy.keys import KeyRegistry
from signer_proxy.keys.local import LocalKeySigner

KEYS = [keccak256(b"registry key %d" % i) for i in range(3)]


@pytest.fixture
def signers() -> list[LocalKeySigner]:
    return [LocalKeySigner(key, name=f"key-{i}") for i, key in enumerate(KEYS)]


def test_registry_addresses_are_eip55_in_configured_order(signers: list[LocalKeySigner]) -> None:
    registry = KeyRegistry(signers)

    assert registry.addresses == tuple(Account.from_key(k).address for k in KEYS)
    assert all(a == to_checksum_address(a) for a in registry.addresses)
    assert len(registry) == 3


@pytest.mark.parametrize(
    "spell",
    [
        pytest.param(lambda a: a, id="checksummed"),
        pytest.param(str.lower, id="lower"),
        pytest.param(lambda a: "0x" + a[2:].upper(), id="upper"),
        pytest.param(lambda a: "0X" + a[2:], id="upper-prefix"),
    ],
)
def test_registry_get_is_case_insensitive(
    signers: list[LocalKeySigner], spell: Callable[[str], str]
) -> None:
    registry = KeyRegistry(signers)
    target = signers[1]

    assert registry.get(spell(target.address)) is target


def test_registry_unknown_account_names_it_and_points_to_eth_accounts(
    signers: list[LocalKeySigner],
) -> None:
    registry = KeyRegistry(signers[:1])
    stranger = signers[2].address

    with pytest.raises(UnknownAccount) as info:
        registry.get(stranger)

    assert isinstance(info.value, InvalidParams)
    assert info.value.code == -32602
    assert stranger in info.value.message
    assert "eth_accounts" in info.value.message


def test_registry_duplicates_collapse_to_the_first(signers: list[LocalKeySigner]) -> None:
    again = LocalKeySigner(KEYS[0], name="same key, another name")

    registry = KeyRegistry([signers[0], signers[1], again])

    assert len(registry) == 2
    assert registry.addresses == (signers[0].address, signers[1].address)
    assert registry.get(signers[0].address) is signers[0]


def test_registry_empty_knows_nobody() -> None:
    registry = KeyRegistry([])

    assert registry.addresses == () and len(registry) == 0
    with pytest.raises(UnknownAccount):
        registry.get("0x0000000000000000000000000000000000000000")


def test_local_signer_repr_never_shows_the_key(signers: list[LocalKeySigner]) -> None:
    text = repr(signers[0])

    assert signers[0].address in text
    assert KEYS[0].hex() not in text
