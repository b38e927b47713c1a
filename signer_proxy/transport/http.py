"""JSON-RPC over HTTP POST /: read with a size limit, parse, route, reply."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from signer_proxy.errors import BodyTooLarge, SignerProxyError
from signer_proxy.jsonrpc import CallContext, error_response, parse_body
from signer_proxy.metrics import METRICS
from signer_proxy.router import Router

ROUTER = web.AppKey("router", Router)
MAX_BATCH = web.AppKey("max_batch", int)
MAX_BODY = web.AppKey("max_body", int)


def call_context(request: web.Request, transport: str = "http") -> CallContext:
    """Who is calling: the one place both transports (HTTP POST, WebSocket upgrade) get the
    CallContext their calls run with."""
    return CallContext(transport=transport)


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=json.dumps(payload).encode(), status=status, content_type="application/json"
    )


async def handle_post(request: web.Request) -> web.StreamResponse:
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
    except SignerProxyError as exc:
        request.app[METRICS].count_rejected_body(exc)
        return _json(error_response(None, exc), status=exc.http_status)
    reply = await request.app[ROUTER].handle(body, raw, call_context(request))
    if reply is None:  # notifications only: JSON-RPC says reply with nothing
        return web.Response(status=204)
    if isinstance(reply, bytes):
        return web.Response(body=reply, content_type="application/json")
    return _json(reply)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/", handle_post)
