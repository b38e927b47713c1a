"""The operator page: GET /operator (the page, its script and style) and
GET /operator/status.json (its data), read-only.

Who gets in: the admin token (`Authorization: Bearer TOKEN`, or HTTP Basic with the token as
password, so a browser can ask for it), or a client named in --admin-clients, exactly as for
the admin routes. With neither configured the page is served to loopback peers only, and only
while client authentication is off too: when auth is configured, the page is never open.
Every answer carries a strict Content-Security-Policy; everything the page loads comes from
the package (signer_proxy/ops/page/), and what it shows is escaped text.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import logging
from importlib import resources
from typing import Any

import orjson
from aiohttp import web

from signer_proxy.errors import Forbidden, SignerProxyError
from signer_proxy.ops.status import StatusBoard
from signer_proxy.transport.door import ACCESS, OPEN_ACCESS, authenticate, check_host_and_origin

log = logging.getLogger(__name__)

PAGE_PATH = "/operator"
STATUS_PATH = "/operator/status.json"

# The app whose board and credentials the page uses (the main app, also from the ops listener).
OPERATOR_SOURCE = web.AppKey("operator_source", web.Application)
STATUS_BOARD = web.AppKey("status_board", StatusBoard)
OPERATOR_TOKEN = web.AppKey("operator_token", bytes)  # b"": no admin token
OPERATOR_CLIENTS = web.AppKey("operator_clients", frozenset[str])

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Cross-Origin-Resource-Policy": "same-origin",
}
CHALLENGE = 'Basic realm="signer-proxy operator", charset="UTF-8"'

ASSETS = {
    PAGE_PATH: ("index.html", "text/html"),
    f"{PAGE_PATH}/page.js": ("page.js", "text/javascript"),
    f"{PAGE_PATH}/page.css": ("page.css", "text/css"),
    f"{PAGE_PATH}/favicon.svg": ("favicon.svg", "image/svg+xml"),
}


class OperatorRefused(SignerProxyError):
    """The page refused a caller; `status` is the HTTP status it gets."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def presented_token(authorization: str | None) -> bytes | None:
    """The token in `Authorization: Bearer TOKEN` or in HTTP Basic's password; None if none."""
    scheme, _, value = (authorization or "").partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer":
        return value.strip().encode()
    if scheme == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            return None
        return decoded.partition(b":")[2]
    return None


def is_loopback(remote: str | None) -> bool:
    """Whether the peer is this machine (IPv4-mapped IPv6 counts as its IPv4 address)."""
    try:
        address = ipaddress.ip_address(remote or "")
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return bool((mapped or address).is_loopback)


def admitted(request: web.Request) -> str:
    """Who may see the page ("the admin token", "client NAME", "loopback"); OperatorRefused
    (401 or 403) otherwise."""
    source = request.app[OPERATOR_SOURCE]
    try:
        check_host_and_origin(request)
    except Forbidden as exc:
        raise OperatorRefused(exc.message, 403) from None
    token, clients = source[OPERATOR_TOKEN], source[OPERATOR_CLIENTS]
    presented = presented_token(request.headers.get("Authorization"))
    if token and presented is not None and hmac.compare_digest(presented, token):
        return "the admin token"
    if clients:
        try:
            client = authenticate(request).client
        except SignerProxyError:
            client = None
        if client in clients:
            return f"client {client}"
        if client is not None:
            raise OperatorRefused(f"client {client} is not in --admin-clients", 403)
    if token or clients:
        raise OperatorRefused(
            "send the admin token (Authorization: Bearer, or as the password your browser "
            "asks for) or a client credential named in --admin-clients",
            401,
        )
    access = source.get(ACCESS) or OPEN_ACCESS
    if access.authenticator.required:
        raise OperatorRefused(
            "the operator page is off: authentication is configured, so the page needs "
            "--admin-token-file or --admin-clients",
            403,
        )
    if not is_loopback(request.remote):
        raise OperatorRefused(
            "without --admin-token-file or --admin-clients the operator page is served to "
            "loopback clients only",
            403,
        )
    return "loopback"


def _refusal(exc: OperatorRefused) -> web.Response:
    headers = dict(SECURITY_HEADERS)
    if exc.status == 401:
        headers["WWW-Authenticate"] = CHALLENGE
    return web.Response(
        status=exc.status, text=exc.message + "\n", content_type="text/plain", headers=headers
    )


def _asset(name: str) -> bytes:
    return (resources.files("signer_proxy.ops") / "page" / name).read_bytes()


async def handle_asset(request: web.Request) -> web.Response:
    """The page, its script or its style (after the door)."""
    try:
        admitted(request)
    except OperatorRefused as exc:
        return _refusal(exc)
    name, content_type = ASSETS[request.path.rstrip("/") or PAGE_PATH]
    return web.Response(
        body=_asset(name), content_type=content_type, charset="utf-8", headers=SECURITY_HEADERS
    )


async def handle_status(request: web.Request) -> web.Response:
    """The page's data as JSON (documented in docs/operations.md)."""
    try:
        who = admitted(request)
    except OperatorRefused as exc:
        log.info("refused %s from %s: %s", STATUS_PATH, request.remote, exc.message)
        return _refusal(exc)
    board = request.app[OPERATOR_SOURCE].get(STATUS_BOARD)
    if board is None:
        return _refusal(OperatorRefused("the proxy is still starting; retry in a moment", 503))
    data: dict[str, Any] = await board.snapshot()
    log.debug("%s for %s", STATUS_PATH, who)
    return web.Response(
        body=orjson.dumps(data), content_type="application/json", headers=SECURITY_HEADERS
    )


def configure_operator(app: web.Application, token: bytes, clients: frozenset[str]) -> None:
    """The credentials the page takes (the admin ones), kept on the main app."""
    app[OPERATOR_TOKEN] = token
    app[OPERATOR_CLIENTS] = clients


def add_operator_routes(app: web.Application, source: web.Application) -> None:
    """Serve the page on `app` with `source`'s board and credentials (the same app, or the
    main app when `app` is the --metrics-listen one)."""
    app[OPERATOR_SOURCE] = source
    if app is not source and ACCESS in source:  # Host, Origin and credentials as on the main
        app[ACCESS] = source[ACCESS]
    for path in ASSETS:
        app.router.add_get(path, handle_asset)
    app.router.add_get(STATUS_PATH, handle_status)
