"""The baseline: a naive single-process aiohttp JSON-RPC forwarder (what a first attempt looks
like). It decodes the request to look at it, forwards the body with one shared client session,
and returns the node's answer. signer-proxy's pass-through must beat it by 2x.
"""

from __future__ import annotations

import argparse
import json

import aiohttp
from aiohttp import web

UPSTREAM = web.AppKey("upstream", str)
SESSION = web.AppKey("session", aiohttp.ClientSession)


async def forward(request: web.Request) -> web.Response:
    body = await request.read()
    json.loads(body)  # a forwarder that never looks at the request is not a JSON-RPC proxy
    async with request.app[SESSION].post(
        request.app[UPSTREAM], data=body, headers={"Content-Type": "application/json"}
    ) as response:
        payload = await response.read()
    return web.Response(body=payload, content_type="application/json")


def build_app(upstream: str) -> web.Application:
    app = web.Application()
    app[UPSTREAM] = upstream

    async def session_ctx(app: web.Application):  # type: ignore[no-untyped-def]
        async with aiohttp.ClientSession() as session:
            app[SESSION] = session
            yield

    app.cleanup_ctx.append(session_ctx)
    app.router.add_post("/", forward)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    web.run_app(build_app(args.upstream), host="127.0.0.1", port=args.port, print=None,
                access_log=None)  # fmt: skip


if __name__ == "__main__":
    main()
