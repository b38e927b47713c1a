"""messages: EIP-191 and EIP-712 digests, checked against eth-account (the oracle) and the
EIP-712 specification's own example; v of every message signature is 27/28."""

from __future__ import annotations

import json
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import _hash_eip191_message, encode_defunct, encode_typed_data

from signer_proxy.errors import InvalidParams
from signer_proxy.eth.ecdsa import keccak256
from signer_proxy.eth.messages import (
    load_typed_data,
    message_signature_bytes,
    personal_message_digest,
    personal_sign_bytes,
    personal_sign_order,
    typed_data_chain_id,
    typed_data_digest,
)
from signer_proxy.keys.local import LocalKeySigner

PRIVATE_KEY = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")
SIGNER = LocalKeySigner(PRIVATE_KEY)
ADDRESS = "0x" + "11" * 20

# The EIP-712 specification's example (Example.js): its digest is published in the EIP.
MAIL: dict[str, Any] = {
    "types": {
        "EIP712Domain": [
            {"name": "name", "type": "string"},
            {"name": "version", "type": "string"},
            {"name": "chainId", "type": "uint256"},
            {"name": "verifyingContract", "type": "address"},
        ],
        "Person": [
            {"name": "name", "type": "string"},
            {"name": "wallet", "type": "address"},
        ],
        "Mail": [
            {"name": "from", "type": "Person"},
            {"name": "to", "type": "Person"},
            {"name": "contents", "type": "string"},
        ],
    },
    "primaryType": "Mail",
    "domain": {
        "name": "Ether Mail",
        "version": "1",
        "chainId": 1,
        "verifyingContract": "0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC",
    },
    "message": {
        "from": {"name": "Cow", "wallet": "0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826"},
        "to": {"name": "Bob", "wallet": "0xbBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB"},
        "contents": "Hello, Bob!",
    },
}
MAIL_DIGEST = "be609aee343fb3c4b28e1df9e632fca64fcfaede20f02e86244efddf30957bd2"

# v4: arrays of structs and of atoms, nested structs, bytes, negative ints, bools.
GROUP: dict[str, Any] = {
    "types": {
        "EIP712Domain": [
            {"name": "name", "type": "string"},
            {"name": "chainId", "type": "uint256"},
            {"name": "salt", "type": "bytes32"},
        ],
        "Member": [
            {"name": "wallets", "type": "address[]"},
            {"name": "weight", "type": "int64"},
            {"name": "active", "type": "bool"},
        ],
        "Group": [
            {"name": "name", "type": "string"},
            {"name": "members", "type": "Member[]"},
            {"name": "tags", "type": "bytes32[2]"},
            {"name": "blob", "type": "bytes"},
        ],
    },
    "primaryType": "Group",
    "domain": {"name": "Groups", "chainId": "0x7a69", "salt": "0x" + "ab" * 32},
    "message": {
        "name": "core",
        "members": [
            {"wallets": ["0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"], "weight": -5,
             "active": True},
            {"wallets": [], "weight": str(2**63 - 1), "active": False},
        ],
        "tags": ["0x" + "01" * 32, "0x" + "02" * 32],
        "blob": "0x" + "ff" * 100,
    },
}  # fmt: skip

# Domain with verifyingContract only; large integers as decimal strings.
PERMIT: dict[str, Any] = {
    "types": {
        "EIP712Domain": [{"name": "verifyingContract", "type": "address"}],
        "Permit": [
            {"name": "owner", "type": "address"},
            {"name": "spender", "type": "address"},
            {"name": "value", "type": "uint256"},
            {"name": "nonce", "type": "uint256"},
            {"name": "deadline", "type": "uint256"},
        ],
    },
    "primaryType": "Permit",
    "domain": {"verifyingContract": "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"},
    "message": {
        "owner": "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
        "spender": "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        "value": str(2**256 - 1),
        "nonce": 0,
        "deadline": "12345678901234567890",
    },
}

TYPED_CASES = [
    pytest.param(MAIL, id="eip712-spec-mail"),
    pytest.param(GROUP, id="v4-arrays-nested-bytes-ints-salt"),
    pytest.param(PERMIT, id="verifying-contract-only-domain"),
    pytest.param({**MAIL, "message": {**MAIL["message"], "contents": ""}}, id="empty-string"),
]

