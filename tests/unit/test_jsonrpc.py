"""jsonrpc: body parsing (single, batch, limits, bad members) and response shapes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from signer_proxy.errors import (
    BatchTooLarge,
    InvalidParams,
    InvalidRequest,
    ParseError,
)
from signer_proxy.jsonrpc import (
    BadCall,
    Call,
    error_response,
    may_hide_members,
    parse_body,
    parse_call,
    result_response,
)


def _body(payload: Any) -> bytes:
    return json.dumps(payload).encode()


def _req(method: str = "eth_chainId", **extra: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": method, **extra}


def test_parse_body_single_call() -> None:
    body = parse_body(_body(_req(id=1, params=["0x1", True])), max_batch=10)

    assert body.is_batch is False
    (call,) = body.calls
    assert isinstance(call, Call)
    assert (call.method, call.params, call.id) == ("eth_chainId", ["0x1", True], 1)
    assert call.is_notification is False


def test_parse_body_params_default_to_empty_list_and_may_be_an_object() -> None:
    (plain,) = parse_body(_body(_req(id=1)), 10).calls
    (named,) = parse_body(_body(_req(id=1, params={"a": 1})), 10).calls

    assert isinstance(plain, Call) and plain.params == []
    assert isinstance(named, Call) and named.params == {"a": 1}


def test_parse_body_batch_keeps_order() -> None:
    calls = [_req(f"m{i}", id=i) for i in range(5)]

    body = parse_body(_body(calls), max_batch=5)

    assert body.is_batch is True
    assert [c.method for c in body.calls if isinstance(c, Call)] == ["m0", "m1", "m2", "m3", "m4"]


def test_parse_body_batch_of_one_is_still_a_batch() -> None:
    body = parse_body(_body([_req(id=1)]), max_batch=5)

    assert body.is_batch is True and len(body.calls) == 1


def test_parse_body_empty_batch_is_invalid_request() -> None:
    with pytest.raises(InvalidRequest, match="empty batch") as info:
        parse_body(b"[]", max_batch=5)

    assert info.value.code == -32600


def test_parse_body_batch_over_limit_is_413() -> None:
    with pytest.raises(BatchTooLarge) as info:
        parse_body(_body([_req(id=i) for i in range(4)]), max_batch=3)

    assert info.value.code == -32600
    assert info.value.http_status == 413
    assert "4 calls" in info.value.message and "limit of 3" in info.value.message


def test_parse_body_batch_at_limit_is_accepted() -> None:
    assert len(parse_body(_body([_req(id=i) for i in range(3)]), max_batch=3).calls) == 3


@pytest.mark.parametrize(
    ("member", "expected_id", "fragment"),
    [
        pytest.param(1, None, "must be an object", id="number"),
        pytest.param("x", None, "must be an object", id="string"),
        pytest.param([], None, "must be an object", id="nested-array"),
        pytest.param({"method": "m", "id": 7}, 7, '"jsonrpc" must be "2.0"', id="no-jsonrpc"),
        pytest.param(
            {"jsonrpc": "1.0", "method": "m", "id": "a"}, "a", '"2.0"', id="wrong-version"
        ),
        pytest.param({"jsonrpc": "2.0", "id": 3}, 3, '"method"', id="no-method"),
        pytest.param({"jsonrpc": "2.0", "method": "", "id": 3}, 3, '"method"', id="empty-method"),
        pytest.param({"jsonrpc": "2.0", "method": 5, "id": 3}, 3, '"method"', id="method-number"),
        pytest.param(
            {"jsonrpc": "2.0", "method": "m", "params": "x", "id": 4}, 4, '"params"', id="params"
        ),
        pytest.param({"jsonrpc": "2.0", "method": "m", "id": {}}, None, '"id"', id="id-object"),
        pytest.param({"jsonrpc": "2.0", "method": "m", "id": [1]}, None, '"id"', id="id-array"),
        pytest.param({"jsonrpc": "2.0", "method": "m", "id": True}, None, '"id"', id="id-bool"),
    ],
)
def test_parse_body_invalid_batch_member_becomes_bad_call(
    member: Any, expected_id: Any, fragment: str
) -> None:
    body = parse_body(_body([_req(id=0), member, _req(id=2)]), max_batch=10)

    first, bad, last = body.calls
    assert isinstance(first, Call) and isinstance(last, Call)
    assert isinstance(bad, BadCall)
    assert bad.id == expected_id
    assert isinstance(bad.error, InvalidRequest) and bad.error.code == -32600
    assert fragment in bad.error.message


def test_parse_body_invalid_single_call_fails_the_whole_body() -> None:
    with pytest.raises(InvalidRequest, match='"method"'):
        parse_body(_body({"jsonrpc": "2.0", "id": 1}), max_batch=10)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"{", id="truncated"),
        pytest.param(b"", id="empty"),
        pytest.param(b"not json", id="text"),
        pytest.param(b"\xff\xfe\x00garbage", id="not-utf8"),
        pytest.param(b'{"jsonrpc": "2.0",}', id="trailing-comma"),
    ],
)
def test_parse_body_bad_json_is_parse_error(raw: bytes) -> None:
    with pytest.raises(ParseError, match="not valid JSON") as info:
        parse_body(raw, max_batch=10)

    assert info.value.code == -32700


def test_parse_body_notifications_have_no_id_and_explicit_null_is_not_one() -> None:
    body = parse_body(_body([_req(), _req(id=None)]), max_batch=10)

    notification, null_id = body.calls
    assert isinstance(notification, Call) and notification.is_notification
    assert isinstance(null_id, Call) and not null_id.is_notification
    assert null_id.id is None


@pytest.mark.parametrize(
    "call_id",
    [
        pytest.param(0, id="zero"),
        pytest.param(2**70, id="big-int"),
        pytest.param(-5, id="negative"),
        pytest.param(1.5, id="float"),
        pytest.param("", id="empty-string"),
        pytest.param("req-1", id="string"),
        pytest.param(None, id="null"),
    ],
)
def test_parse_call_accepts_every_json_rpc_id_type(call_id: Any) -> None:
    call = parse_call(_req(id=call_id))

    assert call.id == call_id
    assert type(call.id) is type(call_id)


def test_parse_call_keeps_the_raw_object() -> None:
    raw = _req(id=9, params=[1])

    assert parse_call(raw).raw is raw


@pytest.mark.parametrize("member", ["extra", "Method", "METHOD", "Params", "ID", "Jsonrpc"])
def test_parse_call_refuses_members_a_request_does_not_have(member: str) -> None:
    # Go nodes match keys case-insensitively: "Method" would be a second method (security.md).
    with pytest.raises(InvalidRequest, match="only the members jsonrpc, id, method and params"):
        parse_call({**_req(id=1), member: "eth_sendRawTransaction"})


@pytest.mark.parametrize(
    ("raw", "calls", "hides"),
    [
        pytest.param(b'{"jsonrpc":"2.0","id":1,"method":"m","params":[]}', 1, False, id="plain"),
        pytest.param(b'{"jsonrpc":"2.0","method":"m"}', 1, False, id="no-id-no-params"),
        pytest.param(b'{"method":"a","method":"b"}', 1, True, id="duplicate-method"),
        pytest.param(b'{"method":"a","params":[],"params":[1]}', 1, True, id="duplicate-params"),
        pytest.param(b'{"\\u006dethod":"a","method":"b"}', 1, True, id="escaped-key"),
        pytest.param(b'{"method":"a","params":["\\n"]}', 1, True, id="any-escape"),
        pytest.param(b'{"id":1,"id":2,"method":"a"}', 1, True, id="duplicate-id"),
    ],
)
def test_may_hide_members(raw: bytes, calls: int, hides: bool) -> None:
    assert may_hide_members(raw, calls) is hides


def test_result_and_error_response_shapes() -> None:
    assert result_response("a", None) == {"jsonrpc": "2.0", "id": "a", "result": None}
    assert error_response(None, InvalidParams("bad from")) == {
        "jsonrpc": "2.0",
        "id": None,
        "error": {"code": -32602, "message": "bad from"},
    }
