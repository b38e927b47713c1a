"""Route each call: a local method if the table has one, else the upstream node, unchanged."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from signer_proxy.deadline import deadline_scope
from signer_proxy.errors import (
    INTERNAL_ERROR_MESSAGE,
    SignerProxyError,
    UpstreamBadResponse,
)
from signer_proxy.jsonrpc import (
    BadCall,
    Body,
    Call,
    CallContext,
    dumps,
    error_response,
    loads,
    may_hide_members,
    result_response,
)
from signer_proxy.ops import tracing
from signer_proxy.upstream.base import Upstream

log = logging.getLogger(__name__)

# Method names spans show as they are (others fold to _OTHER): the usual node namespaces.
_NAMESPACED_METHOD = re.compile(
    r"(eth|net|web3|debug|trace|txpool|admin|engine|anvil|evm|hardhat|signer)_[A-Za-z0-9]{1,48}"
)

Handler = Callable[[Any, CallContext], Awaitable[Any]]
ANONYMOUS = CallContext()
Reply = dict[str, Any]
# Sees each routed body with its reply and duration (metrics): body, reply, seconds, is_local.
ReplyObserver = Callable[[Body, Any, float, Callable[[str], bool]], None]
# Asked before any call is run or forwarded: an error refuses that call (client scope).
CallGate = Callable[[str, CallContext], SignerProxyError | None]


class Router:
    """Local methods by name; everything else passes through to the node."""

    def __init__(
        self,
        methods: Mapping[str, Handler],
        upstream: Upstream,
        observer: ReplyObserver | None = None,
        deadline: float | None = None,
        gate: CallGate | None = None,
    ) -> None:
        self._methods = dict(methods)
        self._upstream = upstream
        self._observer = observer
        self._deadline = deadline  # --request-deadline: every step of a call is bounded by it
        self._gate = gate

    def with_upstream(self, upstream: Upstream) -> Router:
        """The same local methods and observer, forwarding to `upstream` (a client's WebSocket
        connection to the node) instead."""
        return Router(
            self._methods, upstream, self._observer, deadline=self._deadline, gate=self._gate
        )

    def is_local(self, method: str) -> bool:
        return method in self._methods

    async def handle(
        self, body: Body, raw_body: bytes, context: CallContext = ANONYMOUS
    ) -> bytes | Reply | list[Reply] | None:
        """The reply to a whole body: encoded bytes (pass-through), object(s), or None."""
        if tracing.TRACER is not None:
            return await self._traced_handle(body, raw_body, context)
        return await self._handle(body, raw_body, context)

    async def _handle(
        self, body: Body, raw_body: bytes, context: CallContext
    ) -> bytes | Reply | list[Reply] | None:
        with deadline_scope(self._deadline):
            if self._observer is None:
                return await self._route(body, raw_body, context)
            started = time.perf_counter()
            reply = await self._route(body, raw_body, context)
            self._observer(body, reply, time.perf_counter() - started, self.is_local)
            return reply

    async def _traced_handle(
        self, body: Body, raw_body: bytes, context: CallContext
    ) -> bytes | Reply | list[Reply] | None:
        """handle() inside a SERVER span for the body (see ops/tracing.py)."""
        attributes: dict[str, Any] = {
            "rpc.system": "jsonrpc",
            "rpc.jsonrpc.version": "2.0",
            "network.transport": "tcp",
            "signer_proxy.transport": context.transport,
            "signer_proxy.client": context.client,
        }
        first = body.calls[0] if body.calls else None
        if body.is_batch:
            name = "jsonrpc batch"
            attributes["rpc.batch.size"] = len(body.calls)
        elif isinstance(first, Call):
            method = self.traced_method(first.method)
            name = method
            attributes["rpc.method"] = method
            if first.id is not None:
                attributes["rpc.jsonrpc.request_id"] = str(first.id)[:64]
        else:
            name = "jsonrpc"
        with tracing.server_span(name, context.traceparent, attributes) as current:
            reply = await self._handle(body, raw_body, context)
            if not body.is_batch:
                tracing.set_reply(current, reply)
            return reply

    def traced_method(self, method: str) -> str:
        """A method name as spans show it: the local methods and the common node methods as
        they are, anything else folded (clients choose method names; spans must not)."""
        known = self.is_local(method) or _NAMESPACED_METHOD.fullmatch(method) is not None
        return method if known else "_OTHER"

    async def _route(
        self, body: Body, raw_body: bytes, context: CallContext
    ) -> bytes | Reply | list[Reply] | None:
        if not body.is_batch:
            call = body.calls[0]
            assert isinstance(call, Call)
            refused = self._gate(call.method, context) if self._gate else None
            if refused is not None:
                return None if call.is_notification else error_response(call.id, refused)
            if self.is_local(call.method):
                reply = await self._local(call, context)
                return None if call.is_notification else reply
            if may_hide_members(raw_body, 1):  # the node gets the call as the gate saw it
                raw_body = dumps(call.raw)
            try:
                payload = await self._upstream.forward(raw_body)
            except SignerProxyError as exc:
                return None if call.is_notification else error_response(call.id, exc)
            return None if call.is_notification else payload
        replies = await self.handle_batch(body.calls, context)
        return replies or None

    async def handle_batch(
        self, calls: tuple[Call | BadCall, ...], context: CallContext = ANONYMOUS
    ) -> list[Reply]:
        """Local calls run concurrently, forwarded ones go to the node as one batch; order kept."""
        slots: list[Reply | None] = [None] * len(calls)
        local: list[tuple[int, Call]] = []
        forwarded: list[tuple[int, Call]] = []
        for index, call in enumerate(calls):
            if isinstance(call, BadCall):
                slots[index] = error_response(call.id, call.error)
            elif self._gate and (refused := self._gate(call.method, context)) is not None:
                if not call.is_notification:
                    slots[index] = error_response(call.id, refused)
            elif self.is_local(call.method):
                local.append((index, call))
            else:
                forwarded.append((index, call))

        async def run_local(index: int, call: Call) -> None:
            reply = await self._local(call, context)
            if not call.is_notification:
                slots[index] = reply

        await asyncio.gather(
            *(run_local(i, c) for i, c in local),
            self._forward_batch(forwarded, slots),
        )
        return [reply for reply in slots if reply is not None]

    async def _local(self, call: Call, context: CallContext) -> Reply:
        try:
            return result_response(call.id, await self._methods[call.method](call.params, context))
        except SignerProxyError as exc:
            return error_response(call.id, exc)
        except Exception:
            log.exception("unexpected error in %s", call.method)
            return error_response(call.id, SignerProxyError(INTERNAL_ERROR_MESSAGE))

    async def _forward_batch(
        self, forwarded: list[tuple[int, Call]], slots: list[Reply | None]
    ) -> None:
        """Send forwarded calls as one node batch, ids rewritten to positions and restored."""
        if not forwarded:
            return
        batch = [
            call.raw if call.is_notification else {**call.raw, "id": position}
            for position, (_, call) in enumerate(forwarded)
        ]
        try:
            payload = await self._upstream.forward(dumps(batch))
            try:
                decoded = loads(payload)
            except ValueError:
                raise UpstreamBadResponse(
                    "the node answered a batch with a body that is not JSON; check --upstream"
                ) from None
        except SignerProxyError as exc:
            for index, call in forwarded:
                if not call.is_notification:
                    slots[index] = error_response(call.id, exc)
            return
        by_position: dict[int, Any] = {}
        if isinstance(decoded, list):
            for item in decoded:
                if isinstance(item, dict) and isinstance(item.get("id"), int):
                    by_position[item["id"]] = item
        for position, (index, call) in enumerate(forwarded):
            if call.is_notification:
                continue
            item = by_position.get(position)
            if item is None and isinstance(decoded, dict) and "error" in decoded:
                item = decoded  # a node without batch support answers the whole batch once
            if item is None:
                slots[index] = error_response(
                    call.id,
                    UpstreamBadResponse(f"the node sent no answer for {call.method} in a batch"),
                )
            else:
                slots[index] = {**item, "id": call.id}
