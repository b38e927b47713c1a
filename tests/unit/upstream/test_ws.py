"""upstream_ws: the node's WebSocket URL, routing node messages by their head, restoring ids
without re-encoding, and the close reason. The connection itself is tested against anvil
(tests/integration/test_ws.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from signer_proxy.transport.ws import MAX_CLOSE_REASON
from signer_proxy.upstream.ws import derive_ws_url, lost_reason, read_node_message, with_client_id


@pytest.mark.parametrize(
    ("http_url", "ws_url"),
    [
        pytest.param("http://127.0.0.1:8545", "ws://127.0.0.1:8545", id="http"),
        pytest.param("https://node.example/v3/KEY", "wss://node.example/v3/KEY", id="https-path"),
        pytest.param("http://u:p@[::1]:8545/?k=v", "ws://u:p@[::1]:8545/?k=v", id="ipv6-auth"),
        pytest.param("ws://127.0.0.1:8546", "ws://127.0.0.1:8546", id="already-ws"),
    ],
)
def test_derive_ws_url(http_url: str, ws_url: str) -> None:
    assert derive_ws_url(http_url) == ws_url


NEW_HEAD = (
    b'{"jsonrpc":"2.0","method":"eth_subscription","params":{"subscription":"0x1","result":{}}}'
)


@pytest.mark.parametrize(
    ("raw", "kind", "reply_id"),
    [
        pytest.param(b'{"jsonrpc":"2.0","id":17,"result":"0x1"}', "reply", 17, id="geth-reply"),
        pytest.param(b'{"jsonrpc":"2.0","id":3}', "reply", 3, id="reply-id-last"),
        pytest.param(b'{"id":5,"jsonrpc":"2.0","result":null}', "reply", 5, id="id-first"),
        pytest.param(
            b'{"jsonrpc": "2.0", "result": "0x1", "id": 9}', "reply", 9, id="decoded-reply"
        ),
        pytest.param(NEW_HEAD, "notification", None, id="notification"),
        pytest.param(
            b'{"params":{"subscription":"0x1"},"method":"eth_subscription","jsonrpc":"2.0"}',
            "notification",
            None,
            id="notification-any-order",
        ),
        pytest.param(b'[{"jsonrpc":"2.0","id":1,"result":1}]', "batch", None, id="batch"),
        pytest.param(
            b'{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error"}}',
            "unknown",
            None,
            id="null-id-error",
        ),
        pytest.param(b'{"jsonrpc":"2.0","id":"s","result":1}', "unknown", None, id="string-id"),
        pytest.param(b"not json", "unknown", None, id="not-json"),
    ],
)
def test_read_node_message(raw: bytes, kind: str, reply_id: int | None) -> None:
    message = read_node_message(raw)
    assert message.kind == kind
    assert message.reply_id == reply_id


@pytest.mark.parametrize(
    ("raw", "ours", "theirs", "expected"),
    [
        pytest.param(
            b'{"jsonrpc":"2.0","id":17,"result":{"a" :  1}}',
            17,
            "abc",
            b'{"jsonrpc":"2.0","id":"abc","result":{"a" :  1}}',
            id="kept-bytes-string-id",
        ),
        pytest.param(
            b'{"jsonrpc":"2.0","id":4,"result":"0x"}', 4, None,
            b'{"jsonrpc":"2.0","id":null,"result":"0x"}',
            id="null-id",
        ),
        pytest.param(
            b'{"jsonrpc":"2.0","id":4,"result":"0x"}', 4, 1.5,
            b'{"jsonrpc":"2.0","id":1.5,"result":"0x"}',
            id="float-id",
        ),
    ],
)  # fmt: skip
def test_with_client_id_keeps_the_node_bytes(
    raw: bytes, ours: int, theirs: Any, expected: bytes
) -> None:
    assert with_client_id(raw, ours, theirs) == expected


def test_with_client_id_re_encodes_an_unusual_shape() -> None:
    raw = b'{"result": "0x1", "jsonrpc": "2.0", "id": 12}'
    assert json.loads(with_client_id(raw, 12, "x")) == {
        "result": "0x1",
        "jsonrpc": "2.0",
        "id": "x",
    }


def test_with_client_id_never_touches_an_id_inside_the_result() -> None:
    raw = b'{"jsonrpc":"2.0","result":{"id":12},"id":12}'
    assert json.loads(with_client_id(raw, 12, 7)) == {
        "jsonrpc": "2.0",
        "result": {"id": 12},
        "id": 7,
    }


@pytest.mark.parametrize(
    ("code", "says"),
    [
        pytest.param(1001, "closed (code 1001)", id="closed"),
        pytest.param(None, "was lost", id="lost"),
        pytest.param(65535, "closed (code 65535)", id="widest"),
    ],
)
def test_lost_reason_says_what_ended_and_fits_a_close_frame(code: int | None, says: str) -> None:
    reason = lost_reason(code)
    assert says in reason and "subscribe again" in reason
    assert len(reason.encode()) <= MAX_CLOSE_REASON
