"""Message digests: EIP-191 signed messages and EIP-712 typed data. Pure, no I/O.

Every digest here carries its EIP-191 prefix (0x19 ...): no method of this proxy signs a bare
hash a caller hands it, so a signed "message" can never be a transaction or an authorization.
"""

from __future__ import annotations

import re
from typing import Any

from eth_account._utils.encode_typed_data.encoding_and_hashing import hash_struct

from signer_proxy.errors import InvalidParams
from signer_proxy.eth.ecdsa import Signature, keccak256
from signer_proxy.eth.hexdata import parse_quantity
from signer_proxy.jsonrpc import loads

PERSONAL_MESSAGE_PREFIX = b"\x19Ethereum Signed Message:\n"
EIP712_PREFIX = b"\x19\x01"
# v of a message signature (personal_sign, eth_sign, EIP-712): 27 + parity, never EIP-155.
MESSAGE_V_OFFSET = 27

# EIP-712's domain fields in their canonical order (what ethers and eth-account use when the
# typed data names no EIP712Domain type of its own).
_DOMAIN_FIELDS = {
    "name": "string",
    "version": "string",
    "chainId": "uint256",
    "verifyingContract": "address",
    "salt": "bytes32",
}
_HEX_RE = re.compile(r"^0[xX](?:[0-9a-fA-F]{2})*$")
_ARRAY_TYPE_RE = re.compile(r"\[\d*\]$")


def personal_message_digest(message: bytes) -> bytes:
    """keccak(0x19 "Ethereum Signed Message:\\n" ‖ len(message) in decimal ‖ message)."""
    return keccak256(PERSONAL_MESSAGE_PREFIX + str(len(message)).encode() + message)


def personal_sign_bytes(data: Any) -> bytes:
    """The message bytes of personal_sign's data: 0x-hex as bytes, anything else as UTF-8 text.

    This is what wallets do: "0x48656c6c6f" signs the five bytes "Hello", while "Hello"
    (or "0xnot hex") signs its UTF-8 encoding.
    """
    if not isinstance(data, str):
        raise InvalidParams(
            "personal_sign's message must be a string: 0x-prefixed hex bytes or UTF-8 text"
        )
    if _HEX_RE.match(data):
        return bytes.fromhex(data[2:])
    return data.encode("utf-8")


def message_signature_bytes(signature: Signature) -> bytes:
    """r ‖ s ‖ v, 65 bytes, v = 27 + parity."""
    return signature.to_bytes65(MESSAGE_V_OFFSET)


# Bounds on typed data, checked before any of it is encoded (docs/security.md, "Limits"):
# real EIP-712 messages (permits, orders, votes) are a few levels deep with a handful of
# types; these leave room for far larger ones and keep the encoder's work small.
MAX_TYPED_DATA_DEPTH = 32  # nesting of objects and arrays in domain and message
MAX_TYPED_DATA_VALUES = 10_000  # objects, arrays and scalars in domain and message
MAX_TYPED_DATA_TYPES = 256
MAX_TYPED_DATA_FIELDS = 1_024  # fields over all types


def check_typed_data_bounds(value: dict[str, Any]) -> None:
    """InvalidParams when typed data is deeper or larger than the bounds above; walks the data
    without recursion, so the check itself cannot be made to recurse."""
    types = value["types"]
    if len(types) > MAX_TYPED_DATA_TYPES:
        raise InvalidParams(
            f"typed data defines {len(types)} types, over the limit of {MAX_TYPED_DATA_TYPES}"
        )
    fields = sum(len(f) for f in types.values())
    if fields > MAX_TYPED_DATA_FIELDS:
        raise InvalidParams(
            f"typed data types have {fields} fields in all, over the limit of "
            f"{MAX_TYPED_DATA_FIELDS}"
        )
    count = 0
    stack: list[tuple[Any, int, str]] = [(value["domain"], 1, "domain"), (value["message"], 1,
                                          "message")]  # fmt: skip
    while stack:
        item, depth, where = stack.pop()
        count += 1
        if count > MAX_TYPED_DATA_VALUES:
            raise InvalidParams(
                f"typed data holds over {MAX_TYPED_DATA_VALUES} values; it is too large to sign"
            )
        if depth > MAX_TYPED_DATA_DEPTH:
            raise InvalidParams(
                f"typed data {where} is nested over {MAX_TYPED_DATA_DEPTH} levels deep; it is "
                "too deep to sign"
            )
        if isinstance(item, dict):
            stack.extend((v, depth + 1, where) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1, where) for v in item)


