"""Several nodes as one: failover in order, with the request deadline as the bound."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from signer_proxy.deadline import remaining
from signer_proxy.errors import (
    NodeRejected,
    SignerProxyError,
    UpstreamBadResponse,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from signer_proxy.upstream.http import HttpUpstream

log = logging.getLogger(__name__)


class FailoverUpstream:
    """Several nodes, one at a time: every call goes to the first healthy node in the order
    given. A node that cannot be used is taken out of rotation until a probe finds it well.

    Reads (the proxy's own calls) move on to the next node after any failure; a forwarded
    client body moves on only when it surely never arrived (connection refused), since it
    may be a write; eth_sendRawTransaction goes to one node and moves on only when it surely
    never arrived (after a timeout the send loop resends the same bytes, to the next node).
    """

    def __init__(self, nodes: list[HttpUpstream]) -> None:
        if not nodes:
            raise ValueError("FailoverUpstream needs at least one node")
        self._nodes = nodes
        self._healthy = [True] * len(nodes)
        self._chain_id: str | None = None
        self.display_url = ", ".join(node.display_url for node in nodes)

    @property
    def nodes(self) -> list[HttpUpstream]:
        """The nodes, in the configured order."""
        return list(self._nodes)

    async def aclose(self) -> None:
        for node in self._nodes:
            await node.aclose()

    def healthy(self) -> list[str]:
        """The display URLs of the nodes in rotation, in order."""
        return [n.display_url for n, ok in zip(self._nodes, self._healthy, strict=True) if ok]

    def _order(self) -> list[int]:
        """Healthy nodes first, in the configured order; if none is, all of them anyway."""
        up = [i for i, ok in enumerate(self._healthy) if ok]
        return up + [i for i, ok in enumerate(self._healthy) if not ok]

    def _mark_down(self, index: int, exc: SignerProxyError) -> None:
        if self._healthy[index]:
            self._healthy[index] = False
            log.warning(
                "upstream %s taken out of rotation: %s", self._nodes[index].display_url, exc
            )

    async def call(self, method: str, params: Any) -> Any:
        is_send = method == "eth_sendRawTransaction"
        last: SignerProxyError | None = None
        for index in self._order():
            try:
                return await self._nodes[index].call(method, params)
            except NodeRejected:
                raise  # the node works; it refused the call
            except (UpstreamUnavailable, UpstreamTimeout, UpstreamBadResponse) as exc:
                self._mark_down(index, exc)
                last = exc
                maybe_arrived = isinstance(exc, UpstreamTimeout | UpstreamBadResponse)
                if is_send and maybe_arrived:
                    raise
                if _deadline_spent():
                    break
        assert last is not None
        raise last

    async def forward(self, body: bytes) -> bytes:
        last: SignerProxyError | None = None
        for index in self._order():
            try:
                return await self._nodes[index].forward(body)
            except (UpstreamUnavailable, UpstreamTimeout, UpstreamBadResponse) as exc:
                self._mark_down(index, exc)
                last = exc
                if isinstance(exc, UpstreamTimeout | UpstreamBadResponse) or _deadline_spent():
                    raise
        assert last is not None
        raise last

    async def probe(self) -> None:
        """Ask every node out of rotation for eth_chainId; put back those on the right chain."""
        first = self._chain_id is None  # the first round checks every node's chain
        for index, node in enumerate(self._nodes):
            if self._healthy[index] and not first:
                continue
            try:
                chain_id = str(await node.call("eth_chainId", []))
            except SignerProxyError as exc:
                self._mark_down(index, exc)
                continue
            if self._chain_id is None:
                self._chain_id = chain_id
            if chain_id != self._chain_id:
                if self._healthy[index]:
                    log.error(
                        "upstream %s is on chain %s, not %s: kept out of rotation; fix --upstream",
                        node.display_url,
                        chain_id,
                        self._chain_id,
                    )
                self._healthy[index] = False
            elif not self._healthy[index]:
                self._healthy[index] = True
                log.info("upstream %s back in rotation", node.display_url)

    async def watch(self, interval: float) -> None:
        """Probe forever, every `interval` seconds (run as a background task)."""
        while True:
            await self.probe()
            await asyncio.sleep(interval)


def _deadline_spent() -> bool:
    left = remaining()
    return left is not None and left <= 0
