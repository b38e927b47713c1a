"""eth/messages.py: typed data past its bounds is refused before anything is encoded, and
typed data given as a string is parsed by the one depth-limited parser."""

from __future__ import annotations

import json
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
    typed_data_digest,
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


def _many_structs_sharing_a_long_type(links: int, name_length: int, items: int) -> str:
    """`items` small structs S whose encodeType spans `links` chained types with long field
    names (each link's array left empty, so its values cost nothing): all within the bounds."""
    types: dict[str, Any] = {"EIP712Domain": []}
    names = [f"T{i:03d}" for i in range(links)]
    for i, name in enumerate(names):
        fields = [{"name": "x" * name_length + str(j), "type": "uint8"} for j in range(3)]
        last = i + 1 == links
        fields.append({"name": "n", "type": "uint8" if last else names[i + 1] + "[]"})
        types[name] = fields
    types["S"] = [{"name": "a", "type": names[0] + "[]"}]
    types["M"] = [{"name": "v", "type": "S[]"}]
    message = {"v": [{"a": []}] * items}
    return json.dumps({"types": types, "primaryType": "M", "domain": {}, "message": message})


def test_typed_data_within_the_bounds_is_encoded_in_well_under_a_second() -> None:
    """hash_struct recomputes encodeType (walk the dependencies, join, keccak the text) for
    every struct value, so the work is types-text x values: ~0.8 MB of typed data (the body
    limit is 5 MB) holds the event loop, every client's, for seconds per call. Once per
    struct type per digest, it is milliseconds."""
    raw = _many_structs_sharing_a_long_type(links=250, name_length=1000, items=1000)
    assert len(raw) < 1024 * 1024
    data = load_typed_data(raw)  # within every bound: 252 types, 1,002 fields, ~2,000 values
    started = time.perf_counter()
    typed_data_digest(data)
    assert time.perf_counter() - started < 1.0
