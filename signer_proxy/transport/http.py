"""JSON-RPC over HTTP POST /: admit (Host, Origin, credentials), read with a size limit, parse,
charge the client's rate limit, route with the client's context, reply."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from signer_proxy.errors import BodyTooLarge, RateLimited, SignerProxyError, Unauthorized
from signer_proxy.jsonrpc import dumps, error_response, parse_body
from signer_proxy.metrics import METRICS
from signer_proxy.router import Router
from signer_proxy.transport.access import (
    admit,
    call_context,
    charge,
    cors,
    handle_preflight,
    retry_after_header,
)

ROUTER = web.AppKey("router", Router)
MAX_BATCH = web.AppKey("max_batch", int)
MAX_BODY = web.AppKey("max_body", int)


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=dumps(payload), status=status, content_type="application/json", headers=headers
    )


def refusal_response(request: web.Request, exc: SignerProxyError) -> web.Response:
    """A whole request refused before routing (401, 403, 429, 413, parse errors)."""
    request.app[METRICS].count_rejected_body(exc)
    headers: dict[str, str] = {}
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = 'Bearer realm="signer-proxy"'
    if isinstance(exc, RateLimited):
        headers.update(retry_after_header(exc))
    return _json(error_response(None, exc), status=exc.http_status, headers=headers)


async def handle_post(request: web.Request) -> web.StreamResponse:
    try:
        identity = admit(request)
    except SignerProxyError as exc:
        return refusal_response(request, exc)
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        error = BodyTooLarge(
            f"the request body is over the limit of {request.app[MAX_BODY]} bytes; "
            "send a smaller body or raise --max-body-bytes"
        )
        request.app[METRICS].count_rejected_body(error)
        return _json(error_response(None, error), status=error.http_status)
    try:
        body = parse_body(raw, request.app[MAX_BATCH])
        charge(request.app, identity, len(body.calls))
    except SignerProxyError as exc:
        return refusal_response(request, exc)
    reply = await request.app[ROUTER].handle(body, raw, call_context(identity, "http"))
    if reply is None:  # notifications only: JSON-RPC says reply with nothing
        return web.Response(status=204)
    if isinstance(reply, bytes):
        return web.Response(body=reply, content_type="application/json")
    return _json(reply)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/", handle_post)
    app.router.add_route("OPTIONS", "/", handle_preflight)
    app.middlewares.append(cors)
