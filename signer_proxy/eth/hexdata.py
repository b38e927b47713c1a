"""Decode and encode Ethereum JSON-RPC values (QUANTITY, DATA, addresses): pure, strict, clear.

Each decoder names the field it was given so the error tells the caller exactly what to fix.
"""

from __future__ import annotations

import re
from typing import Any

from signer_proxy.errors import InvalidParams
from signer_proxy.eth.ecdsa import checksum_address

_HEX_RE = re.compile(r"^0[xX][0-9a-fA-F]*$")
_ADDRESS_RE = re.compile(r"^0[xX][0-9a-fA-F]{40}$")
MAX_UINT256 = 2**256 - 1


def parse_quantity(value: Any, field: str, *, max_value: int = MAX_UINT256) -> int:
    """A non-negative integer from a 0x-hex QUANTITY (or a JSON integer, as some clients send)."""
    if isinstance(value, bool):
        raise InvalidParams(f"{field} must be a 0x-prefixed hex quantity, got {value!r}")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and _HEX_RE.match(value) and len(value) > 2:
        number = int(value, 16)
    else:
        raise InvalidParams(
            f'{field} must be a 0x-prefixed hex quantity such as "0x1", got {value!r}'
        )
    if number < 0 or number > max_value:
        raise InvalidParams(f"{field} is out of range: {value!r}")
    return number


def parse_data(value: Any, field: str) -> bytes:
    """Bytes from a 0x-hex DATA string with an even number of digits."""
    if not isinstance(value, str) or not _HEX_RE.match(value):
        raise InvalidParams(f"{field} must be 0x-prefixed hex bytes, got {_short(value)}")
    if len(value) % 2:
        raise InvalidParams(f"{field} has an odd number of hex digits: {_short(value)}")
    return bytes.fromhex(value[2:])


def parse_address(value: Any, field: str) -> str:
    """A checksummed address from 0x + 40 hex digits (any case; EIP-55 is not enforced on input)."""
    if not isinstance(value, str) or not _ADDRESS_RE.match(value):
        raise InvalidParams(
            f"{field} must be a 20-byte 0x-prefixed hex address, got {_short(value)}"
        )
    return checksum_address(bytes.fromhex(value[2:]))


def to_quantity(number: int) -> str:
    return hex(number)


def to_data(data: bytes) -> str:
    return "0x" + data.hex()


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
