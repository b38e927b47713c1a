"""RLP encoding of the shapes transactions use (non-negative ints, bytes, nested lists): pure.

The `rlp` package infers a serializer for every item on every call, which costs more than the
rest of building a transaction; this encoder does only what Ethereum's typed payloads need and
is checked against `rlp` item by item in tests/unit/eth/test_rlp_encoding.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeAlias

Item: TypeAlias = "int | bytes | bytearray | Sequence[Item]"


def _length_prefix(length: int, offset: int) -> bytes:
    if length < 56:
        return bytes((offset + length,))
    size = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes((offset + 55 + len(size),)) + size


def encode(item: Item) -> bytes:
    """The RLP encoding of `item`; ints big-endian with no leading zeros (0 is the empty string)."""
    if isinstance(item, bytes | bytearray):
        if len(item) == 1 and item[0] < 0x80:
            return bytes(item)
        return _length_prefix(len(item), 0x80) + bytes(item)
    if isinstance(item, bool):
        raise TypeError("RLP has no booleans: encode 0 or 1")
    if isinstance(item, int):
        if item < 0:
            raise ValueError("RLP cannot encode negative integers")
        if item == 0:
            return b"\x80"
        if item < 0x80:
            return bytes((item,))
        raw = item.to_bytes((item.bit_length() + 7) // 8, "big")
        return _length_prefix(len(raw), 0x80) + raw
    if isinstance(item, list | tuple):
        payload = b"".join([encode(element) for element in item])
        return _length_prefix(len(payload), 0xC0) + payload
    raise TypeError(f"RLP cannot encode {type(item).__name__}")
