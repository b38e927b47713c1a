"""router: local methods vs pass-through, batches, notifications and failures, via a fake node."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest

from signer_proxy.errors import (
    INTERNAL_ERROR_MESSAGE,
    InvalidParams,
    SignerProxyError,
    UpstreamUnavailable,
)
from signer_proxy.jsonrpc import CallContext, parse_body
from signer_proxy.router import Handler, Router


class FakeNode:
    """An `Upstream` whose forward() answers each call with `method:params`, or fails."""

    def __init__(self) -> None:
        self.forwarded: list[bytes] = []
        self.fail_with: SignerProxyError | None = None
        self.reply_override: bytes | None = None

    async def call(self, method: str, params: Any) -> Any:
        raise AssertionError("the router never makes calls of its own")

    async def forward(self, body: bytes) -> bytes:
        self.forwarded.append(body)
        if self.fail_with is not None:
            raise self.fail_with
        if self.reply_override is not None:
            return self.reply_override
        request = json.loads(body)
        if isinstance(request, dict):
            return json.dumps(self._answer(request)).encode()
        answers = [self._answer(r) for r in request if "id" in r]
        return json.dumps(list(reversed(answers))).encode()  # any order is allowed

    @staticmethod
    def _answer(request: dict[str, Any]) -> dict[str, Any]:
        return {"jsonrpc": "2.0", "id": request.get("id"), "result": f"node:{request['method']}"}


async def _accounts(params: Any, context: CallContext) -> list[str]:
    await asyncio.sleep(0)
    return ["0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"]


async def _echo(params: Any, context: CallContext) -> Any:
    return {"echo": params}


async def _refuse(params: Any, context: CallContext) -> Any:
    raise InvalidParams("from is missing: name the account")


async def _crash(params: Any, context: CallContext) -> Any:
    raise KeyError("secret internal state /home/op/.aws/credentials")


METHODS: dict[str, Handler] = {
    "eth_accounts": _accounts,
    "local_echo": _echo,
    "local_refuse": _refuse,
    "local_crash": _crash,
}


@pytest.fixture
def node() -> FakeNode:
    return FakeNode()


@pytest.fixture
def router(node: FakeNode) -> Router:
    return Router(METHODS, node)


def _call(
    method: str, call_id: Any = None, params: Any = None, *, notify: bool = False
) -> dict[str, Any]:
    call: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "params": params or []}
    if not notify:
        call["id"] = call_id
    return call


async def _handle(router: Router, payload: Any) -> Any:
    raw = json.dumps(payload).encode()
    return await router.handle(parse_body(raw, max_batch=100), raw)


async def test_router_single_local_call(router: Router, node: FakeNode) -> None:
    reply = await _handle(router, _call("local_echo", 7, ["x"]))

    assert reply == {"jsonrpc": "2.0", "id": 7, "result": {"echo": ["x"]}}
    assert node.forwarded == []


async def test_router_single_forwarded_call_relays_the_raw_body(
    router: Router, node: FakeNode
) -> None:
    raw = b'{"jsonrpc":"2.0","id":"q","method":"eth_blockNumber"}'

    reply = await router.handle(parse_body(raw, 10), raw)

    assert node.forwarded == [raw]  # not re-serialised
    assert isinstance(reply, bytes)
    assert json.loads(reply) == {"jsonrpc": "2.0", "id": "q", "result": "node:eth_blockNumber"}


async def test_router_single_forwarded_call_upstream_failure_is_an_error_reply(
    router: Router, node: FakeNode
) -> None:
    node.fail_with = UpstreamUnavailable("the node at http://n could not be reached")

    reply = await _handle(router, _call("eth_blockNumber", 3))

    assert reply == {
        "jsonrpc": "2.0",
        "id": 3,
        "error": {"code": -32020, "message": "the node at http://n could not be reached"},
    }


@pytest.mark.parametrize(
    "method", [pytest.param("local_echo", id="local"), pytest.param("eth_blockNumber", id="node")]
)
async def test_router_single_notification_gets_no_reply(
    router: Router, node: FakeNode, method: str
) -> None:
    assert await _handle(router, _call(method, notify=True)) is None


async def test_router_batch_mixed_keeps_order_and_ids_and_forwards_once(
    router: Router, node: FakeNode
) -> None:
    batch = [
        _call("eth_blockNumber", "a"),
        _call("eth_accounts", 1),
        _call("eth_getBalance", 2, ["0xabc", "latest"]),
        _call("local_echo", "b", [1]),
        _call("eth_chainId", 99),
    ]

    replies = await _handle(router, batch)

    assert [r["id"] for r in replies] == ["a", 1, 2, "b", 99]
    assert [r["result"] for r in replies] == [
        "node:eth_blockNumber",
        ["0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"],
        "node:eth_getBalance",
        {"echo": [1]},
        "node:eth_chainId",
    ]
    (sent,) = node.forwarded  # ONE node batch for all forwarded calls
    upstream_batch = json.loads(sent)
    assert [c["method"] for c in upstream_batch] == [
        "eth_blockNumber",
        "eth_getBalance",
        "eth_chainId",
    ]
    assert [c["id"] for c in upstream_batch] == [
        0,
        1,
        2,
    ]  # rewritten: no clash between clients' ids
    assert upstream_batch[1]["params"] == ["0xabc", "latest"]


async def test_router_batch_duplicate_client_ids_are_restored_to_the_right_call(
    router: Router, node: FakeNode
) -> None:
    replies = await _handle(router, [_call("eth_a", 1), _call("eth_b", 1), _call("eth_c", 1)])

    assert [(r["id"], r["result"]) for r in replies] == [
        (1, "node:eth_a"),
        (1, "node:eth_b"),
        (1, "node:eth_c"),
    ]


async def test_router_batch_local_only_never_touches_the_node(
    router: Router, node: FakeNode
) -> None:
    replies = await _handle(router, [_call("local_echo", 1), _call("eth_accounts", 2)])

    assert [r["id"] for r in replies] == [1, 2]
    assert node.forwarded == []


async def test_router_batch_notifications_get_no_reply(router: Router, node: FakeNode) -> None:
    batch = [
        _call("local_echo", notify=True),
        _call("eth_blockNumber", 1),
        _call("eth_subscribeLike", notify=True),
        _call("local_echo", 2),
    ]

    replies = await _handle(router, batch)

    assert [r["id"] for r in replies] == [1, 2]
    (sent,) = node.forwarded
    forwarded = json.loads(sent)
    assert forwarded[1] == {"jsonrpc": "2.0", "method": "eth_subscribeLike", "params": []}


async def test_router_batch_of_notifications_only_is_no_reply(router: Router) -> None:
    batch = [_call("local_echo", notify=True), _call("eth_blockNumber", notify=True)]

    assert await _handle(router, batch) is None


async def test_router_batch_upstream_failure_becomes_per_call_errors(
    router: Router, node: FakeNode
) -> None:
    node.fail_with = UpstreamUnavailable("the node could not be reached")

    replies = await _handle(
        router, [_call("eth_blockNumber", 1), _call("local_echo", 2), _call("eth_chainId", 3)]
    )

    assert [r["id"] for r in replies] == [1, 2, 3]
    assert replies[0]["error"]["code"] == replies[2]["error"]["code"] == -32020
    assert replies[1]["result"] == {"echo": []}  # local work is unaffected


async def test_router_batch_upstream_non_json_becomes_per_call_errors(
    router: Router, node: FakeNode
) -> None:
    node.reply_override = b"<html>oops</html>"

    replies = await _handle(router, [_call("eth_blockNumber", 1), _call("local_echo", 2)])

    assert replies[0]["id"] == 1 and replies[0]["error"]["code"] == -32021
    assert replies[1] == {"jsonrpc": "2.0", "id": 2, "result": {"echo": []}}


async def test_router_batch_missing_answer_is_an_error_for_that_call(
    router: Router, node: FakeNode
) -> None:
    node.reply_override = json.dumps([{"jsonrpc": "2.0", "id": 1, "result": "0x2"}]).encode()

    replies = await _handle(router, [_call("eth_first", "x"), _call("eth_second", "y")])

    assert replies[0]["id"] == "x" and replies[0]["error"]["code"] == -32021
    assert "eth_first" in replies[0]["error"]["message"]
    assert replies[1] == {"jsonrpc": "2.0", "id": "y", "result": "0x2"}


async def test_router_batch_node_without_batch_support_errors_every_call(
    router: Router, node: FakeNode
) -> None:
    node.reply_override = json.dumps(
        {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "batch not allowed"}}
    ).encode()

    replies = await _handle(router, [_call("eth_a", "x"), _call("eth_b", "y")])

    assert [r["id"] for r in replies] == ["x", "y"]
    assert all(r["error"]["message"] == "batch not allowed" for r in replies)


async def test_router_batch_invalid_member_answered_in_place(router: Router) -> None:
    replies = await _handle(router, [_call("local_echo", 1), {"id": 5}, _call("eth_x", 2)])

    assert [r["id"] for r in replies] == [1, 5, 2]
    assert replies[1]["error"]["code"] == -32600


async def test_router_local_error_keeps_its_code_and_message(router: Router) -> None:
    reply = await _handle(router, _call("local_refuse", 4))

    assert reply == {
        "jsonrpc": "2.0",
        "id": 4,
        "error": {"code": -32602, "message": "from is missing: name the account"},
    }


async def test_router_unexpected_exception_is_generic_internal_error(
    router: Router, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="signer_proxy.router"):
        replies = await _handle(
            router, [_call("local_crash", 1), _call("local_echo", 2), _call("eth_x", 3)]
        )

    crash, echo, forwarded = replies
    assert crash == {
        "jsonrpc": "2.0",
        "id": 1,
        "error": {"code": -32603, "message": INTERNAL_ERROR_MESSAGE},
    }
    assert "credentials" not in json.dumps(crash) and "KeyError" not in json.dumps(crash)
    assert echo["result"] == {"echo": []}
    assert forwarded["result"] == "node:eth_x"
    assert "local_crash" in caplog.text  # the details go to the operator's log instead


async def test_router_is_local(router: Router) -> None:
    assert router.is_local("eth_accounts")
    assert not router.is_local("eth_sendRawTransaction")


async def test_router_hands_the_call_context_to_local_methods(node: FakeNode) -> None:
    seen: list[CallContext] = []

    async def whoami(params: Any, context: CallContext) -> str:
        seen.append(context)
        return context.client

    router = Router({"whoami": whoami}, node)
    raw = b'[{"jsonrpc":"2.0","id":1,"method":"whoami"},{"jsonrpc":"2.0","id":2,"method":"whoami"}]'
    replies = await router.handle(parse_body(raw, 10), raw, CallContext(client="ops-bot"))
    assert [r["result"] for r in replies] == ["ops-bot", "ops-bot"]  # type: ignore[index,union-attr]
    assert seen == [CallContext(client="ops-bot"), CallContext(client="ops-bot")]


# --- the call gate (client scope): refused calls are answered, never run or forwarded -------


def _gate(method: str, context: CallContext) -> SignerProxyError | None:
    if context.client == "reader" and method in ("local_echo", "eth_sendRawTransaction"):
        return SignerProxyError(f"{context.client} may not call {method}")
    return None


async def test_gate_refuses_a_single_forwarded_call_without_forwarding(node: FakeNode) -> None:
    router = Router(METHODS, node, gate=_gate)
    raw = json.dumps(_call("eth_sendRawTransaction", 1, ["0x00"])).encode()
    body = parse_body(raw, 10)

    reply = await router.handle(body, raw, CallContext(client="reader"))

    assert reply == {
        "jsonrpc": "2.0",
        "id": 1,
        "error": {"code": -32603, "message": "reader may not call eth_sendRawTransaction"},
    }
    assert node.forwarded == []
    assert await router.handle(body, raw, CallContext(client="ci")) is not None
    assert node.forwarded == [raw]


async def test_gate_refuses_batch_members_and_runs_the_rest(node: FakeNode) -> None:
    router = Router(METHODS, node, gate=_gate)
    calls = [
        _call("local_echo", 1, ["a"]),
        _call("eth_sendRawTransaction", 2, ["0x00"]),
        _call("eth_blockNumber", 3),
        _call("local_echo", None, ["quiet"], notify=True),
    ]
    raw = json.dumps(calls).encode()

    replies = await router.handle(parse_body(raw, 10), raw, CallContext(client="reader"))

    assert isinstance(replies, list)
    assert [r["id"] for r in replies] == [1, 2, 3]
    assert "error" in replies[0] and "error" in replies[1]
    assert replies[2]["result"] == "node:eth_blockNumber"
    [forwarded] = node.forwarded
    assert [c["method"] for c in json.loads(forwarded)] == ["eth_blockNumber"]


async def test_router_with_upstream_keeps_methods_and_observer_and_forwards_elsewhere(
    node: FakeNode,
) -> None:
    seen: list[Any] = []
    router = Router(METHODS, node, observer=lambda body, reply, *_: seen.append(reply))
    other = FakeNode()
    socket_router = router.with_upstream(other)

    assert (await _handle(socket_router, _call("local_echo", 1, ["x"])))["result"] == {
        "echo": ["x"]
    }
    await _handle(socket_router, _call("eth_chainId", 2))
    assert node.forwarded == []
    assert len(other.forwarded) == 1
    assert len(seen) == 2  # the same metrics observer sees both
