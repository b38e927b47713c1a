"""Many node calls in one JSON-RPC batch, for callers that ask the same question of many
transactions (the tracker's watch round: a receipt or a lookup per pending transaction).

One batch of N calls costs the proxy about what one call costs, where N calls one by one cost
N times that: with 1,000 transactions pending, the difference is most of a watch round.
Nodes and providers cap batches (geth: 1,000 calls), and some refuse them; batches here are
at most `CHUNK` calls, and a chunk whose answer is not a whole batch (an error object, a
missing member) is asked again call by call, so a node without batches still answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from signer_proxy.upstream.base import Upstream, node_error

CHUNK = 100

_MISSING = object()


def batch_body(calls: Sequence[tuple[str, Any]]) -> bytes:
    """The batch request for `calls` ((method, params) each), ids 0..N-1 by position."""
    return orjson.dumps(
        [
            {"jsonrpc": "2.0", "id": i, "method": method, "params": params}
            for i, (method, params) in enumerate(calls)
        ]
    )


def batch_results(payload: bytes, count: int) -> list[Any] | None:
    """Each call's result by position; NodeRejected for the first member that is an error;
    None when `payload` is not a whole answer to a batch of `count` calls (ask one by one)."""
    try:
        decoded = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(decoded, list):
        return None
    results: list[Any] = [_MISSING] * count
    for member in decoded:
        if not isinstance(member, dict):
            return None
        position = member.get("id")
        if type(position) is not int or not 0 <= position < count:
            return None
        error = member.get("error")
        if error is not None:
            raise node_error(error)
        if "result" not in member:
            return None
        results[position] = member["result"]
    if any(result is _MISSING for result in results):
        return None
    return results


async def call_many(upstream: Upstream, calls: Sequence[tuple[str, Any]]) -> list[Any]:
    """The result of each of `calls`, in order, asked in batches of at most CHUNK; raises as
    `Upstream.call` would for the first call the node refused."""
    results: list[Any] = []
    for start in range(0, len(calls), CHUNK):
        chunk = calls[start : start + CHUNK]
        answered = None
        if len(chunk) > 1:
            answered = batch_results(await upstream.forward(batch_body(chunk)), len(chunk))
        if answered is None:
            answered = [await upstream.call(method, params) for method, params in chunk]
        results += answered
    return results
