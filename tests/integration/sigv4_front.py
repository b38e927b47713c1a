"""A node front that checks AWS SigV4 the way AWS does (rebuild the canonical request from what
arrived, recompute with botocore, compare; refuse signatures older than 5 minutes), and relays
what passes to a real node over HTTP and WebSocket. Also checks an optional required header.

This stands in for Amazon Managed Blockchain Access, which cannot be reached here."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Mapping

import aiohttp
from aiohttp import web
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

MAX_SKEW_SECONDS = 300


def verify_sigv4(
    headers: Mapping[str, str], url: str, body: bytes, method: str, key_id: str, secret: str
) -> bool:
    auth = headers.get("Authorization", "")
    amz_date = headers.get("X-Amz-Date", "")
    if not auth.startswith("AWS4-HMAC-SHA256 ") or not amz_date:
        return False
    stamp = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.UTC)
    if abs((datetime.datetime.now(datetime.UTC) - stamp).total_seconds()) > MAX_SKEW_SECONDS:
        return False
    fields = dict(
        part.strip().split("=", 1) for part in auth[len("AWS4-HMAC-SHA256 ") :].split(",")
    )
    credential = fields["Credential"].split("/")
    if credential[0] != key_id:
        return False
    signed = fields["SignedHeaders"].split(";")
    replay = AWSRequest(
        method=method,
        url=url,
        data=body,
        headers={name: value for name, value in headers.items() if name.lower() in signed},
    )
    replay.context["timestamp"] = amz_date
    signer = SigV4Auth(Credentials(key_id, secret), credential[3], credential[2])
    canonical = signer.canonical_request(replay)
    expected = signer.signature(signer.string_to_sign(replay, canonical), replay)
    return bool(expected == fields["Signature"])


class CheckingFront:
    """`url` (http) and `ws_url` relay to `node` (an anvil URL) once the request passes:
    SigV4 with (key_id, secret) when given, and `header` (name, value) when given."""

    def __init__(
        self,
        node: str,
        *,
        sigv4: tuple[str, str] | None = None,
        header: tuple[str, str] | None = None,
    ) -> None:
        self.node = node
        self.sigv4 = sigv4
        self.header = header
        self.accepted = 0
        self.refused = 0
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.url = self.ws_url = ""

    def _passes(self, request: web.Request, body: bytes) -> bool:
        if self.header is not None and request.headers.get(self.header[0]) != self.header[1]:
            return False
        if self.sigv4 is not None:
            url = f"http://{request.host}{request.path_qs}"
            return verify_sigv4(request.headers, url, body, request.method, *self.sigv4)
        return True

    async def _post(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if not self._passes(request, body):
            self.refused += 1
            return web.json_response({"message": "credentials refused"}, status=403)
        self.accepted += 1
        assert self._session is not None
        async with self._session.post(
            self.node, data=body, headers={"Content-Type": "application/json"}
        ) as answer:
            return web.Response(body=await answer.read(), content_type="application/json")

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        if not self._passes(request, b""):
            self.refused += 1
            return web.Response(status=403, text="credentials refused")
        self.accepted += 1
        client = web.WebSocketResponse()
        await client.prepare(request)
        assert self._session is not None
        async with self._session.ws_connect(self.node.replace("http", "ws", 1)) as node:

            async def down() -> None:
                async for message in node:
                    await client.send_str(message.data)

            relay = asyncio.create_task(down())
            async for message in client:
                await node.send_str(message.data)
            relay.cancel()
        return client

    async def start(self) -> None:
        self._session = aiohttp.ClientSession()
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._post)
        app.router.add_get("/{tail:.*}", self._ws)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/v1/node"
        self.ws_url = f"ws://127.0.0.1:{port}/v1/node"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()
