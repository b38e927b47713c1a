"""transport/operator.py: the credential forms the page takes, and who counts as loopback."""

from __future__ import annotations

import base64
from unittest.mock import Mock

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from signer_proxy.transport.operator import (
    OperatorRefused,
    add_operator_routes,
    admitted,
    configure_operator,
    is_loopback,
    presented_token,
)


def basic(text: str) -> str:
    return "Basic " + base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    ("header", "token"),
    [
        pytest.param(None, None, id="none"),
        pytest.param("Bearer abc", b"abc", id="bearer"),
        pytest.param("bearer  abc ", b"abc", id="bearer-any-case-and-spaces"),
        pytest.param(basic("user:s3cret"), b"s3cret", id="basic-password"),
        pytest.param(basic(":s3cret:with:colons"), b"s3cret:with:colons", id="basic-colons"),
        pytest.param(basic("no-colon"), b"", id="basic-no-password"),
        pytest.param("Basic ***", None, id="basic-not-base64"),
        pytest.param("Token abc", None, id="other-scheme"),
    ],
)
def test_presented_token(header: str | None, token: bytes | None) -> None:
    assert presented_token(header) == token


@pytest.mark.parametrize(
    ("remote", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("10.0.0.1", False),
        ("192.168.1.1", False),
        ("::ffff:10.0.0.1", False),
        ("::ffff:127.0.0.1", True),
        ("", False),
        (None, False),
        ("not-an-ip", False),
    ],
)
def test_is_loopback(remote: str | None, loopback: bool) -> None:
    assert is_loopback(remote) is loopback


def request_from(peer: str, token: bytes = b"", authorization: str | None = None) -> web.Request:
    app = web.Application()
    configure_operator(app, token, frozenset())
    add_operator_routes(app, app)
    transport = Mock()
    transport.get_extra_info = lambda name, default=None: (
        (peer, 50000) if name == "peername" else default
    )
    headers = {"Host": "127.0.0.1:8545"}
    if authorization:
        headers["Authorization"] = authorization
    return make_mocked_request(
        "GET", "/operator/status.json", headers=headers, app=app, transport=transport
    )


def test_without_credentials_configured_only_loopback_peers_get_in() -> None:
    assert admitted(request_from("127.0.0.1")) == "loopback"
    with pytest.raises(OperatorRefused, match="loopback clients only") as refused:
        admitted(request_from("10.1.2.3"))
    assert refused.value.status == 403


def test_with_a_token_configured_loopback_is_not_enough() -> None:
    token = b"0123456789abcdef0123"
    with pytest.raises(OperatorRefused) as refused:
        admitted(request_from("127.0.0.1", token))
    assert refused.value.status == 401
    assert admitted(request_from("10.1.2.3", token, "Bearer 0123456789abcdef0123")) == (
        "the admin token"
    )
