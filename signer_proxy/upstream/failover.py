"""Several nodes as one: failover in order, with the request deadline as the bound, and a
probe that keeps out a node on another chain or too far behind the others' head."""

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
from signer_proxy.eth.hexdata import parse_quantity
from signer_proxy.upstream.http import HttpUpstream

log = logging.getLogger(__name__)


class FailoverUpstream:
    """Several nodes, one at a time: every call goes to the first healthy node in the order
    given. A node that cannot be used is taken out of rotation until a probe finds it well.

    Reads (the proxy's own calls) move on to the next node after any failure; a forwarded
    client body moves on only when it surely never arrived (connection refused), since it
    may be a write; eth_sendRawTransaction goes to one node and moves on only when it surely
    never arrived (after a timeout the send loop resends the same bytes, to the next node).

    `max_lag`: a node whose head is more than this many blocks behind the highest head the
    probe saw is kept out (stale reads, stale pending counts) until it catches up; 0: heads
    are not compared.
    """

    def __init__(self, nodes: list[HttpUpstream], max_lag: int = 0) -> None:
        if not nodes:
            raise ValueError("FailoverUpstream needs at least one node")
        self._nodes = nodes
        self._healthy = [True] * len(nodes)
        self._max_lag = max_lag
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
        """Ask the nodes out of rotation for eth_chainId (every node, the first time) and put
        back those on the right chain; with `max_lag`, ask every node its head too, and keep
        out one too far behind the highest (put back once it caught up)."""
        first = self._chain_id is None  # the first round checks every node's chain
        nodes = list(zip(self._nodes, self._healthy, strict=True))
        looks = await asyncio.gather(*(self._look(node, first or not ok) for node, ok in nodes))
        heads = [look[1] for look in looks if isinstance(look, tuple) and look[1] is not None]
        best = max(heads, default=None)
        for index, (node, look) in enumerate(zip(self._nodes, looks, strict=True)):
            if isinstance(look, SignerProxyError):
                self._mark_down(index, look)
                continue
            chain_id, head = look
            if chain_id is not None:
                if self._chain_id is None:
                    self._chain_id = chain_id
                if chain_id != self._chain_id:
                    if self._healthy[index]:
                        log.error(
                            "upstream %s is on chain %s, not %s: kept out of rotation; fix "
                            "--upstream",
                            node.display_url,
                            chain_id,
                            self._chain_id,
                        )
                    self._healthy[index] = False
                    continue
            behind = 0 if best is None or head is None else best - head
            if self._max_lag and behind > self._max_lag:
                if self._healthy[index]:
                    self._healthy[index] = False
                    log.warning(
                        "upstream %s taken out of rotation: its head %d is %d blocks behind "
                        "the highest (%d), over --upstream-max-lag-blocks %d",
                        node.display_url,
                        head,
                        behind,
                        best,
                        self._max_lag,
                    )
            elif not self._healthy[index]:
                self._healthy[index] = True
                log.info("upstream %s back in rotation", node.display_url)

    async def _look(
        self, node: HttpUpstream, ask_chain: bool
    ) -> tuple[str | None, int | None] | SignerProxyError:
        """(chain id if asked, head if heads are compared), or what the node failed with."""
        try:
            chain_id = str(await node.call("eth_chainId", [])) if ask_chain else None
            head = None
            if self._max_lag:
                head = parse_quantity(await node.call("eth_blockNumber", []), "block number")
        except SignerProxyError as exc:
            return exc
        return chain_id, head

    async def watch(self, interval: float) -> None:
        """Probe forever, every `interval` seconds (run as a background task)."""
        while True:
            await self.probe()
            await asyncio.sleep(interval)


def _deadline_spent() -> bool:
    left = remaining()
    return left is not None and left <= 0
