"""The operator page's data: one JSON snapshot of chains, keys, pending work, decisions and
latency (GET /operator/status.json, docs/operations.md "The operator page").

A snapshot asks the node for each key's balance and pending nonce and each node's head
block, so snapshots are cached for `ttl` seconds and at most `max_keys` keys are read: any
number of open pages costs the node a bounded number of calls.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from signer_proxy import __version__
from signer_proxy.access.budgets import budget_key, utc_day
from signer_proxy.access.policy import Policy
from signer_proxy.errors import SignerProxyError
from signer_proxy.keys.signer import Signer, signer_backend
from signer_proxy.ops.recent import LatencyHistory, RecentDecisions
from signer_proxy.upstream.base import Upstream

# Pending and stuck transactions, when transaction tracking is on: each a JSON object
# (address, nonce, state, hashes, bumps, age_seconds).
PendingSource = Callable[[], Awaitable[list[dict[str, Any]]]]
# Today's total of one budget key (wei), from the budget store in use.
BudgetReader = Callable[[str], Awaitable[int]]


def innermost(signer: Signer) -> Signer:
    """The key behind the wrappers (metrics, traces, the gate's guard)."""
    while True:
        inner = getattr(signer, "_inner", None)
        if inner is None:
            return signer
        signer = inner


def backend_of(signer: Signer) -> str:
    """The key's backend as the page names it (the class of the key behind the wrappers)."""
    return signer_backend(innermost(signer))


def ether(wei: int) -> str:
    """`wei` in ether, exact, without trailing zeros."""
    text = f"{Decimal(wei) / 10**18:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


@dataclass
class Node:
    """One node the page reports: its display URL and a client that reaches only it."""

    url: str
    client: Upstream


@dataclass
class ChainNodes:
    """One served chain's nodes, by the chain's name."""

    name: str
    nodes: Sequence[Node]


@dataclass
class StatusBoard:
    """Everything the page reads, wired by the app. Keys' balances and nonces are read on the
    first chain (the default one when one is marked)."""

    chains: Sequence[ChainNodes]
    signers: Callable[[], Sequence[Signer]]
    decisions: RecentDecisions
    latency: LatencyHistory
    policy: Callable[[], Policy]
    budget_used: BudgetReader
    in_flight: Callable[[], int]
    pending: PendingSource | None = None
    ttl: float = 2.0
    max_keys: int = 200
    decisions_shown: int = 50
    started: float = field(default_factory=time.time)
    _cached: tuple[float, dict[str, Any]] | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def snapshot(self) -> dict[str, Any]:
        """The page's data, at most `ttl` seconds old."""
        async with self._lock:  # concurrent pages share one refresh
            now = time.monotonic()
            if self._cached is not None and now - self._cached[0] < self.ttl:
                return self._cached[1]
            data = await self._build()
            self._cached = (time.monotonic(), data)
            return data

    async def _build(self) -> dict[str, Any]:
        signers = list(self.signers())
        shown = signers[: self.max_keys]
        per_chain, keys = await asyncio.gather(
            asyncio.gather(
                *(asyncio.gather(*(self._node(n) for n in chain.nodes)) for chain in self.chains)
            ),
            asyncio.gather(*(self._key(signer) for signer in shown)),
        )
        pending = await self.pending() if self.pending is not None else None
        return {
            "version": __version__,
            "time": round(time.time(), 3),
            "uptime_seconds": round(time.time() - self.started, 1),
            "in_flight": self.in_flight(),
            "chains": [
                {"name": chain.name, "nodes": list(nodes)}
                for chain, nodes in zip(self.chains, per_chain, strict=True)
            ],
            "keys": list(keys),
            "keys_total": len(signers),
            "keys_shown": len(shown),
            "pending": pending,
            "decisions": self.decisions.latest(self.decisions_shown),
            "latency": self.latency.series(),
            "latency_interval_seconds": self.latency.interval,
        }

    async def _node(self, node: Node) -> dict[str, Any]:
        started = time.perf_counter()
        row: dict[str, Any] = {"url": node.url}
        try:
            chain_id, head = await asyncio.gather(
                node.client.call("eth_chainId", []), node.client.call("eth_blockNumber", [])
            )
        except SignerProxyError as exc:
            row.update(healthy=False, error=exc.message)
        else:
            row.update(healthy=True, chain_id=int(chain_id, 16), head_block=int(head, 16))
        row["latency_ms"] = round(1000 * (time.perf_counter() - started), 2)
        return row

    async def _key(self, signer: Signer) -> dict[str, Any]:
        address = signer.address
        client = self.chains[0].nodes[0].client
        row: dict[str, Any] = {
            "address": address,
            "backend": backend_of(signer),
            "key": signer.key_name,
            "signed_today": self.decisions.signed_today(address),
        }
        try:
            balance, nonce = await asyncio.gather(
                client.call("eth_getBalance", [address, "latest"]),
                client.call("eth_getTransactionCount", [address, "pending"]),
            )
            row.update(balance_wei=str(int(balance, 16)), balance_eth=ether(int(balance, 16)))
            row["next_nonce"] = int(nonce, 16)
        except SignerProxyError as exc:
            row["error"] = exc.message
        row["budgets"] = await self._budgets(address)
        return row

    async def _budgets(self, address: str) -> list[dict[str, Any]]:
        """Today's use of every daily value budget that binds this key for any client (the
        defaults and the key's own rules; client budgets are listed under no key)."""
        rows = []
        day = utc_day(time.time())
        for scope in self.policy().scopes("", address):
            limit = scope.rules.daily_value_budget
            if limit is None:
                continue
            used = await self.budget_used(budget_key(scope.label, address, day))
            rows.append({"scope": scope.label, "limit_wei": str(limit), "used_wei": str(used)})
        return rows
