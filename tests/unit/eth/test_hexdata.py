"""hexdata: strict QUANTITY / DATA / address decoding whose errors name the field."""

from __future__ import annotations

from typing import Any

import pytest

from signer_proxy.errors import InvalidParams
from signer_proxy.eth.hexdata import (
    MAX_UINT256,
    parse_address,
    parse_data,
    parse_quantity,
    to_data,
    to_quantity,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("0x0", 0, id="zero"),
        pytest.param("0x1", 1, id="one"),
        pytest.param("0xff", 255, id="lower"),
        pytest.param("0XFF", 255, id="upper-prefix-and-digits"),
        pytest.param("0x01", 1, id="leading-zero-tolerated"),
        pytest.param(7, 7, id="json-integer"),
        pytest.param("0x" + "f" * 64, MAX_UINT256, id="max-uint256"),
    ],
)
def test_parse_quantity_accepts(value: Any, expected: int) -> None:
    assert parse_quantity(value, "value") == expected


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        pytest.param("0x", "0x-prefixed hex quantity", id="no-digits"),
        pytest.param("12", "0x-prefixed hex quantity", id="decimal-string"),
        pytest.param("", "0x-prefixed hex quantity", id="empty"),
        pytest.param("0xg1", "0x-prefixed hex quantity", id="not-hex"),
        pytest.param(" 0x1", "0x-prefixed hex quantity", id="leading-space"),
        pytest.param(None, "0x-prefixed hex quantity", id="null"),
        pytest.param(1.5, "0x-prefixed hex quantity", id="float"),
        pytest.param(True, "0x-prefixed hex quantity", id="bool"),
        pytest.param(-1, "out of range", id="negative-integer"),
        pytest.param("0x1" + "0" * 64, "out of range", id="over-uint256"),
    ],
)
def test_parse_quantity_rejects_with_the_field_name(value: Any, fragment: str) -> None:
    with pytest.raises(InvalidParams) as info:
        parse_quantity(value, "gasPrice")

    assert info.value.code == -32602
    assert info.value.message.startswith("gasPrice ")
    assert fragment in info.value.message


def test_parse_quantity_max_value_is_inclusive() -> None:
    assert parse_quantity("0xff", "type", max_value=0xFF) == 0xFF
    with pytest.raises(InvalidParams, match="type is out of range"):
        parse_quantity("0x100", "type", max_value=0xFF)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("0x", b"", id="empty"),
        pytest.param("0x00", b"\x00", id="zero-byte"),
        pytest.param("0xDeadBeef", b"\xde\xad\xbe\xef", id="mixed-case"),
    ],
)
def test_parse_data_accepts(value: str, expected: bytes) -> None:
    assert parse_data(value, "data") == expected


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        pytest.param("0xabc", "odd number of hex digits", id="odd"),
        pytest.param("abcd", "0x-prefixed hex bytes", id="no-prefix"),
        pytest.param("0xzz", "0x-prefixed hex bytes", id="not-hex"),
        pytest.param(b"\x00", "0x-prefixed hex bytes", id="bytes-object"),
        pytest.param(12, "0x-prefixed hex bytes", id="integer"),
    ],
)
def test_parse_data_rejects_with_the_field_name(value: Any, fragment: str) -> None:
    with pytest.raises(InvalidParams) as info:
        parse_data(value, "input")

    assert info.value.message.startswith("input ")
    assert fragment in info.value.message


def test_parse_data_error_shortens_huge_values() -> None:
    with pytest.raises(InvalidParams) as info:
        parse_data("0x" + "a" * 10_001, "input")

    assert len(info.value.message) < 200
    assert info.value.message.endswith("...")


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed", id="lower"),
        pytest.param("0X5AAEB6053F3E94C9B9A09F33669435E7EF1BEAED", id="upper"),
        pytest.param("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", id="checksummed"),
        pytest.param("0x5AAEB6053F3E94C9b9A09f33669435E7Ef1BeAed", id="wrong-checksum-tolerated"),
    ],
)
def test_parse_address_returns_eip55_whatever_the_case(value: str) -> None:
    assert parse_address(value, "to") == "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("0x" + "ab" * 19, id="19-bytes"),
        pytest.param("0x" + "ab" * 21, id="21-bytes"),
        pytest.param("ab" * 20, id="no-prefix"),
        pytest.param("0x" + "zz" * 20, id="not-hex"),
        pytest.param(None, id="null"),
        pytest.param(0, id="integer"),
    ],
)
def test_parse_address_rejects_with_the_field_name(value: Any) -> None:
    with pytest.raises(InvalidParams, match=r"^from must be a 20-byte 0x-prefixed hex address"):
        parse_address(value, "from")


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        pytest.param(0, "0x0", id="zero"),
        pytest.param(255, "0xff", id="no-leading-zeros"),
        pytest.param(MAX_UINT256, "0x" + "f" * 64, id="max"),
    ],
)
def test_to_quantity_round_trips(number: int, expected: str) -> None:
    assert to_quantity(number) == expected
    assert parse_quantity(expected, "x") == number


def test_to_data_round_trips() -> None:
    assert to_data(b"") == "0x"
    assert to_data(b"\x00\xab") == "0x00ab"
    assert parse_data(to_data(b"\x01\x02"), "x") == b"\x01\x02"
