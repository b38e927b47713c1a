"""transport.access: Host and Origin rules, credentials as requests present them."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from signer_proxy.access.auth import Authenticator, Credentials, Identity, hash_api_key
from signer_proxy.access.ratelimit import RateLimiter
from signer_proxy.errors import BadHost, Forbidden, Unauthorized
from signer_proxy.transport.door import (
    ACCESS,
    Access,
    authenticate,
    call_context,
    caller_of,
    check_host_and_origin,
    check_host_and_origin_of,
    cors_headers,
    credentials_of,
    host_name,
    host_well_formed,
)
from tests.auth_support import API_KEYS


@pytest.mark.parametrize(
    ("header", "name"),
    [
        pytest.param("127.0.0.1:8545", "127.0.0.1", id="v4-port"),
        pytest.param("LocalHost", "localhost", id="case"),
        pytest.param("[::1]:8545", "::1", id="v6-port"),
        pytest.param("[::1]", "::1", id="v6"),
        pytest.param("proxy.example.com.:443", "proxy.example.com", id="trailing-dot"),
    ],
)
def test_host_name(header: str, name: str) -> None:
    assert host_name(header) == name


DEFAULT = Access(
    Authenticator({}, required=False),
    RateLimiter({}),
    ("localhost", "127.0.0.1", "::1", "*.internal.example"),
    ("https://app.example",),
)


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        pytest.param("127.0.0.1:8545", True, id="loopback"),
        pytest.param("localhost:8545", True, id="localhost"),
        pytest.param("[::1]:8545", True, id="v6"),
        pytest.param("signer.internal.example", True, id="pattern"),
        pytest.param("internal.example", False, id="pattern-needs-a-label"),
        pytest.param("evil.example:8545", False, id="rebinding-name"),
        pytest.param("127.0.0.1.evil.example", False, id="lookalike"),
        pytest.param(None, True, id="no-host-header"),
    ],
)
def test_host_allowed(host: str | None, allowed: bool) -> None:
    assert DEFAULT.host_allowed(host) is allowed
    assert Access(DEFAULT.authenticator, DEFAULT.limiter, ("*",)).host_allowed(host)


def request(headers: dict[str, str], path: str = "/", peercert: Any = None) -> web.Request:
    class Transport:
        def get_extra_info(self, name: str, default: Any = None) -> Any:
            return peercert if name == "peercert" else default

    app = web.Application()
    app[ACCESS] = DEFAULT
    return make_mocked_request("POST", path, headers=headers, app=app, transport=Transport())


@pytest.mark.parametrize(
    ("headers", "fragment"),
    [
        pytest.param({"Host": "evil.example"}, "Host 'evil.example' is not served", id="host"),
        pytest.param(
            {"Host": "127.0.0.1", "Origin": "https://evil.example"},
            "web pages at 'https://evil.example' are refused",
            id="origin",
        ),
        pytest.param({"Host": "127.0.0.1", "Origin": "null"}, "'null' are refused", id="null"),
    ],
)
def test_check_host_and_origin_refuses(headers: dict[str, str], fragment: str) -> None:
    with pytest.raises(Forbidden) as refused:
        check_host_and_origin(request(headers))
    assert fragment in refused.value.message
    assert refused.value.http_status == 403


def test_check_host_and_origin_allows_listed_origins_and_no_origin() -> None:
    check_host_and_origin(request({"Host": "127.0.0.1"}))
    check_host_and_origin(request({"Host": "127.0.0.1", "Origin": "https://app.example"}))


def test_cors_headers_only_for_allowed_origins() -> None:
    allowed = cors_headers(request({"Origin": "https://app.example"}))
    assert allowed["Access-Control-Allow-Origin"] == "https://app.example"
    assert allowed["Vary"] == "Origin"
    assert cors_headers(request({"Origin": "https://evil.example"})) == {}
    assert cors_headers(request({})) == {}


@pytest.mark.parametrize(
    ("headers", "path", "peercert", "expected"),
    [
        pytest.param({}, "/", None, Credentials(), id="nothing"),
        pytest.param(
            {"Authorization": "Bearer  abc "}, "/", None, Credentials(bearer="abc"), id="bearer"
        ),
        pytest.param({}, "/?key=abc", None, Credentials(query_key="abc"), id="query"),
        pytest.param(
            {},
            "/",
            {"subject": ((("commonName", "ci"),),)},
            Credentials(cert_names=("ci",)),
            id="cert",
        ),
    ],
)
def test_credentials(
    headers: dict[str, str], path: str, peercert: Any, expected: Credentials
) -> None:
    # As identify() reads them: the Caller of the request, then its credentials.
    caller = caller_of(request(headers, path, peercert))
    assert credentials_of(caller.authorization, caller.query_key, caller.peercert) == expected


def test_authenticate_through_the_apps_authenticator() -> None:
    app = web.Application()
    authenticator = Authenticator({"ci": [hash_api_key(API_KEYS["ci"])]}, required=True)
    app[ACCESS] = Access(authenticator, RateLimiter({}))
    header = {"Authorization": f"Bearer {API_KEYS['ci']}"}

    assert authenticate(make_mocked_request("POST", "/", headers=header, app=app)) == Identity(
        "ci", "api_key"
    )
    with pytest.raises(Unauthorized):
        authenticate(make_mocked_request("POST", "/", app=app))


def test_call_context_carries_client_transport_and_how() -> None:
    context = call_context(Identity("ci", "client_cert"), "ws")
    assert (context.client, context.transport, context.auth) == ("ci", "ws", "client_cert")


@pytest.mark.parametrize(
    ("host", "ok"),
    [
        pytest.param("127.0.0.1:8545", True, id="v4-port"),
        pytest.param("[::1]:8545", True, id="v6-port"),
        pytest.param("[::1]", True, id="v6"),
        pytest.param("proxy.example.com.", True, id="trailing-dot"),
        pytest.param("", True, id="empty"),  # RFC 9112 allows an empty Host
        pytest.param("[::1]evil.com", False, id="after-bracket"),
        pytest.param("[::1", False, id="unclosed"),
        pytest.param("evil.com]:80", False, id="stray-bracket"),
        pytest.param("user@proxy", False, id="userinfo"),
        pytest.param("a b", False, id="space"),
        pytest.param("proxy:80:81", False, id="two-ports"),
    ],
)
def test_host_well_formed(host: str, ok: bool) -> None:
    assert host_well_formed(host) is ok


def test_bad_host_is_400_before_the_allowed_hosts_check() -> None:
    """Even with every host allowed, a malformed one is refused; a missing one only when
    HTTP/1.1 requires it."""
    open_access = Access(Authenticator({}, required=False), RateLimiter({}))
    with pytest.raises(BadHost) as refused:
        check_host_and_origin_of(open_access, "[::1]evil.com", None)
    assert refused.value.http_status == 400
    with pytest.raises(BadHost, match="needs a Host header"):
        check_host_and_origin_of(open_access, None, None, host_required=True)
    check_host_and_origin_of(open_access, None, None)  # HTTP/1.0: no Host is allowed
