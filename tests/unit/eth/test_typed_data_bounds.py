"""eth/messages.py: typed data past its bounds is refused before anything is encoded, and
typed data given as a string is parsed by the one depth-limited parser."""

from __future__ import annotations

import time
from typing import Any

import pytest

from signer_proxy.errors import InvalidParams
from signer_proxy.eth.messages import (
    MAX_TYPED_DATA_DEPTH,
    MAX_TYPED_DATA_FIELDS,
    MAX_TYPED_DATA_TYPES,
    MAX_TYPED_DATA_VALUES,
    load_typed_data,
)

DOMAIN_TYPE = [{"name": "name", "type": "string"}]


def typed(message: Any, types: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "types": types or {"EIP712Domain": DOMAIN_TYPE, "Node": [{"name": "next", "type": "Node"}]},
        "primaryType": "Node",
        "domain": {"name": "x"},
        "message": message,
    }


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"next": value}
    return value


@pytest.mark.parametrize(
    ("data", "says"),
    [
        pytest.param(typed(nested(MAX_TYPED_DATA_DEPTH + 1)), "nested over", id="too-deep"),
        pytest.param(
            typed({"items": list(range(MAX_TYPED_DATA_VALUES))}), "over 10000 values", id="too-many"
        ),
        pytest.param(
            typed({}, {f"T{i}": [] for i in range(MAX_TYPED_DATA_TYPES + 1)}),
            "types, over the limit",
            id="too-many-types",
        ),
        pytest.param(
            typed({}, {"T": [{"name": f"f{i}", "type": "uint8"} for i in range(1025)]}),
            f"over the limit of {MAX_TYPED_DATA_FIELDS}",
            id="too-many-fields",
        ),
    ],
)
def test_typed_data_past_the_bounds_is_refused(data: dict[str, Any], says: str) -> None:
    with pytest.raises(InvalidParams, match=says):
        load_typed_data(data)


def test_typed_data_at_the_bounds_is_accepted() -> None:
    assert load_typed_data(typed(nested(MAX_TYPED_DATA_DEPTH)))


def test_a_recursive_struct_40000_deep_is_refused_at_once() -> None:
    started = time.perf_counter()
    with pytest.raises(InvalidParams, match="nested over"):
        load_typed_data(typed(nested(40_000)))
    assert time.perf_counter() - started < 2.0  # encoding it took seconds of loop CPU


@pytest.mark.parametrize("depth", [1_100, 100_000])
def test_typed_data_as_a_deeply_nested_string_is_a_clear_error(depth: int) -> None:
    text = "[" * depth + "]" * depth
    with pytest.raises(InvalidParams, match="not valid JSON"):
        load_typed_data(text)
