"""JSON-RPC 2.0 request parsing and response shapes: no I/O, no policy."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import orjson

from signer_proxy.errors import BatchTooLarge, InvalidRequest, ParseError, SignerProxyError

_NO_ID = object()


@dataclass(frozen=True, slots=True)
class Call:
    """One request object of a body; `id` is absent for notifications."""

    method: str
    params: Any
    id: Any
    raw: dict[str, Any]

    @property
    def is_notification(self) -> bool:
        return "id" not in self.raw


@dataclass(frozen=True, slots=True)
class CallContext:
    """Who is calling, over which transport: handed to every local method with its params."""

    client: str = "anonymous"
    transport: str = "http"
    # How the client proved who it is: api_key, api_key_query, client_cert, none (no auth).
    auth: str = "none"
    # The client's W3C trace context (the traceparent header), read only when tracing is on.
    traceparent: str | None = None
    # The chain the request's path named (/chain/NAME; / is the default chain's).
    chain: str = "default"


@dataclass(frozen=True, slots=True)
class BadCall:
    """A batch member that is not a valid request: answered with its error, id null."""

    error: SignerProxyError
    id: Any = None


@dataclass(frozen=True, slots=True)
class Body:
    """A parsed HTTP body: one call, or a batch of calls in their original order."""

    calls: tuple[Call | BadCall, ...]
    is_batch: bool


def parse_call(item: Any) -> Call:
    """Validate one request object."""
    if not isinstance(item, dict):
        raise InvalidRequest("each JSON-RPC request must be an object")
    if not item.keys() <= REQUEST_MEMBERS:
        unknown = ", ".join(sorted(repr(k)[:40] for k in item.keys() - REQUEST_MEMBERS)[:5])
        raise InvalidRequest(
            f"a JSON-RPC request has only the members jsonrpc, id, method and params (exactly "
            f"so spelled); remove {unknown}"
        )
    if item.get("jsonrpc") != "2.0":
        raise InvalidRequest('"jsonrpc" must be "2.0"')
    method = item.get("method")
    if not isinstance(method, str) or not method:
        raise InvalidRequest('"method" must be a non-empty string')
    params = item.get("params", [])
    if not isinstance(params, _PARAMS_TYPES):
        raise InvalidRequest('"params" must be an array or an object')
    call_id = item.get("id")
    if ("id" in item and not (call_id is None or isinstance(call_id, _ID_TYPES))) or (
        isinstance(call_id, bool)
    ):
        raise InvalidRequest('"id" must be a string, a number or null')
    return Call(method, params, call_id, item)


# Tuples, not `list | dict`: isinstance with a union is slower, and every request runs these.
_PARAMS_TYPES = (list, dict)
_ID_TYPES = (str, int, float)


# What a request object may hold. Anything else is refused, case variants included: nodes
# written in Go (geth, erigon …) match JSON keys case-insensitively with the last one
# winning, so {"method": "eth_blockNumber", "Method": "eth_sendRawTransaction"} would pass our
# scope check as one method and run on the node as the other (docs/security.md).
REQUEST_MEMBERS = frozenset({"jsonrpc", "id", "method", "params"})


def may_hide_members(raw: bytes, calls: int) -> bool:
    """Whether a body's bytes could say more than its decoded calls show: a member named twice
    (the decoder kept the last; some parsers keep the first) or spelled with escapes. Such a
    body is not forwarded as it is: the node gets the calls as the proxy read them."""
    return (
        b"\\" in raw
        or raw.count(b'"method"') != calls
        or raw.count(b'"params"') > calls
        or raw.count(b'"id"') > calls
        or raw.count(b'"jsonrpc"') > calls
    )


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """JSON to Python: the one parser for everything the proxy reads (client bodies, typed
    data given as a string, the node's replies). orjson's C parser refuses nesting past 1,024
    levels with an error rather than recursing on the stack; ValueError when not JSON."""
    return orjson.loads(data)


def parse_body(body: bytes, max_batch: int) -> Body:
    """Parse a request body; ParseError / InvalidRequest / BatchTooLarge for the whole body."""
    try:
        decoded = loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ParseError(f"the request body is not valid JSON: {exc}") from None
    if isinstance(decoded, list):
        if not decoded:
            raise InvalidRequest("an empty batch is not a valid request; send at least one call")
        if len(decoded) > max_batch:
            raise BatchTooLarge(
                f"the batch has {len(decoded)} calls, over the limit of {max_batch}; "
                "split it into smaller batches"
            )
        calls: list[Call | BadCall] = []
        for item in decoded:
            try:
                calls.append(parse_call(item))
            except InvalidRequest as exc:
                calls.append(BadCall(exc, _best_effort_id(item)))
        return Body(tuple(calls), is_batch=True)
    return Body((parse_call(decoded),), is_batch=False)


def _best_effort_id(item: Any) -> Any:
    if isinstance(item, dict):
        call_id = item.get("id")
        if isinstance(call_id, str | int) and not isinstance(call_id, bool):
            return call_id
    return None


def dumps(payload: Any) -> bytes:
    """JSON bytes; orjson on the fast path, the standard library for what orjson refuses
    (integers beyond 64 bits)."""
    try:
        return orjson.dumps(payload)
    except TypeError:
        return json.dumps(payload).encode()


def result_response(call_id: Any, result: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": call_id, "result": result}


def error_response(call_id: Any, error: SignerProxyError) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": call_id, "error": error.to_error_object()}