MESSAGES = [
    pytest.param(b"", id="empty"),
    pytest.param(b"Hello", id="ascii"),
    pytest.param("ünïcødé ✓".encode(), id="utf8"),
    pytest.param(keccak256(b"looks like a hash"), id="32-bytes-still-prefixed"),
    pytest.param(bytes(range(256)) * 4, id="1024-bytes-length-in-decimal"),
]


@pytest.mark.parametrize("message", MESSAGES)
def test_personal_message_digest_is_eip191_version_e(message: bytes) -> None:
    assert personal_message_digest(message) == _hash_eip191_message(
        encode_defunct(primitive=message)
    )


@pytest.mark.parametrize("message", MESSAGES)
async def test_message_signature_matches_eth_account_byte_for_byte(message: bytes) -> None:
    signature = await SIGNER.sign_digest(personal_message_digest(message))

    expected = Account.sign_message(encode_defunct(primitive=message), PRIVATE_KEY)

    assert message_signature_bytes(signature) == bytes(expected.signature)


@pytest.mark.parametrize("message", MESSAGES)
async def test_message_signature_v_is_27_or_28_never_eip155(message: bytes) -> None:
    signature = await SIGNER.sign_digest(personal_message_digest(message))

    encoded = message_signature_bytes(signature)

    assert len(encoded) == 65
    assert encoded[64] == 27 + signature.y_parity
    assert encoded[:64] == signature.r.to_bytes(32, "big") + signature.s.to_bytes(32, "big")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param("0x48656c6c6f", b"Hello", id="hex-is-bytes"),
        pytest.param("0X48656C6C6F", b"0X48656C6C6F", id="0X-prefix-is-text-as-metamask"),
        pytest.param("Hello", b"Hello", id="text"),
        pytest.param("0x", b"", id="empty-hex"),
        pytest.param("", b"", id="empty-text"),
        pytest.param("0xnot hex", b"0xnot hex", id="0x-prefixed-text"),
        pytest.param("héllo", "héllo".encode(), id="utf8-text"),
    ],
)
def test_personal_sign_bytes_hex_or_utf8(data: str, expected: bytes) -> None:
    assert personal_sign_bytes(data) == expected


@pytest.mark.parametrize("data", [None, 5, ["0x00"], {"a": 1}])
def test_personal_sign_bytes_refuses_non_strings(data: Any) -> None:
    with pytest.raises(InvalidParams, match="UTF-8 text"):
        personal_sign_bytes(data)


def test_typed_data_digest_matches_the_eip712_specification_example() -> None:
    assert typed_data_digest(MAIL).hex() == MAIL_DIGEST


@pytest.mark.parametrize("data", TYPED_CASES)
def test_typed_data_digest_matches_eth_account(data: dict[str, Any]) -> None:
    expected = _hash_eip191_message(encode_typed_data(full_message=json.loads(json.dumps(data))))

    assert typed_data_digest(data) == expected


@pytest.mark.parametrize("data", TYPED_CASES)
async def test_typed_data_signature_matches_eth_account_byte_for_byte(data: dict[str, Any]) -> None:
    signature = await SIGNER.sign_digest(typed_data_digest(data))

    expected = Account.sign_typed_data(PRIVATE_KEY, full_message=json.loads(json.dumps(data)))

    assert message_signature_bytes(signature) == bytes(expected.signature)
    assert bytes(expected.signature)[64] in (27, 28)


def test_typed_data_digest_primary_type_eip712domain_signs_the_domain_alone() -> None:
    data = {**MAIL, "primaryType": "EIP712Domain", "message": {}}
    domain_only = {
        "types": {"EIP712Domain": MAIL["types"]["EIP712Domain"]},
        "domain": MAIL["domain"],
    }
    separator = _hash_eip191_message(
        encode_typed_data(full_message={**domain_only, "primaryType": "Unused", "message": {},
                                        "types": {**domain_only["types"], "Unused": []}})
    )  # fmt: skip

    digest = typed_data_digest(data)

    assert digest != separator  # not the message form: 0x1901 ‖ domainSeparator only
    assert digest == keccak256(b"\x19\x01" + _domain_separator(MAIL))


def _domain_separator(data: dict[str, Any]) -> bytes:
    return bytes(encode_typed_data(full_message=data).header)


def test_typed_data_digest_uses_the_given_primary_type_like_wallets() -> None:
    # A type unrelated to the others makes eth-account's derived primary type ambiguous;
    # wallets use primaryType as given, and so do we.
    data = {**MAIL, "types": {**MAIL["types"], "Unused": [{"name": "x", "type": "uint8"}]}}

    assert typed_data_digest(data).hex() == MAIL_DIGEST


