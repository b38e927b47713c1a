"""transport/ops: the request-context middleware (request id, in-flight count)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from signer_proxy.ops.logs import REQUEST_ID
from signer_proxy.ops.shutdown import IN_FLIGHT, InFlight
from signer_proxy.transport.ops import request_context


async def test_middleware_counts_requests_but_not_websockets_and_sets_the_id(
    aiohttp_client: Any,
) -> None:
    seen: list[tuple[int, str]] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append((request.app[IN_FLIGHT].count, REQUEST_ID.get()))
        return web.Response(text="ok")

    app = web.Application(middlewares=[request_context])
    app[IN_FLIGHT] = InFlight()
    app.router.add_get("/", handler)
    app.router.add_get("/health", handler)
    client = await aiohttp_client(app)

    plain = await client.get("/", headers={"X-Request-Id": "r-1"})
    upgrade = await client.get("/", headers={"Upgrade": "websocket", "X-Request-Id": "r-2"})
    ops = await client.get("/health", headers={"X-Request-Id": "r-3"})

    assert seen == [(1, "r-1"), (0, "r-2"), (0, "-")]
    assert plain.headers["X-Request-Id"] == "r-1"
    assert upgrade.headers["X-Request-Id"] == "r-2"
    assert "X-Request-Id" not in ops.headers  # probes and scrapes are not requests to trace
    assert app[IN_FLIGHT].count == 0