def load_typed_data(value: Any) -> dict[str, Any]:
    """The typed data object, given as a JSON object or as a string holding one."""
    if isinstance(value, str):
        try:
            value = loads(value)
        except ValueError as exc:
            raise InvalidParams(f"the typed data string is not valid JSON: {exc}") from None
    if isinstance(value, list):
        raise InvalidParams(
            "this looks like legacy (v1) typed data, a list of {type, name, value}; it is not "
            "supported: send EIP-712 typed data {types, primaryType, domain, message} with "
            "eth_signTypedData_v4"
        )
    if not isinstance(value, dict):
        raise InvalidParams(
            "typed data must be an object {types, primaryType, domain, message} or a JSON "
            "string of one"
        )
    missing = [k for k in ("types", "primaryType", "domain", "message") if k not in value]
    if missing:
        raise InvalidParams(f"typed data has no {', '.join(missing)}")
    if not isinstance(value["types"], dict) or not all(
        isinstance(fields, list) for fields in value["types"].values()
    ):
        raise InvalidParams("typed data types must map each type name to a list of fields")
    if not isinstance(value["domain"], dict) or not isinstance(value["message"], dict):
        raise InvalidParams("typed data domain and message must be objects")
    if not isinstance(value["primaryType"], str):
        raise InvalidParams("typed data primaryType must be a type name")
    check_typed_data_bounds(value)
    return value


def typed_data_chain_id(data: dict[str, Any]) -> int | None:
    """domain.chainId as an integer (number, 0x-hex or decimal string), or None when absent."""
    value = data["domain"].get("chainId")
    if value is None:
        return None
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return parse_quantity(value, "typed data domain.chainId")


def typed_data_digest(data: dict[str, Any], *, allow_arrays: bool = True) -> bytes:
    """keccak(0x19 0x01 ‖ domainSeparator ‖ hashStruct(message)), as wallets compute it.

    Encoding is eth-account's. As MetaMask does, the domain is hashed with the typed data's own
    EIP712Domain fields (canonical ones when it names none), `primaryType` is used as given,
    and a primaryType of EIP712Domain signs the domain separator alone. `allow_arrays=False`
    is eth_signTypedData_v3, which has no array types.
    """
    types: dict[str, Any] = dict(data["types"])
    domain: dict[str, Any] = data["domain"]
    domain_fields = types.pop("EIP712Domain", None)
    if domain_fields is None:
        domain_fields = [{"name": k, "type": t} for k, t in _DOMAIN_FIELDS.items() if k in domain]
    if not allow_arrays:
        for type_name, fields in [("EIP712Domain", domain_fields), *types.items()]:
            for field in fields:
                if isinstance(field, dict) and _ARRAY_TYPE_RE.search(str(field.get("type", ""))):
                    raise InvalidParams(
                        f"{type_name}.{field.get('name')} has the array type "
                        f"{field.get('type')}, which eth_signTypedData_v3 does not support: "
                        "use eth_signTypedData_v4"
                    )
    primary = data["primaryType"]
    try:
        domain_separator = hash_struct(
            "EIP712Domain", {**types, "EIP712Domain": domain_fields}, domain
        )
        if primary == "EIP712Domain":
            return keccak256(EIP712_PREFIX + domain_separator)
        if primary not in types:
            raise InvalidParams(f"typed data primaryType {primary!r} is not one of its types")
        message_hash = hash_struct(primary, types, data["message"])
    except InvalidParams:
        raise
    except Exception as exc:  # eth-account and eth-abi raise many kinds on bad input
        raise InvalidParams(f"typed data cannot be encoded: {exc}") from None
    return keccak256(EIP712_PREFIX + domain_separator + message_hash)
