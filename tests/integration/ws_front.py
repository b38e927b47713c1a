"""A node's WebSocket the tests control: a relay in front of anvil's WebSocket that counts the
connections made to it, can hold chosen methods, and can drop every connection (the node going
away) — and a small JSON-RPC WebSocket client for the tests."""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web


class WsFront:
    """`url` relays each WebSocket to `node_ws_url`; `open` counts the live ones."""

    def __init__(
        self,
        node_ws_url: str,
        hold: frozenset[str] = frozenset(),
        *,
        eager: bool = False,
        deaf: bool = False,
    ) -> None:
        self.node_ws_url = node_ws_url
        self.hold = hold
        self.deaf = deaf  # never answers a ping (a node whose connection has silently died)
        # eager: right behind each eth_subscribe reply, send a notification for the new
        # subscription in the same write (a node mining as the subscription starts).
        self.eager = eager
        self.held = asyncio.Event()  # set when a held method has arrived
        self._release = asyncio.Event()
        self.opened = 0
        self._sockets: set[web.WebSocketResponse] = set()
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.url = ""

    @property
    def open(self) -> int:
        return len(self._sockets)

    async def start(self) -> WsFront:
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        app = web.Application()
        app.router.add_get("/", self._relay)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"ws://{host}:{port}"
        return self

    async def _relay(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        socket = web.WebSocketResponse(max_msg_size=0, autoping=not self.deaf)
        await socket.prepare(request)
        self.opened += 1
        await self._count(socket, add=True)
        try:
            async with self._session.ws_connect(self.node_ws_url, max_msg_size=0) as node:
                subscribe_ids: set[Any] = set()

                async def down() -> None:
                    async for message in socket:
                        if message.type != WSMsgType.TEXT:
                            continue
                        if any(f'"{m}"' in message.data for m in self.hold):
                            self.held.set()
                            await self._release.wait()
                        request = json.loads(message.data)
                        if isinstance(request, dict) and request.get("method") == "eth_subscribe":
                            subscribe_ids.add(request.get("id"))
                        await node.send_str(message.data)

                async def up() -> None:
                    async for message in node:
                        if message.type != WSMsgType.TEXT:
                            continue
                        reply = json.loads(message.data)
                        early = ""
                        if (
                            self.eager
                            and isinstance(reply, dict)
                            and reply.get("id") in subscribe_ids
                        ):
                            note = {
                                "jsonrpc": "2.0",
                                "method": "eth_subscription",
                                "params": {"subscription": reply["result"], "result": "early"},
                            }
                            early = json.dumps(note)
                        await socket.send_str(message.data)
                        if early:
                            await socket.send_str(early)

                tasks = [asyncio.create_task(down()), asyncio.create_task(up())]
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in tasks:
                    task.cancel()
                await asyncio.wait(tasks)
        finally:
            await self._count(socket, add=False)
        return socket

    async def _count(self, socket: web.WebSocketResponse, *, add: bool) -> None:
        async with self._changed:
            if add:
                self._sockets.add(socket)
            else:
                self._sockets.discard(socket)
            self._changed.notify_all()

    def release(self) -> None:
        """Let held messages through."""
        self._release.set()

    async def drop(self) -> None:
        """Cut every connection without a close frame, as a node that dies would."""
        for socket in list(self._sockets):
            transport = socket._req.transport if socket._req is not None else None
            if transport is not None:
                transport.close()

    async def wait_open(self, count: int, within: float = 10.0) -> None:
        """Wait until exactly `count` connections are open."""
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(lambda: self.open == count)

    async def stop(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()


class RpcSocket:
    """A JSON-RPC client over one WebSocket: calls by id, notifications queued in order."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse[Any]) -> None:
        self.ws = ws
        self.notifications: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.received: list[dict[str, Any] | list[Any]] = []  # every message, in order
        self._waiters: dict[Any, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)
        self._sending: set[asyncio.Future[None]] = set()
        self.close_code: int | None = None
        self.close_reason = ""
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def connect(cls, session: Any, url: str = "/") -> RpcSocket:
        return cls(await session.ws_connect(url))

    async def _read(self) -> None:
        while True:
            message = await self.ws.receive()
            if message.type == WSMsgType.CLOSE:
                self.close_code, self.close_reason = message.data, message.extra or ""
                break
            if message.type in (WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                self.close_code = self.ws.close_code
                break
            if message.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                continue
            decoded = json.loads(message.data)
            self.received.append(decoded)
            if isinstance(decoded, list):
                key = tuple(sorted(str(item.get("id")) for item in decoded))
                future = self._waiters.pop(key, None)
            elif "id" in decoded:
                future = self._waiters.pop(decoded["id"], None)
            else:
                self.notifications.put_nowait(decoded)
                continue
            if future is not None and not future.done():
                future.set_result(decoded)
        for future in self._waiters.values():
            if not future.done():
                future.set_exception(ConnectionError("the WebSocket closed"))
                future.exception()  # retrieved: a call nobody awaits any more is no error

    def send_call(
        self, method: str, params: Any = None, call_id: Any = None
    ) -> asyncio.Future[Any]:
        call_id = next(self._ids) if call_id is None else call_id
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters[call_id] = future
        request = {"jsonrpc": "2.0", "id": call_id, "method": method, "params": params or []}
        sending = asyncio.ensure_future(self.ws.send_str(json.dumps(request)))
        self._sending.add(sending)
        sending.add_done_callback(self._sending.discard)
        return future

    async def call(self, method: str, params: Any = None, within: float = 30.0) -> Any:
        """The whole response object of one call."""
        async with asyncio.timeout(within):
            return await self.send_call(method, params)

    async def result(self, method: str, params: Any = None) -> Any:
        response = await self.call(method, params)
        assert "error" not in response, f"{method} failed: {response['error']}"
        return response["result"]

    async def batch(self, calls: list[dict[str, Any]], within: float = 30.0) -> list[Any]:
        key = tuple(sorted(str(c["id"]) for c in calls if "id" in c))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters[key] = future
        await self.ws.send_str(json.dumps(calls))
        async with asyncio.timeout(within):
            result: list[Any] = await future
            return result

    async def notification(self, within: float = 10.0) -> dict[str, Any]:
        async with asyncio.timeout(within):
            return await self.notifications.get()

    async def closed(self, within: float = 10.0) -> tuple[int | None, str]:
        """Wait for the server to close; (close code, reason)."""
        async with asyncio.timeout(within):
            await asyncio.wait([self._reader])
        return self.close_code, self.close_reason

    async def close(self) -> None:
        await self.ws.close()
        await asyncio.wait([self._reader])
