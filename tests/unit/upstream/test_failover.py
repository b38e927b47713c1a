"""upstream: send-error classification, URL redaction, and HttpUpstream against a tiny node.

The classification rows are the nodes' own texts. Sources: geth core/txpool errors and
txpool/validation.go ("%w: next nonce %v, tx nonce %v"); reth's RpcInvalidTransactionError;
anvil 1.7.1 (run against the binary: "nonce too low", "transaction already imported",
"replacement transaction underpriced", "Insufficient funds for gas * price + value",
"intrinsic gas too low"); Besu's RpcErrorType; Nethermind's AcceptTxResult (names before
1.3x, geth phrases since); Erigon's txpool DiscardReason; the Hedera JSON-RPC relay's
predefined errors (NONCE_TOO_LOW / NONCE_TOO_HIGH, often behind "[Request ID: …]").
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from signer_proxy.deadline import deadline_scope
from signer_proxy.errors import (
    NodeRejected,
    UpstreamBadResponse,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from signer_proxy.upstream.base import redact_url
from signer_proxy.upstream.failover import FailoverUpstream
from signer_proxy.upstream.http import HttpUpstream
from signer_proxy.upstream.node_errors import SEND_ERROR_PATTERNS, SendOutcome, classify_send_error
from tests.conftest import start_app

ALREADY_KNOWN = SendOutcome.ALREADY_KNOWN
TOO_LOW = SendOutcome.NONCE_TOO_LOW
TOO_HIGH = SendOutcome.NONCE_TOO_HIGH
IN_USE = SendOutcome.NONCE_IN_USE
REJECTED = SendOutcome.REJECTED


# Every node text the classification is tested on; the fault-injection integration test
# (tests/integration/test_faults.py) has a node answer each of them for real.
SEND_ERROR_ROWS = [
    # The node already holds this very transaction: a success.
    pytest.param("already known", ALREADY_KNOWN, id="geth-already-known"),
    pytest.param("already known", ALREADY_KNOWN, id="reth-already-known"),
    pytest.param("transaction already imported", ALREADY_KNOWN, id="anvil-already-imported"),
    pytest.param("Known transaction", ALREADY_KNOWN, id="besu-known-transaction"),
    pytest.param("AlreadyKnown", ALREADY_KNOWN, id="nethermind-old-AlreadyKnown"),
    pytest.param(
        "known transaction: 7f657507aee0511e36d2d1972a6b22e917cc89f92b6c12c4dbd57eaabb236960",
        ALREADY_KNOWN,
        id="geth-old-known-transaction",
    ),
    pytest.param("already known", ALREADY_KNOWN, id="erigon-already-known"),
    pytest.param(
        "INTERNAL_ERROR: existing tx with same hash", ALREADY_KNOWN, id="erigon-same-hash"
    ),
    # The nonce is taken on chain.
    pytest.param("nonce too low: next nonce 5, tx nonce 3", TOO_LOW, id="geth-nonce-too-low"),
    pytest.param("nonce too low: next nonce 9, tx nonce 0", TOO_LOW, id="reth-nonce-too-low"),
    pytest.param("nonce too low", TOO_LOW, id="anvil-nonce-too-low"),
    pytest.param("Nonce too low", TOO_LOW, id="besu-nonce-too-low"),
    pytest.param("OldNonce", TOO_LOW, id="nethermind-old-OldNonce"),
    pytest.param(
        "OldNonce, Current nonce: 22, nonce of rejected tx: 17",
        TOO_LOW,
        id="nethermind-old-OldNonce-detail",
    ),
    pytest.param("nonce too low", TOO_LOW, id="erigon-nonce-too-low"),
    pytest.param(
        "Nonce too low. Provided nonce: 1, current nonce: 2", TOO_LOW, id="hedera-too-low"
    ),
    pytest.param(
        "[Request ID: 2e952947-ffad-408b-aed9-35f3ed152001] Nonce too low. "
        "Provided nonce: 15, current nonce: 15",
        TOO_LOW,
        id="hedera-too-low-with-request-id",
    ),
    # Our counter ran ahead of the node.
    pytest.param("nonce too high", TOO_HIGH, id="geth-reth-nonce-too-high"),
    pytest.param("Nonce too high", TOO_HIGH, id="besu-nonce-too-high"),
    pytest.param(
        "Transaction nonce is too distant from current sender nonce",
        TOO_HIGH,
        id="besu-too-distant",
    ),
    pytest.param("NonceGap", TOO_HIGH, id="nethermind-old-NonceGap"),
    pytest.param(
        "NonceGap, Future nonce. Expected nonce: 10",
        TOO_HIGH,
        id="nethermind-old-NonceGap-detail",
    ),
    pytest.param("nonce too far in future", TOO_HIGH, id="nethermind-too-far-in-future"),
    pytest.param(
        "Nonce too high. Provided nonce: 16, current nonce: 15", TOO_HIGH, id="hedera-too-high"
    ),
    # Another pending transaction holds the nonce.
    pytest.param("replacement transaction underpriced", IN_USE, id="geth-replacement"),
    pytest.param("replacement transaction underpriced", IN_USE, id="anvil-replacement"),
    pytest.param("Replacement transaction underpriced", IN_USE, id="besu-replacement"),
    # Nethermind's pool-full refusal: the fee is too low, the nonce is free. Not a retry.
    pytest.param("FeeTooLowToCompete", REJECTED, id="nethermind-FeeTooLowToCompete"),
    pytest.param("unknown transaction: 0x12", REJECTED, id="unknown-transaction-is-not-known"),
    # The transaction is invalid as it stands.
    pytest.param(
        "insufficient funds for gas * price + value: balance 0, tx cost 21000000000000, "
        "overshot 21000000000000",
        REJECTED,
        id="geth-insufficient-funds",
    ),
    pytest.param(
        "Insufficient funds for gas * price + value", REJECTED, id="anvil-insufficient-funds"
    ),
    pytest.param(
        "intrinsic gas too low: gas 20000, minimum needed 21000",
        REJECTED,
        id="geth-intrinsic-gas",
    ),
    pytest.param("intrinsic gas too low", REJECTED, id="anvil-intrinsic-gas"),
    pytest.param(
        "transaction underpriced: gas tip cap 1, minimum needed 1000000",
        REJECTED,
        id="geth-underpriced-not-replacement",
    ),
    pytest.param(
        "max fee per gas less than block base fee: address "
        "0x336394A3219e71D9d9bd18201d34E95C1Bb7122C, maxFeePerGas: 1, baseFee: 7",
        REJECTED,
        id="geth-fee-cap-too-low",
    ),
    pytest.param("exceeds block gas limit", REJECTED, id="geth-gas-limit"),
    pytest.param("Upfront cost exceeds account balance", REJECTED, id="besu-upfront-cost"),
    pytest.param("Gas price below configured minimum gas price", REJECTED, id="besu-min-gas-price"),
    pytest.param(
        "InsufficientFunds, Account balance: 4740799397601480913, "
        "cumulative cost: 22019342038993800000",
        REJECTED,
        id="nethermind-old-InsufficientFunds",
    ),
    pytest.param("insufficient funds", REJECTED, id="erigon-insufficient-funds"),
    pytest.param(
        "[Request ID: 6198d2a3-590f-4724-aae5-69fecead0c49] Insufficient funds for transfer",
        REJECTED,
        id="hedera-insufficient-funds",
    ),
    pytest.param("invalid sender", REJECTED, id="geth-invalid-sender"),
    pytest.param(
        "max priority fee per gas higher than max fee per gas",
        REJECTED,
        id="geth-tip-above-fee-cap",
    ),
    pytest.param("txpool is full", REJECTED, id="geth-txpool-full"),
    pytest.param(
        "insufficient funds for gas * price + value: have 0 want 21000000000000",
        REJECTED,
        id="reth-insufficient-funds",
    ),
    pytest.param(
        "max fee per gas less than block base fee", REJECTED, id="anvil-reth-fee-cap-too-low"
    ),
    pytest.param("", REJECTED, id="empty-message"),
]


@pytest.mark.parametrize(("message", "outcome"), SEND_ERROR_ROWS)
def test_classify_send_error_node_texts(message: str, outcome: SendOutcome) -> None:
    assert classify_send_error(message) is outcome


def test_send_error_patterns_are_lowercase_so_they_can_match() -> None:
    assert all(fragment == fragment.lower() for fragment, _ in SEND_ERROR_PATTERNS)


def test_classify_send_error_is_case_insensitive() -> None:
    assert classify_send_error("NONCE TOO LOW") is TOO_LOW
    assert classify_send_error("Already Known") is ALREADY_KNOWN


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        pytest.param(
            "https://mainnet.infura.io/v3/0123456789abcdef", "https://mainnet.infura.io", id="path"
        ),
        pytest.param("https://node.example/rpc?apikey=s3cret", "https://node.example", id="query"),
        pytest.param(
            "https://alice:s3cret@node.example:8443/x", "https://node.example:8443", id="userinfo"
        ),
        pytest.param("http://127.0.0.1:8545", "http://127.0.0.1:8545", id="plain"),
        pytest.param("http://node.example/#s3cret", "http://node.example", id="fragment"),
        pytest.param("HTTP://Node.Example:80/k", "http://node.example:80", id="case"),
        pytest.param("http://[::1]:8545/s3cret", "http://[::1]:8545", id="ipv6"),
    ],
)
def test_redact_url_keeps_scheme_host_port_only(url: str, shown: str) -> None:
    assert redact_url(url) == shown


# --- HttpUpstream against a real aiohttp server on 127.0.0.1 ----------------------------

Responder = Callable[[web.Request], Awaitable[web.StreamResponse]]
SECRET_PATH = "/v3/s3cretkey"


@dataclass
class Node:
    """A scripted JSON-RPC node: `respond` answers, `bodies` records what arrived."""

    url: str
    respond: Responder | None = None
    bodies: list[bytes] = field(default_factory=list)


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    scripted = Node(url="")

    async def handle(request: web.Request) -> web.StreamResponse:
        scripted.bodies.append(await request.read())
        assert scripted.respond is not None
        return await scripted.respond(request)

    app = web.Application()
    app.router.add_post(SECRET_PATH, handle)
    port, runner = await start_app(app)
    scripted.url = f"http://127.0.0.1:{port}{SECRET_PATH}"
    yield scripted
    await runner.cleanup()


UpstreamFactory = Callable[..., HttpUpstream]


@pytest.fixture
async def make_upstream() -> AsyncIterator[UpstreamFactory]:
    """HttpUpstream(url, timeout), each closed after the test."""
    made: list[HttpUpstream] = []

    def make(url: str, timeout: float) -> HttpUpstream:
        made.append(HttpUpstream(url, timeout))
        return made[-1]

    yield make
    for upstream in made:
        await upstream.aclose()


def _json_reply(payload: object, status: int = 200) -> Responder:
    async def respond(request: web.Request) -> web.StreamResponse:
        return web.json_response(payload, status=status)

    return respond


def _raw_reply(body: bytes, status: int = 200, content_type: str = "text/html") -> Responder:
    async def respond(request: web.Request) -> web.StreamResponse:
        return web.Response(body=body, status=status, content_type=content_type)

    return respond


async def test_http_upstream_call_sends_json_rpc_and_returns_the_result(
    node: Node, make_upstream: UpstreamFactory
) -> None:
    async def echo(request: web.Request) -> web.StreamResponse:
        sent = json.loads(await request.read())
        return web.json_response({"jsonrpc": "2.0", "id": sent["id"], "result": "0x7a69"})

    node.respond = echo
    upstream = make_upstream(node.url, timeout=5)

    assert await upstream.call("eth_chainId", []) == "0x7a69"
    assert await upstream.call("eth_getBalance", ["0xabc", "latest"]) == "0x7a69"

    first, second = (json.loads(b) for b in node.bodies)
    assert first == {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}
    assert second["id"] == 2 and second["params"] == ["0xabc", "latest"]


async def test_http_upstream_call_null_result_is_a_result(
    node: Node, make_upstream: UpstreamFactory
) -> None:
    node.respond = _json_reply({"jsonrpc": "2.0", "id": 1, "result": None})

    assert await make_upstream(node.url, 5).call("eth_getTransactionReceipt", []) is None


async def test_http_upstream_call_node_error_is_node_rejected_with_its_code(
    node: Node, make_upstream: UpstreamFactory
) -> None:
    node.respond = _json_reply(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "error": {"code": -32003, "message": "nonce too low", "data": {"x": 1}},
        }
    )

    with pytest.raises(NodeRejected) as info:
        await make_upstream(node.url, 5).call("eth_sendRawTransaction", ["0x"])

    assert info.value.error_code() == -32003
    assert info.value.message == "nonce too low"
    assert info.value.data == {"x": 1}


async def test_http_upstream_call_error_that_is_not_an_object_still_rejects(
    node: Node, make_upstream: UpstreamFactory
) -> None:
    node.respond = _json_reply({"jsonrpc": "2.0", "id": 1, "error": "boom"})

    with pytest.raises(NodeRejected) as info:
        await make_upstream(node.url, 5).call("eth_chainId", [])

    assert info.value.error_code() == -32000
    assert info.value.message == "boom"


@pytest.mark.parametrize(
    "responder",
    [
        pytest.param(_raw_reply(b"<html>502 Bad Gateway</html>", status=502), id="html-502"),
        pytest.param(_raw_reply(b"not json", content_type="application/json"), id="garbage"),
        pytest.param(_json_reply([1, 2]), id="json-array"),
        pytest.param(_json_reply({"jsonrpc": "2.0", "id": 1}), id="neither-result-nor-error"),
    ],
)
async def test_http_upstream_call_non_json_rpc_answer_is_bad_response(
    node: Node, make_upstream: UpstreamFactory, responder: Responder
) -> None:
    node.respond = responder

    with pytest.raises(UpstreamBadResponse) as info:
        await make_upstream(node.url, 5).call("eth_chainId", [])

    assert info.value.code == -32021
    assert "eth_chainId" in info.value.message
    assert "s3cret" not in info.value.message
    assert "http://127.0.0.1:" in info.value.message


async def test_http_upstream_forward_relays_bytes_untouched(
    node: Node, make_upstream: UpstreamFactory
) -> None:
    reply = b'{"jsonrpc":"2.0",  "id":"x", "result":"0x1"}\n'
    node.respond = _raw_reply(reply, content_type="application/json")
    request = b'[{"jsonrpc": "2.0", "id": "x", "method": "eth_blockNumber"}]'

    assert await make_upstream(node.url, 5).forward(request) == reply
    assert node.bodies == [request]


async def test_http_upstream_forward_relays_a_json_error_whatever_the_status(
    node: Node, make_upstream: UpstreamFactory
) -> None:
    reply = b'{"jsonrpc":"2.0","id":1,"error":{"code":-32005,"message":"rate limited"}}'
    node.respond = _raw_reply(reply, status=429, content_type="text/plain")

    assert await make_upstream(node.url, 5).forward(b"{}") == reply


async def test_http_upstream_forward_non_json_error_page_is_bad_response(
    node: Node, make_upstream: UpstreamFactory
) -> None:
    node.respond = _raw_reply(b"<html>503 Service Unavailable</html>", status=503)

    with pytest.raises(UpstreamBadResponse, match="HTTP 503") as info:
        await make_upstream(node.url, 5).forward(b"{}")

    assert "s3cret" not in info.value.message


async def test_http_upstream_slow_node_is_timeout_naming_the_flag(
    node: Node, make_upstream: UpstreamFactory
) -> None:
    async def slow(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(0.5)
        return web.json_response({"jsonrpc": "2.0", "id": 1, "result": "0x1"})

    node.respond = slow

    with pytest.raises(UpstreamTimeout) as info:
        await make_upstream(node.url, timeout=0.05).call("eth_chainId", [])

    assert info.value.code == -32020
    assert "--upstream-timeout" in info.value.message
    assert "s3cret" not in info.value.message


async def test_http_upstream_dropped_connection_may_have_delivered(
    node: Node, make_upstream: UpstreamFactory
) -> None:
    async def hang_up(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        request.transport.close()
        await asyncio.sleep(0.05)
        return web.Response()

    node.respond = hang_up

    with pytest.raises(UpstreamTimeout, match="mid-request"):
        await make_upstream(node.url, 5).call("eth_sendRawTransaction", ["0x"])


async def test_http_upstream_nothing_listening_is_unavailable(
    make_upstream: UpstreamFactory,
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    upstream = make_upstream(f"http://127.0.0.1:{port}/key/s3cret", 5)

    with pytest.raises(UpstreamUnavailable) as info:
        await upstream.call("eth_chainId", [])

    assert not isinstance(info.value, UpstreamTimeout)  # surely not delivered
    assert "could not be reached" in info.value.message
    assert "--upstream" in info.value.message
    assert "s3cret" not in info.value.message
    assert upstream.display_url == f"http://127.0.0.1:{port}"


async def test_http_upstream_all_connections_busy_is_unavailable_and_nothing_sent(
    node: Node,
) -> None:
    """Every connection busy until the deadline: the request was never written, so the class
    says "not delivered" (a send frees its nonce), and the message says what happened."""
    release = asyncio.Event()

    async def held(request: web.Request) -> web.StreamResponse:
        await release.wait()
        return web.json_response({"jsonrpc": "2.0", "id": 1, "result": "0x1"})

    node.respond = held
    upstream = HttpUpstream(node.url, 5, max_connections=1)
    try:
        first = asyncio.create_task(upstream.call("eth_blockNumber", []))
        await asyncio.sleep(0.05)
        with pytest.raises(UpstreamUnavailable) as info, deadline_scope(0.1):
            await upstream.call("eth_sendRawTransaction", ["0x01"])
        assert not isinstance(info.value, UpstreamTimeout)
        assert "all 1 connections stayed busy" in info.value.message
        assert "was not sent" in info.value.message
        assert "s3cret" not in info.value.message
        release.set()
        assert await first == "0x1"
        assert len(node.bodies) == 1 and b"eth_sendRawTransaction" not in node.bodies[0]
    finally:
        release.set()
        await upstream.aclose()


# --- FailoverUpstream: several nodes, one at a time ---------------------------------------


async def start_node(respond: Responder) -> tuple[str, web.AppRunner, list[bytes]]:
    """Another scripted node on 127.0.0.1: (url, runner, bodies received)."""
    bodies: list[bytes] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        bodies.append(await request.read())
        return await respond(request)

    app = web.Application()
    app.router.add_post("/", handle)
    port, runner = await start_app(app)
    return f"http://127.0.0.1:{port}/", runner, bodies


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/"


def _chain(chain_id: str) -> Responder:
    async def respond(request: web.Request) -> web.StreamResponse:
        sent = json.loads(await request.read())
        return web.json_response({"jsonrpc": "2.0", "id": sent["id"], "result": chain_id})

    return respond


async def test_failover_reads_move_on_from_an_unreachable_node(
    make_upstream: UpstreamFactory,
) -> None:
    url, runner, bodies = await start_node(_chain("0x1"))
    try:
        dead = make_upstream(closed_port_url(), 5)
        upstream = FailoverUpstream([dead, make_upstream(url, 5)])

        assert await upstream.call("eth_chainId", []) == "0x1"
        assert upstream.healthy() == [redact_url(url)]
        assert await upstream.forward(b'{"jsonrpc":"2.0","id":1,"method":"eth_chainId"}')
        assert len(bodies) == 2
    finally:
        await runner.cleanup()


async def test_failover_send_after_a_timeout_is_not_sent_elsewhere(
    node: Node, make_upstream: UpstreamFactory
) -> None:
    async def slow(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(0.5)
        return web.json_response({"jsonrpc": "2.0", "id": 1, "result": "0x1"})

    node.respond = slow
    url, runner, bodies = await start_node(_chain("0xabc"))
    try:
        upstream = FailoverUpstream([make_upstream(node.url, 0.05), make_upstream(url, 5)])

        with pytest.raises(UpstreamTimeout):
            await upstream.call("eth_sendRawTransaction", ["0x02"])
        assert bodies == []  # the first node may have it: the caller decides what to resend

        # The slow node is out of rotation: the resend goes to the other one.
        assert await upstream.call("eth_sendRawTransaction", ["0x02"]) == "0xabc"
        assert len(bodies) == 1
    finally:
        await runner.cleanup()


async def test_failover_all_nodes_down_is_the_last_error(make_upstream: UpstreamFactory) -> None:
    upstream = FailoverUpstream(
        [make_upstream(closed_port_url(), 5), make_upstream(closed_port_url(), 5)]
    )

    with pytest.raises(UpstreamUnavailable, match="could not be reached"):
        await upstream.call("eth_blockNumber", [])
    assert upstream.healthy() == []


async def test_failover_probe_brings_back_nodes_on_the_same_chain_only(
    make_upstream: UpstreamFactory,
) -> None:
    good_url, good, _ = await start_node(_chain("0x1"))
    other_url, other, _ = await start_node(_chain("0x5"))
    try:
        upstream = FailoverUpstream([make_upstream(good_url, 5), make_upstream(other_url, 5)])

        await upstream.probe()

        assert upstream.healthy() == [redact_url(good_url)]  # 0x5 is another chain
    finally:
        await good.cleanup()
        await other.cleanup()


def _heads(chain_id: str, head: list[int]) -> Responder:
    """A node on `chain_id` whose head is `head[0]` (changed by the test)."""

    async def respond(request: web.Request) -> web.StreamResponse:
        sent = json.loads(await request.read())
        result = hex(head[0]) if sent["method"] == "eth_blockNumber" else chain_id
        return web.json_response({"jsonrpc": "2.0", "id": sent["id"], "result": result})

    return respond


@pytest.mark.parametrize(
    ("max_lag", "behind_head", "in_rotation"),
    [
        pytest.param(20, 100, ["ahead"], id="31-behind-out"),
        pytest.param(20, 111, ["behind", "ahead"], id="20-behind-in"),
        pytest.param(0, 0, ["behind", "ahead"], id="heads-not-compared"),
    ],
)
async def test_failover_probe_keeps_out_a_node_too_far_behind_the_highest_head(
    make_upstream: UpstreamFactory, max_lag: int, behind_head: int, in_rotation: list[str]
) -> None:
    behind, ahead = [behind_head], [131]
    behind_url, behind_node, behind_bodies = await start_node(_heads("0x1", behind))
    ahead_url, ahead_node, _ = await start_node(_heads("0x1", ahead))
    names = {redact_url(behind_url): "behind", redact_url(ahead_url): "ahead"}
    try:
        upstream = FailoverUpstream(
            [make_upstream(behind_url, 5), make_upstream(ahead_url, 5)], max_lag
        )
        await upstream.probe()
        assert [names[url] for url in upstream.healthy()] == in_rotation
        asked = [json.loads(body)["method"] for body in behind_bodies]
        assert ("eth_blockNumber" in asked) == bool(max_lag)
        if in_rotation == ["ahead"]:
            assert await upstream.call("eth_blockNumber", []) == hex(131)
            behind[0] = 140  # caught up, and past the other: back, first in order again
            await upstream.probe()
            assert [names[url] for url in upstream.healthy()] == ["behind", "ahead"]
            assert await upstream.call("eth_blockNumber", []) == hex(140)
    finally:
        await behind_node.cleanup()
        await ahead_node.cleanup()
