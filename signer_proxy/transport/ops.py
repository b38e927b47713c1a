"""The operator's endpoints and per-request context: /health, /ready, /metrics, request ids,
the in-flight count that graceful shutdown waits on.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from signer_proxy.ops.health import READINESS_CHECKS, handle_health, handle_ready
from signer_proxy.ops.logs import REQUEST_ID, REQUEST_ID_HEADER
from signer_proxy.ops.metrics import METRICS, handle_metrics
from signer_proxy.ops.shutdown import IN_FLIGHT
from signer_proxy.transport.door import ACCESS, OPEN_ACCESS
from signer_proxy.transport.exchange import open_request, reply_headers

OPS_PATHS = frozenset({"/health", "/ready", "/metrics"})


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give each JSON-RPC request an id (the caller's X-Request-Id, else a new one) for its
    log lines and response header, and count it as in flight while it is handled."""
    if request.path in OPS_PATHS or request.path.startswith("/operator"):
        return await handler(request)
    headers = request.headers
    request_id, token = open_request(headers.get(REQUEST_ID_HEADER))
    try:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            # A WebSocket lives as long as its client: the WS transport counts each message
            # it handles instead (IN_FLIGHT.track()), and closes sockets on shutdown.
            response = await handler(request)
        else:
            in_flight = request.app[IN_FLIGHT]
            in_flight.enter()  # not `with track()`: this runs for every request
            try:
                response = await handler(request)
            finally:
                in_flight.leave()
    finally:
        REQUEST_ID.reset(token)
    access = request.app.get(ACCESS) or OPEN_ACCESS
    response.headers.update(reply_headers(access, headers.get("Origin"), request_id))
    return response


def add_ops_routes(app: web.Application, *, metrics: bool) -> None:
    """/health and /ready always; /metrics unless it has a listener of its own."""
    app.router.add_get("/health", handle_health)
    app.router.add_get("/ready", handle_ready)
    if metrics:
        app.router.add_get("/metrics", handle_metrics)


def create_ops_app(main: web.Application) -> web.Application:
    """The app for --metrics-listen: /metrics, /health and /ready of the main app, and the
    operator page when it is on."""
    from signer_proxy.transport.operator import OPERATOR_TOKEN, add_operator_routes

    ops = web.Application()
    ops[METRICS] = main[METRICS]
    ops[READINESS_CHECKS] = main[READINESS_CHECKS]  # the same list: checks added later count
    add_ops_routes(ops, metrics=True)
    if OPERATOR_TOKEN in main:  # the page is on (--operator-page): here, not on the main port
        add_operator_routes(ops, main)
    return ops


async def start_ops_listener(main: web.Application, address: str) -> tuple[web.AppRunner, str]:
    """Serve create_ops_app(main) on HOST:PORT; (its runner, its base URL)."""
    from signer_proxy.config import host_port
    from signer_proxy.errors import ConfigError

    runner = web.AppRunner(create_ops_app(main), handle_signals=False, access_log=None)
    await runner.setup()
    host, port = host_port(address)
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(f"cannot listen on --metrics-listen {address}: {exc.strerror}") from None
    bound = runner.addresses[0]
    return runner, f"http://{bound[0]}:{bound[1]}"
