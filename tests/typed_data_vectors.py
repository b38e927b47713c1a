# ruff: noqa: E501  (a table: one vector a line reads better than wrapped)
"""EIP-712 vectors: every edge of issue 19, written from the EIP-712 specification and from
reading @metamask/eth-sig-util's and viem's encoders and test suites.

Each vector is (id, version, typed data, expected): expected is OK (sign; the digest must equal
eth-sig-util's and viem's) or a Refuse(fragment, why). `why` says which is true, and the tests
check it against the libraries themselves: "refused" (eth-sig-util or viem refuses it),
"differ" (both accept it but hash it differently) or "policy" (both accept it and agree; we
refuse it anyway, for the reason docs/signing.md gives). Domains use chainId 31337 (anvil's).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Literal

CHAIN_ID = 31337
CONTRACT = "0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC"
COW = "0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826"
BOB = "0xbBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB"

DOMAIN_TYPES = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]
MAIL: dict[str, Any] = {
    "types": {
        "EIP712Domain": DOMAIN_TYPES,
        "Person": [{"name": "name", "type": "string"}, {"name": "wallet", "type": "address"}],
        "Mail": [
            {"name": "from", "type": "Person"},
            {"name": "to", "type": "Person"},
            {"name": "contents", "type": "string"},
        ],
    },
    "primaryType": "Mail",
    "domain": {"name": "Ether Mail", "version": "1", "chainId": CHAIN_ID,
               "verifyingContract": CONTRACT},
    "message": {
        "from": {"name": "Cow", "wallet": COW},
        "to": {"name": "Bob", "wallet": BOB},
        "contents": "Hello, Bob!",
    },
}  # fmt: skip


@dataclass(frozen=True)
class Refuse:
    fragment: str
    why: Literal["refused", "differ", "policy"]


OK = None
Expected = Refuse | None


def single(type_name: str, value: Any, *, extra_types: dict[str, Any] | None = None) -> Any:
    """Typed data whose message is one field `v` of `type_name` holding `value`."""
    return {
        "types": {
            "EIP712Domain": [{"name": "name", "type": "string"},
                             {"name": "chainId", "type": "uint256"}],
            "T": [{"name": "v", "type": type_name}],
            **(extra_types or {}),
        },
        "primaryType": "T",
        "domain": {"name": "edge", "chainId": CHAIN_ID},
        "message": {"v": value},
    }  # fmt: skip


def mail(**changes: Any) -> Any:
    """MAIL with top-level keys replaced; "domain"/"message" merge into the originals."""
    data = copy.deepcopy(MAIL)
    for key, value in changes.items():
        if key in ("domain", "message") and isinstance(value, dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return data


def without(data: Any, where: str, key: str) -> Any:
    data = copy.deepcopy(data)
    del data[where][key]
    return data


def domain_types(*names: str) -> list[dict[str, str]]:
    kinds = {"name": "string", "version": "string", "chainId": "uint256",
             "verifyingContract": "address", "salt": "bytes32"}  # fmt: skip
    return [{"name": n, "type": kinds[n]} for n in names]


NESTED_TYPES = {
    "Node": [{"name": "label", "type": "string"}, {"name": "children", "type": "Node[]"}],
}
SALT = "0x" + "f2" * 32

VECTORS: list[tuple[str, str, Any, Expected]] = [
    # -- accepted: the specification's example and its variations
    ("spec-mail", "V4", MAIL, OK),
    ("spec-mail-v3", "V3", MAIL, OK),
    ("empty-string", "V4", mail(message={"contents": ""}), OK),
    ("unicode-string", "V4", mail(message={"contents": "Grüße ✓ 🐄"}), OK),
    ("extra-message-field-ignored", "V4", mail(message={"extra": "not signed"}), OK),
    ("unused-type", "V4", mail(types={**MAIL["types"], "Unused": [{"name": "x", "type": "uint8"}]}), OK),
    ("primary-type-eip712domain", "V4", mail(primaryType="EIP712Domain"), OK),
    ("domain-chainid-hex-string", "V4", mail(domain={"chainId": hex(CHAIN_ID)}), OK),
    ("domain-chainid-decimal-string", "V4", mail(domain={"chainId": str(CHAIN_ID)}), OK),
    ("verifying-contract-lowercase", "V4", mail(domain={"verifyingContract": CONTRACT.lower()}), OK),
    ("domain-with-salt", "V4",
     mail(types={**MAIL["types"], "EIP712Domain": domain_types("name", "chainId", "salt")},
          domain={"name": "s", "chainId": CHAIN_ID, "salt": SALT}) | {"domain": {"name": "s", "chainId": CHAIN_ID, "salt": SALT}}, OK),
    ("domain-name-only", "V4",
     mail(types={**MAIL["types"], "EIP712Domain": domain_types("name")}) | {"domain": {"name": "n"}}, OK),
    ("domain-empty-no-type", "V4",
     {**without(mail(), "types", "EIP712Domain"), "domain": {}}, OK),
    ("domain-fields-out-of-order", "V4",
     mail(types={**MAIL["types"], "EIP712Domain": domain_types("chainId", "name", "version", "verifyingContract")}), OK),
    ("address-lowercase", "V4", single("address", COW.lower()), OK),
    ("address-checksummed", "V4", single("address", COW), OK),
    ("bool-true", "V4", single("bool", True), OK),
    ("bool-false", "V4", single("bool", False), OK),
    ("bytes-empty", "V4", single("bytes", "0x"), OK),
    ("bytes-hex", "V4", single("bytes", "0x" + "00ff" * 50), OK),
    ("bytes1", "V4", single("bytes1", "0x7f"), OK),
    ("bytes32", "V4", single("bytes32", "0x" + "ab" * 32), OK),
    ("bytes16", "V4", single("bytes16", "0x" + "cd" * 16), OK),
    ("uint256-max-decimal-string", "V4", single("uint256", str(2**256 - 1)), OK),
    ("uint256-hex-string", "V4", single("uint256", "0x" + "ff" * 32), OK),
    ("uint256-number", "V4", single("uint256", 123456789), OK),
    ("uint256-max-safe-number", "V4", single("uint256", 2**53 - 1), OK),
    ("uint8-max", "V4", single("uint8", 255), OK),
    ("int8-min", "V4", single("int8", -128), OK),
    ("int256-negative-string", "V4", single("int256", str(-(2**255))), OK),
    ("int64-negative-number", "V4", single("int64", -5), OK),
    ("uint-zero", "V4", single("uint32", 0), OK),
    ("string-array", "V4", single("string[]", ["a", "", "ç"]), OK),
    ("empty-array", "V4", single("uint256[]", []), OK),
    ("fixed-array-right-length", "V4", single("bytes32[2]", ["0x" + "01" * 32, "0x" + "02" * 32]), OK),
    ("nested-arrays", "V4", single("uint8[][]", [[1, 2], [], [3]]), OK),
    ("struct-array", "V4",
     single("P[]", [{"a": COW}, {"a": BOB}], extra_types={"P": [{"name": "a", "type": "address"}]}), OK),
    ("recursive-type", "V4",
     single("Node", {"label": "root", "children": [{"label": "leaf", "children": []}]},
            extra_types=NESTED_TYPES), OK),
    ("eth-sig-util-test-bytes-and-bool", "V4",
     single("X", {"b": "0x0102", "f": True, "n": "-1"},
            extra_types={"X": [{"name": "b", "type": "bytes"}, {"name": "f", "type": "bool"},
                               {"name": "n", "type": "int256"}]}), OK),
    # -- bytesN
    ("bytes32-text", "V4", single("bytes32", "hello"), Refuse("a bytes32: 0x and exactly 64 hex digits", "refused")),
    ("bytes32-short-hex", "V4", single("bytes32", "0x01"), Refuse("exactly 64 hex digits", "refused")),
    ("bytes32-long-hex", "V4", single("bytes32", "0x" + "01" * 33), Refuse("exactly 64 hex digits", "refused")),
    ("bytes4-number", "V4", single("bytes4", 5), Refuse("a bytes4", "refused")),
    ("bytes-text", "V4", single("bytes", "hello"), Refuse("bytes as 0x and an even number", "differ")),
    ("bytes-odd-hex", "V4", single("bytes", "0x123"), Refuse("bytes as 0x and an even number", "policy")),
    ("bytes-number", "V4", single("bytes", 1), Refuse("bytes as 0x", "refused")),
    # -- missing, null, undefined
    ("missing-string-field", "V4", without(mail(), "message", "contents"), Refuse("message.contents: expected a value of type string; it is missing", "refused")),
    ("missing-field-v3", "V3", without(mail(), "message", "contents"), Refuse("message.contents", "refused")),
    ("missing-struct-field", "V4", without(mail(), "message", "to"), Refuse("message.to", "refused")),
    ("null-struct-v4", "V4", mail(message={"to": None}), Refuse("null is refused", "refused")),
    ("null-string", "V4", mail(message={"contents": None}), Refuse("message.contents: expected a string", "refused")),
    ("null-address", "V4", single("address", None), Refuse("expected an address", "refused")),
    ("null-uint", "V4", single("uint256", None), Refuse("expected a uint256", "refused")),
    ("null-bytes", "V4", single("bytes", None), Refuse("bytes as 0x", "refused")),
    # -- numbers
    ("uint-float", "V4", single("uint256", 1.5), Refuse("expected a uint256", "refused")),
    ("uint-negative", "V4", single("uint256", -1), Refuse("a uint256 in [0, ", "refused")),
    ("uint8-out-of-range", "V4", single("uint8", 256), Refuse("a uint8 in [0, 255]", "refused")),
    ("int8-out-of-range", "V4", single("int8", 128), Refuse("an int8 in [-128, 127]", "refused")),
    ("uint256-overflow", "V4", single("uint256", str(2**256)), Refuse("a uint256 in [0, ", "refused")),
    ("uint-number-unsafe", "V4", single("uint256", 2**60), Refuse("JavaScript wallets round", "policy")),
    ("uint-empty-string", "V4", single("uint256", ""), Refuse("expected a uint256", "policy")),
    ("uint-padded-string", "V4", single("uint256", " 1"), Refuse("expected a uint256", "policy")),
    ("uint-text", "V4", single("uint256", "ten"), Refuse("expected a uint256", "refused")),
    ("uint-bool", "V4", single("uint256", True), Refuse("expected a uint256", "refused")),
    ("uint-bare", "V4", single("uint", 1), Refuse("size the integer types", "policy")),
    # -- booleans
    ("bool-string-false", "V4", single("bool", "false"), Refuse("a JSON boolean", "refused")),
    ("bool-number", "V4", single("bool", 1), Refuse("a JSON boolean", "refused")),
    # -- addresses
    ("address-no-0x", "V4", single("address", COW[2:]), Refuse("expected an address", "refused")),
    ("address-bad-checksum", "V4", single("address", COW[:-1] + "7"), Refuse("the checksum is wrong", "refused")),
    ("address-short", "V4", single("address", "0x1234"), Refuse("expected an address", "refused")),
    ("address-number", "V4", single("address", 1), Refuse("expected an address", "refused")),
    ("verifying-contract-bad-checksum", "V4", mail(domain={"verifyingContract": CONTRACT.replace("Cc", "cC", 1)}), Refuse("domain.verifyingContract", "refused")),
    ("verifying-contract-uppercase", "V4", mail(domain={"verifyingContract": "0x" + CONTRACT[2:].upper()}), Refuse("the checksum is wrong", "refused")),
    # -- strings
    ("string-number", "V4", mail(message={"contents": 5}), Refuse("message.contents: expected a string", "policy")),
    # -- arrays
    ("arrays-in-v3", "V3", single("uint8[]", [1]), Refuse("does not support: use eth_signTypedData_v4", "refused")),
    ("fixed-array-wrong-length", "V4", single("uint8[3]", [1, 2]), Refuse("3 items for uint8[3]", "policy")),
    ("array-not-list", "V4", single("uint8[]", 1), Refuse("an array of uint8", "refused")),
    ("recursive-null-child-v4", "V4",
     single("Node", {"label": "root", "children": [None]}, extra_types=NESTED_TYPES), Refuse("null is refused", "refused")),
    # -- types
    ("unknown-type", "V4", single("Thing", {}), Refuse("is none of these", "refused")),
    ("function-type", "V4", single("function", "0x" + "00" * 24), Refuse("is none of these", "refused")),
    ("bytes33-type", "V4", single("bytes33", "0x" + "00" * 33), Refuse("is none of these", "refused")),
    ("primary-type-unknown", "V4", mail(primaryType="Letter"), Refuse("primaryType: expected the name", "refused")),
    ("struct-named-like-atomic", "V4", mail(types={**MAIL["types"], "address": [{"name": "x", "type": "uint8"}]}), Refuse("not an atomic type's name", "refused")),
    ("duplicate-field-name", "V4", single("uint8", 1) | {"types": {"EIP712Domain": domain_types("name", "chainId"), "T": [{"name": "v", "type": "uint8"}, {"name": "v", "type": "uint8"}]}}, Refuse("'v' is repeated", "policy")),
    # -- the domain
    ("no-eip712domain-type", "V4", without(mail(), "types", "EIP712Domain"), Refuse("types has no EIP712Domain", "differ")),
    ("domain-unknown-field", "V4",
     mail(types={**MAIL["types"], "EIP712Domain": [*DOMAIN_TYPES, {"name": "extra", "type": "string"}]}, domain={"extra": "x"}),
     Refuse("only EIP-712's domain fields", "policy")),
    ("domain-field-wrong-type", "V4",
     mail(types={**MAIL["types"], "EIP712Domain": [*DOMAIN_TYPES[:2], {"name": "chainId", "type": "uint64"}, DOMAIN_TYPES[3]]}),
     Refuse("types.EIP712Domain.chainId: expected type uint256", "policy")),
    ("domain-missing-listed-field", "V4", without(mail(), "domain", "version"), Refuse("domain.version", "refused")),
    ("domain-unlisted-chainid", "V4",
     mail(types={**MAIL["types"], "EIP712Domain": domain_types("name", "version", "verifyingContract")}),
     Refuse("which types.EIP712Domain does not list", "policy")),
    ("domain-chainid-float", "V4", mail(domain={"chainId": 31337.5}), Refuse("domain.chainId", "refused")),
    ("salt-short", "V4",
     mail(types={**MAIL["types"], "EIP712Domain": domain_types("name", "chainId", "salt")}) | {"domain": {"name": "s", "chainId": CHAIN_ID, "salt": "0x01"}},
     Refuse("domain.salt: expected a bytes32", "refused")),
]  # fmt: skip
