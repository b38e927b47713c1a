"""Serve a DevChain on a loopback port: JSON-RPC over HTTP POST / and WebSocket GET /.

One worker thread owns the chain (py-evm is synchronous and not thread-safe), so calls are
executed in arrival order while the event loop stays free. Over WebSocket, `eth_subscribe`
supports "newHeads" and "logs": after every call the server looks for new blocks and notifies
subscribers. "newPendingTransactions" is refused: every transaction is mined at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from signer_proxy.dev.chain import DEFAULT_CHAIN_ID, DevChain
from signer_proxy.errors import (
    INTERNAL_ERROR_MESSAGE,
    InvalidParams,
    SignerProxyError,
)
from signer_proxy.jsonrpc import Call, error_response, parse_body, result_response

log = logging.getLogger(__name__)

MAX_BATCH = 1000
SUBSCRIPTION_KINDS = ("newHeads", "logs")


@dataclass
class _Subscription:
    kind: str
    socket: web.WebSocketResponse
    log_filter: dict[str, Any] = field(default_factory=dict)


class ChainServer:
    """The embedded dev chain behind HTTP and WebSocket on `host:port` (0: a free port)."""

    def __init__(
        self, chain_id: int = DEFAULT_CHAIN_ID, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self._chain_id = chain_id
        self._host = host
        self._port = port
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dev-chain")
        self._chain: DevChain | None = None
        self._runner: web.AppRunner | None = None
        self._subscriptions: dict[str, _Subscription] = {}
        self._sockets: set[web.WebSocketResponse] = set()
        self._head = 0
        self._publish_lock = asyncio.Lock()
        self.url = ""

    @property
    def ws_url(self) -> str:
        return "ws" + self.url.removeprefix("http")

    async def _in_chain_thread(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def start(self) -> None:
        """Build the chain (in its thread) and listen; OSError if the port is taken."""
        self._chain = await self._in_chain_thread(DevChain, self._chain_id)
        self._head = await self._in_chain_thread(self._chain.head_number)
        app = web.Application(client_max_size=5 * 1024 * 1024)
        app.router.add_post("/", self._handle_post)
        app.router.add_get("/", self._handle_get)
        app.on_shutdown.append(self._close_sockets)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    async def stop(self) -> None:
        """Close every connection, stop listening and end the chain's thread."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._executor.shutdown(wait=True)

    @property
    def chain(self) -> DevChain:
        assert self._chain is not None, "start() first"
        return self._chain

    async def call(self, method: str, params: Any) -> Any:
        """One call on the chain thread, then notify subscribers of any new block."""
        result = await self._in_chain_thread(self.chain.request, method, params)
        await self._publish_new_blocks()
        return result

    async def _answer(self, call: Call, socket: web.WebSocketResponse | None) -> Any:
        result: Any
        try:
            if call.method in ("eth_subscribe", "eth_unsubscribe"):
                if socket is None:
                    raise InvalidParams(
                        f"{call.method} needs a WebSocket connection: connect to {self.ws_url}"
                    )
                if call.method == "eth_subscribe":
                    result = self._subscribe(call.params, socket)
                else:
                    result = self._unsubscribe(call.params, socket)
            else:
                result = await self.call(call.method, call.params)
        except SignerProxyError as exc:
            return error_response(call.id, exc)
        except Exception:
            log.exception("dev chain: %s failed", call.method)
            return error_response(call.id, SignerProxyError(INTERNAL_ERROR_MESSAGE))
        return result_response(call.id, result)

    async def _reply(self, raw: bytes, socket: web.WebSocketResponse | None) -> Any:
        """The reply to one body (None when it held only notifications)."""
        try:
            body = parse_body(raw, MAX_BATCH)
        except SignerProxyError as exc:
            return error_response(None, exc)
        replies = []
        for call in body.calls:  # in order: the chain runs them one after another anyway
            if isinstance(call, Call):
                reply = await self._answer(call, socket)
                if not call.is_notification:
                    replies.append(reply)
            else:
                replies.append(error_response(call.id, call.error))
        if not replies:
            return None
        return replies if body.is_batch else replies[0]

    async def _handle_post(self, request: web.Request) -> web.StreamResponse:
        reply = await self._reply(await request.read(), None)
        if reply is None:
            return web.Response(status=204)
        return web.json_response(reply)

    async def _handle_get(self, request: web.Request) -> web.StreamResponse:
        socket = web.WebSocketResponse(max_msg_size=5 * 1024 * 1024)
        if not socket.can_prepare(request).ok:
            return web.Response(
                status=400,
                text="JSON-RPC: POST a request here, or connect a WebSocket to this URL\n",
            )
        await socket.prepare(request)
        self._sockets.add(socket)
        try:
            async for message in socket:
                if message.type == WSMsgType.TEXT:
                    reply = await self._reply(message.data.encode(), socket)
                elif message.type == WSMsgType.BINARY:
                    reply = await self._reply(message.data, socket)
                else:
                    continue
                if reply is not None:
                    await socket.send_str(json.dumps(reply))
        finally:
            self._sockets.discard(socket)
            for sub_id in [k for k, s in self._subscriptions.items() if s.socket is socket]:
                del self._subscriptions[sub_id]
        return socket

    async def _close_sockets(self, _app: web.Application) -> None:
        for socket in list(self._sockets):
            await socket.close(message=b"dev chain stopping")

    def _subscribe(self, params: Any, socket: web.WebSocketResponse) -> str:
        if not isinstance(params, list) or not params or params[0] not in SUBSCRIPTION_KINDS:
            raise InvalidParams(
                f"the dev chain supports eth_subscribe for {' and '.join(SUBSCRIPTION_KINDS)} "
                "(every transaction is mined at once, so nothing is ever pending)"
            )
        log_filter = params[1] if len(params) > 1 and isinstance(params[1], dict) else {}
        unknown = set(log_filter) - {"address", "topics"}
        if unknown:
            raise InvalidParams(f"a logs subscription filter takes address and topics only, not "
                                f"{', '.join(sorted(unknown))}")  # fmt: skip
        sub_id = "0x" + secrets.token_hex(16)
        self._subscriptions[sub_id] = _Subscription(params[0], socket, log_filter)
        return sub_id

    def _unsubscribe(self, params: Any, socket: web.WebSocketResponse) -> bool:
        sub_id = params[0] if isinstance(params, list) and params else None
        subscription = self._subscriptions.get(sub_id) if isinstance(sub_id, str) else None
        if subscription is None or subscription.socket is not socket:
            return False
        del self._subscriptions[sub_id]  # type: ignore[arg-type]
        return True

    async def _publish_new_blocks(self) -> None:
        async with self._publish_lock:
            head = await self._in_chain_thread(self.chain.head_number)
            while self._head < head:
                self._head += 1
                if self._subscriptions:
                    await self._publish_block(self._head)

    async def _publish_block(self, number: int) -> None:
        header: dict[str, Any] | None = None
        for sub_id, subscription in list(self._subscriptions.items()):
            if subscription.kind == "newHeads":
                if header is None:
                    header = await self._in_chain_thread(self.chain.new_head, number)
                results: list[Any] = [header]
            else:
                log_filter = {**subscription.log_filter, "fromBlock": hex(number),
                              "toBlock": hex(number)}  # fmt: skip
                try:
                    results = await self._in_chain_thread(
                        self.chain.request, "eth_getLogs", [log_filter]
                    )
                except SignerProxyError as exc:
                    log.warning("dev chain: logs subscription %s: %s", sub_id, exc.message)
                    continue
            for result in results:
                notification = {
                    "jsonrpc": "2.0",
                    "method": "eth_subscription",
                    "params": {"subscription": sub_id, "result": result},
                }
                try:
                    await subscription.socket.send_str(json.dumps(notification))
                except (ConnectionError, RuntimeError):  # the subscriber went away meanwhile
                    self._subscriptions.pop(sub_id, None)
                    break
