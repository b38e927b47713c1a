"""Our RLP encoder against the `rlp` package, item by item."""

from __future__ import annotations

from typing import Any

import pytest
import rlp

from signer_proxy.eth.rlp_encoding import encode

CASES = [
    pytest.param(0, id="zero-is-empty-string"),
    pytest.param(1, id="one-byte"),
    pytest.param(0x7F, id="largest-single-byte"),
    pytest.param(0x80, id="smallest-prefixed-int"),
    pytest.param(2**64 - 1, id="uint64-max"),
    pytest.param(2**256 - 1, id="uint256-max"),
    pytest.param(b"", id="empty-bytes"),
    pytest.param(b"\x00", id="zero-byte"),
    pytest.param(b"\x7f", id="single-low-byte"),
    pytest.param(b"\x80", id="single-high-byte"),
    pytest.param(b"x" * 55, id="55-bytes-short-form"),
    pytest.param(b"x" * 56, id="56-bytes-long-form"),
    pytest.param(b"x" * 131072, id="a-blob"),
    pytest.param([], id="empty-list"),
    pytest.param([b"", 0, [[]]], id="nested-empties"),
    pytest.param([[b"\x11" * 20, [b"\x22" * 32, b"\x33" * 32]]], id="access-list"),
    pytest.param([b"y" * 30, b"z" * 30], id="list-over-55-bytes"),
    pytest.param([1, 2**200, b"abc", [3, [4, b""]]], id="mixed"),
]


@pytest.mark.parametrize("item", CASES)
def test_encode_matches_the_rlp_package(item: Any) -> None:
    assert encode(item) == rlp.encode(item)


@pytest.mark.parametrize(
    ("item", "error"),
    [
        pytest.param(-1, ValueError, id="negative"),
        pytest.param(True, TypeError, id="bool"),
        pytest.param("text", TypeError, id="str"),
        pytest.param(1.5, TypeError, id="float"),
    ],
)
def test_encode_refuses_what_rlp_cannot_carry(item: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        encode(item)
