"""JSON-RPC over HTTP POST /: admit (Host, Origin, credentials), read with a size limit, parse,
charge the client's rate limit, route with the client's context, reply.

`RpcEndpoint` is that sequence once the request's head is parsed. Two servers call it: the
fast lane (transport.fast_lane), which parses the common request itself, and aiohttp's
handler below for the rest (chunked bodies, HTTP/1.0, Expect: 100-continue ...), so both
answer alike.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from aiohttp import web

from signer_proxy.access.auth import Identity
from signer_proxy.errors import (
    BodyTooLarge,
    RateLimited,
    RequestTimeout,
    SignerProxyError,
    Unauthorized,
)
from signer_proxy.jsonrpc import dumps, error_response, parse_body
from signer_proxy.ops.metrics import METRICS
from signer_proxy.router import Router
from signer_proxy.transport.chains import ROUTES
from signer_proxy.transport.door import (
    ACCESS,
    OPEN_ACCESS,
    Caller,
    admit_caller,
    call_context,
    caller_of,
    cors,
    handle_preflight,
    retry_after_header,
)

log = logging.getLogger(__name__)

ROUTER = web.AppKey("router", Router)  # the default chain's (or the first chain's)
MAX_BATCH = web.AppKey("max_batch", int)
MAX_BODY = web.AppKey("max_body", int)
BODY_TIMEOUT = web.AppKey("body_timeout", float)  # --body-timeout, for aiohttp's requests


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    """The reply to a POST /, for whichever server writes it."""

    status: int
    body: bytes | None  # None: no content (204), nothing to say to notifications
    headers: tuple[tuple[str, str], ...] = ()


NO_CONTENT = HttpAnswer(204, None)


class RpcEndpoint:
    """POST / after its head is parsed: the door, the body, the router."""

    def __init__(self, app: web.Application) -> None:
        self.access = app.get(ACCESS) or OPEN_ACCESS
        self.routes = app[ROUTES]
        self.metrics = app[METRICS]
        self.max_batch = app[MAX_BATCH]
        self.max_body = app[MAX_BODY]

    def admit(self, caller: Caller, path: str = "/") -> Identity:
        """The caller's identity; SignerProxyError (401/403) when it may not come in, then
        UnknownChain (404) when `path` names no chain: both before any body is read."""
        identity = admit_caller(self.access, caller)
        self.routes.for_path(path)
        return identity

    def refusal(self, exc: SignerProxyError) -> HttpAnswer:
        """A whole request refused before routing (401, 403, 429, 413, parse errors)."""
        self.metrics.count_rejected_body(exc)
        headers: tuple[tuple[str, str], ...] = ()
        if isinstance(exc, Unauthorized):
            headers = (("WWW-Authenticate", 'Bearer realm="signer-proxy"'),)
        if isinstance(exc, RateLimited):
            headers = tuple(retry_after_header(exc).items())
        return HttpAnswer(exc.http_status, dumps(error_response(None, exc)), headers)

    def too_large(self) -> HttpAnswer:
        return self.refusal(
            BodyTooLarge(
                f"the request body is over the limit of {self.max_body} bytes; "
                "send a smaller body or raise --max-body-bytes"
            )
        )

    async def answer(
        self, identity: Identity, raw: bytes, traceparent: str | None = None, path: str = "/"
    ) -> HttpAnswer:
        """Parse, charge and route an admitted caller's body to the chain of `path`."""
        try:
            route = self.routes.for_path(path)
            body = parse_body(raw, self.max_batch)
            self.access.limiter.charge(identity.client, len(body.calls))
        except SignerProxyError as exc:
            return self.refusal(exc)
        context = call_context(identity, "http", traceparent, route.name)
        reply = await route.router.handle(body, raw, context)
        if reply is None:  # notifications only: JSON-RPC says reply with nothing
            return NO_CONTENT
        return HttpAnswer(200, reply if isinstance(reply, bytes) else dumps(reply))


ENDPOINT = web.AppKey("endpoint", RpcEndpoint)


def _response(answer: HttpAnswer) -> web.Response:
    if answer.body is None:
        return web.Response(status=answer.status, headers=dict(answer.headers))
    return web.Response(
        body=answer.body,
        status=answer.status,
        content_type="application/json",
        headers=dict(answer.headers),
    )


def refusal_response(request: web.Request, exc: SignerProxyError) -> web.Response:
    """A whole request refused before routing, as an aiohttp response."""
    return _response(request.app[ENDPOINT].refusal(exc))


async def handle_post(request: web.Request) -> web.StreamResponse:
    """POST / for the requests the fast lane hands to aiohttp."""
    endpoint = request.app[ENDPOINT]
    caller = caller_of(request)
    try:
        identity = endpoint.admit(caller, request.path)
    except SignerProxyError as exc:
        return _response(endpoint.refusal(exc))
    seconds = request.app.get(BODY_TIMEOUT, 60.0)
    try:
        async with asyncio.timeout(seconds):
            raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return _response(endpoint.too_large())
    except TimeoutError:
        # A body dripped slowly: 408, and the connection is not kept (its rest is unread).
        response = _response(
            endpoint.refusal(
                RequestTimeout(
                    f"the request's body did not arrive within {seconds:g} s; send the whole "
                    "request at once (the operator sets --body-timeout)"
                )
            )
        )
        response.force_close()
        return response
    answer = await endpoint.answer(identity, raw, caller.traceparent, request.path)
    if request.transport is None or request.transport.is_closing():
        # The call ran (a transaction may be on its way) but its answer has nowhere to go.
        log.warning(
            "client gone before its answer, delivery ambiguous: the request ran; status=%d "
            "answer=%s",
            answer.status,
            (answer.body or b"")[:300].decode("utf-8", "replace"),
        )
    return _response(answer)


def add_routes(app: web.Application) -> None:
    for path in ("/", "/chain/{chain}"):
        app.router.add_post(path, handle_post)
        app.router.add_route("OPTIONS", path, handle_preflight)
    app.middlewares.append(cors)