def test_typed_data_digest_v3_refuses_arrays_naming_the_field() -> None:
    with pytest.raises(InvalidParams) as info:
        typed_data_digest(GROUP, allow_arrays=False)

    assert "types.Member.wallets" in info.value.message
    assert "address[] is an array type" in info.value.message
    assert "eth_signTypedData_v4" in info.value.message
    assert typed_data_digest(MAIL, allow_arrays=False).hex() == MAIL_DIGEST


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        pytest.param({**MAIL, "primaryType": "Letter"}, "primaryType: expected the name", id="pt"),
        pytest.param(
            {**PERMIT, "message": {**PERMIT["message"], "value": str(2**256)}},
            "message.value: expected a uint256 in [0, ",
            id="uint256-overflow",
        ),
        pytest.param(
            {**PERMIT, "message": {**PERMIT["message"], "owner": "0x1234"}},
            "message.owner: expected an address",
            id="bad-address",
        ),
    ],
)
def test_typed_data_digest_refuses_bad_data(data: dict[str, Any], fragment: str) -> None:
    with pytest.raises(InvalidParams) as info:
        typed_data_digest(data)

    assert fragment in info.value.message


def test_personal_sign_bytes_refuses_odd_hex_where_metamask_and_viem_differ() -> None:
    with pytest.raises(InvalidParams) as info:
        personal_sign_bytes("0x123")

    assert "odd number of hex digits" in info.value.message


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        pytest.param("hi", ADDRESS, ("hi", ADDRESS), id="message-address"),
        pytest.param(ADDRESS, "hi", ("hi", ADDRESS), id="address-message-swapped"),
        pytest.param(ADDRESS, "0x" + "22" * 20, (ADDRESS, "0x" + "22" * 20), id="both-addresses"),
        pytest.param(ADDRESS, "0x1234", ("0x1234", ADDRESS), id="hex-message-second"),
    ],
)
def test_personal_sign_order_is_metamasks(first: str, second: str, expected: Any) -> None:
    assert personal_sign_order(first, second) == expected


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        pytest.param("{not json", "not valid JSON", id="bad-json"),
        pytest.param([{"type": "string", "name": "m", "value": "hi"}], "legacy (v1)", id="v1"),
        pytest.param(json.dumps([{"type": "string"}]), "legacy (v1)", id="v1-as-string"),
        pytest.param(5, "must be an object", id="number"),
        pytest.param({"types": {}, "domain": {}}, "has no primaryType, message", id="missing"),
        pytest.param({**MAIL, "types": []}, "types must map", id="types-list"),
        pytest.param({**MAIL, "domain": "x"}, "domain and message must be objects", id="domain"),
        pytest.param({**MAIL, "primaryType": 1}, "primaryType must be a type name", id="pt-int"),
    ],
)
def test_load_typed_data_refuses_with_a_helpful_message(value: Any, fragment: str) -> None:
    with pytest.raises(InvalidParams) as info:
        load_typed_data(value)

    assert fragment in info.value.message


def test_load_typed_data_accepts_an_object_or_a_json_string() -> None:
    assert load_typed_data(MAIL) == load_typed_data(json.dumps(MAIL)) == MAIL


@pytest.mark.parametrize(
    ("chain_id", "expected"),
    [
        pytest.param(1, 1, id="number"),
        pytest.param("0x7a69", 31337, id="hex"),
        pytest.param("31337", 31337, id="decimal-string"),
        pytest.param(None, None, id="null"),
    ],
)
def test_typed_data_chain_id(chain_id: Any, expected: int | None) -> None:
    assert typed_data_chain_id({"domain": {"chainId": chain_id}}) == expected


def test_typed_data_chain_id_absent_and_invalid() -> None:
    assert typed_data_chain_id({"domain": {}}) is None
    with pytest.raises(InvalidParams, match=r"domain\.chainId"):
        typed_data_chain_id({"domain": {"chainId": "mainnet"}})


@pytest.mark.parametrize("chain_id", ["²", "³¹³³⁷", "\u0661"])
def test_typed_data_chain_id_of_other_scripts_digits_is_invalid_params(chain_id: str) -> None:
    """str.isdigit() holds for superscript and Arabic-Indic digits, which int() refuses or
    reads: bad input (-32602), not an internal error (found by review)."""
    with pytest.raises(InvalidParams, match=r"domain\.chainId"):
        typed_data_chain_id({"domain": {"chainId": chain_id}})
