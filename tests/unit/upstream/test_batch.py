"""upstream/batch.py: a batch's answer read back by position, or refused for one by one."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from signer_proxy.errors import NodeRejected
from signer_proxy.upstream import batch
from signer_proxy.upstream.batch import batch_body, batch_results, call_many


def test_batch_body_numbers_calls_by_position() -> None:
    body = orjson.loads(batch_body([("eth_a", [1]), ("eth_b", [])]))
    assert body == [
        {"jsonrpc": "2.0", "id": 0, "method": "eth_a", "params": [1]},
        {"jsonrpc": "2.0", "id": 1, "method": "eth_b", "params": []},
    ]


def member(position: Any, result: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": position, "result": result}


@pytest.mark.parametrize(
    "answer, count, expected",
    [
        ([member(0, "a"), member(1, None)], 2, ["a", None]),
        ([member(1, None), member(0, "a")], 2, ["a", None]),  # nodes may reorder
        ([member(0, {"x": 1})], 1, [{"x": 1}]),
        ([member(0, "a")], 2, None),  # a member missing
        ([member(0, "a"), member(2, "b")], 2, None),  # an id out of range
        ([member("0", "a"), member(1, "b")], 2, None),  # ids are ours: integers
        ([member(True, "a"), member(1, "b")], 2, None),  # a bool is not a position
        ([{"jsonrpc": "2.0", "id": 0}, member(1, "b")], 2, None),  # neither result nor error
        (["a", "b"], 2, None),
        ({"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "no batch"}}, 2, None),
        ([], 1, None),
    ],
)
def test_batch_results(answer: Any, count: int, expected: list[Any] | None) -> None:
    assert batch_results(orjson.dumps(answer), count) == expected


def test_batch_results_of_a_body_that_is_not_json() -> None:
    assert batch_results(b"<html>502</html>", 2) is None


def test_a_refused_member_raises_the_nodes_error() -> None:
    answer = [
        member(0, "a"),
        {"jsonrpc": "2.0", "id": 1, "error": {"code": -32000, "message": "x"}},
    ]
    with pytest.raises(NodeRejected) as raised:
        batch_results(orjson.dumps(answer), 2)
    assert (raised.value.error_code(), raised.value.message) == (-32000, "x")


class Node:
    """Answers each call with its method and params; batches as told."""

    def __init__(self, batches: bool) -> None:
        self.batches = batches
        self.forwarded: list[int] = []
        self.called = 0

    async def call(self, method: str, params: Any) -> Any:
        self.called += 1
        return [method, params]

    async def forward(self, body: bytes) -> bytes:
        calls = orjson.loads(body)
        self.forwarded.append(len(calls))
        if not self.batches:
            return b'{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"no batches"}}'
        return orjson.dumps([member(c["id"], [c["method"], c["params"]]) for c in calls])


@pytest.mark.parametrize("batches", [True, False])
async def test_call_many_chunks_and_falls_back_one_by_one(
    batches: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batch, "CHUNK", 3)
    node = Node(batches)
    calls = [("m", [i]) for i in range(7)]
    assert await call_many(node, calls) == [["m", [i]] for i in range(7)]
    assert node.forwarded == [3, 3]  # the last chunk is one call: asked as one
    assert node.called == (1 if batches else 7)


async def test_call_many_of_nothing_asks_nothing() -> None:
    node = Node(True)
    assert await call_many(node, []) == []
    assert (node.forwarded, node.called) == ([], 0)
