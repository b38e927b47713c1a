"""Message digests: EIP-191 signed messages and EIP-712 typed data. Pure, no I/O.

Every digest here carries its EIP-191 prefix (0x19 ...): no method of this proxy signs a bare
hash a caller hands it, so a signed "message" can never be a transaction or an authorization.
"""

from __future__ import annotations

import re
from typing import Any

from signer_proxy.errors import InvalidParams
from signer_proxy.eth.ecdsa import Signature, keccak256
from signer_proxy.eth.hexdata import parse_quantity
from signer_proxy.eth.typed_data import typed_data_digest as eip712_digest
from signer_proxy.jsonrpc import loads

PERSONAL_MESSAGE_PREFIX = b"\x19Ethereum Signed Message:\n"
EIP712_PREFIX = b"\x19\x01"
# v of a message signature (personal_sign, eth_sign, EIP-712): 27 + parity, never EIP-155.
MESSAGE_V_OFFSET = 27

_HEX_RE = re.compile(r"^0x(?:[0-9a-fA-F]{2})*$")
_ODD_HEX_RE = re.compile(r"^0x[0-9a-fA-F](?:[0-9a-fA-F]{2})*$")
_ADDRESS_RE = re.compile(r"^0x[0-9a-fA-F]{40}$")


def personal_message_digest(message: bytes) -> bytes:
    """keccak(0x19 "Ethereum Signed Message:\\n" ‖ len(message) in decimal ‖ message)."""
    return keccak256(PERSONAL_MESSAGE_PREFIX + str(len(message)).encode() + message)


def personal_sign_bytes(data: Any) -> bytes:
    """The message bytes of personal_sign's data: 0x-hex as bytes, anything else as UTF-8 text.

    This is what MetaMask (eth-sig-util) and viem do: "0x48656c6c6f" signs the five bytes
    "Hello", while "Hello", "0X48656c6c6f" or "0xnot hex" sign their UTF-8 encoding. An odd
    number of hex digits ("0x123") is refused: eth-sig-util signs it as the bytes 01 23, viem
    as the text, so one of them would not verify the signature.
    """
    if not isinstance(data, str):
        raise InvalidParams(
            "personal_sign's message must be a string: 0x-prefixed hex bytes or UTF-8 text"
        )
    if _ODD_HEX_RE.match(data):
        raise InvalidParams(
            f"personal_sign's message {data[:20]!r} has an odd number of hex digits: MetaMask "
            "signs it as bytes and viem as text; send an even number of hex digits for bytes "
            "(0x0123) or the text itself"
        )
    if _HEX_RE.match(data):
        return bytes.fromhex(data[2:])
    return data.encode("utf-8")


def personal_sign_order(first: Any, second: Any) -> tuple[Any, Any]:
    """(message, address) from personal_sign's first two params, in either order.

    As MetaMask: when the first looks like an address (0x and 40 hex digits) and the second
    does not, they were given as [address, message]; otherwise [message, address].
    """
    if _looks_like_address(first) and not _looks_like_address(second):
        return second, first
    return first, second


def _looks_like_address(value: Any) -> bool:
    return isinstance(value, str) and _ADDRESS_RE.match(value) is not None


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
    if isinstance(value, str) and value.isascii() and value.isdigit():  # not "³¹³³⁷"
        return int(value)
    return parse_quantity(value, "typed data domain.chainId")


def typed_data_digest(data: dict[str, Any], *, allow_arrays: bool = True) -> bytes:
    """keccak(0x19 0x01 ‖ domainSeparator ‖ hashStruct(message)), as MetaMask computes it.

    Encoding is signer_proxy.eth.typed_data's (eth-sig-util's rules, refusing what eth-sig-util
    or viem refuses or where they differ). `allow_arrays=False` is eth_signTypedData_v3 (V3).
    """
    return eip712_digest(data, "V4" if allow_arrays else "V3")
