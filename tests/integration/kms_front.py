"""A KMS-protocol front for tests: relays every call to the emulator, records what reached it
(operation, body, how many were in flight), and lets a test answer, delay or hold calls itself
(AccessDenied, which moto does not enforce; throttling; a Sign that waits mid-flight)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

# (operation, body) -> a reply of the test's own, or None to relay to the emulator.
Answer = Callable[[str, dict[str, Any]], Awaitable["web.Response | None"]]


def kms_error(code: str, message: str = "refused by the test's KMS front") -> web.Response:
    return web.json_response(
        {"__type": code, "message": message}, status=400, content_type="application/x-amz-json-1.1"
    )


@dataclass
class KmsFront:
    url: str = ""
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    in_flight: dict[str, int] = field(default_factory=dict)
    peak: dict[str, int] = field(default_factory=dict)
    total: int = 0  # calls in flight now, any operation
    total_peak: int = 0
    answer: Answer | None = None
    delay: float = 0.0  # seconds every relayed call waits first (to make overlap visible)

    def operations(self, name: str) -> list[dict[str, Any]]:
        return [body for operation, body in self.calls if operation == name]


async def start_kms_front(
    aiohttp_server: Any, kms_url: str, front: KmsFront | None = None
) -> KmsFront:
    """Serve `front` on a loopback port in front of the emulator at `kms_url`."""
    front = front or KmsFront()
    session = aiohttp.ClientSession()

    async def handle(request: web.Request) -> web.Response:
        raw = await request.read()
        operation = request.headers.get("X-Amz-Target", "").removeprefix("TrentService.")
        body = json.loads(raw) if raw else {}
        front.calls.append((operation, body))
        front.in_flight[operation] = front.in_flight.get(operation, 0) + 1
        front.peak[operation] = max(front.peak.get(operation, 0), front.in_flight[operation])
        front.total += 1
        front.total_peak = max(front.total_peak, front.total)
        try:
            if front.answer is not None:
                own = await front.answer(operation, body)
                if own is not None:
                    return own
            if front.delay:
                await asyncio.sleep(front.delay)
            headers = {
                name: request.headers[name]
                for name in ("Authorization", "X-Amz-Date", "X-Amz-Target", "Content-Type",
                             "X-Amz-Security-Token")
                if name in request.headers
            }  # fmt: skip
            async with session.post(kms_url, data=raw, headers=headers) as upstream:
                return web.Response(
                    body=await upstream.read(),
                    status=upstream.status,
                    content_type="application/x-amz-json-1.1",
                )
        finally:
            front.in_flight[operation] -= 1
            front.total -= 1

    app = web.Application()
    app.router.add_post("/", handle)

    async def close_session(app: web.Application) -> None:
        await session.close()

    app.on_cleanup.append(close_session)
    server = await aiohttp_server(app, host="127.0.0.1")
    front.url = f"http://127.0.0.1:{server.port}"
    return front
