"""The operator page's board, from the app's parts: each node reached on its own, the keys in
service, the tracker's pending rows, latency sampled from the histograms."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from signer_proxy.keys import KeyRegistry, Signer
from signer_proxy.ops.metrics import Metrics
from signer_proxy.ops.recent import LatencyHistory, every_label, totals
from signer_proxy.ops.status import Node, PendingSource
from signer_proxy.tracking.tracker import Tracker
from signer_proxy.upstream.failover import FailoverUpstream
from signer_proxy.upstream.http import HttpUpstream


def latency_history(metrics: Metrics) -> LatencyHistory:
    """KMS signatures and node requests over the last minutes, from their histograms."""
    return LatencyHistory(
        {
            "kms_sign": lambda: totals(metrics.sign_duration, every_label),
            "node": lambda: totals(metrics.upstream_duration, every_label),
        }
    )


async def sample_every(history: LatencyHistory) -> None:
    while True:
        await asyncio.sleep(history.interval)
        history.sample()


def tracked_pending(tracker: Tracker, limit: int = 200) -> PendingSource:
    """The operator page's pending and stuck transactions, from the tracker's store."""

    async def pending() -> list[dict[str, Any]]:
        now = time.time()
        rows: list[dict[str, Any]] = []
        for chain_id, address in await tracker.store.watched():
            for record in await tracker.store.pending(chain_id, address):
                if record.seen_mined:
                    continue  # mined, waiting for its confirmations: not pending work
                rows.append(
                    {
                        "address": record.address,
                        "nonce": record.nonce,
                        "state": str(record.state),
                        "hash": record.current,
                        "hashes": list(record.hashes),
                        "bumps": record.bumps,
                        "rebroadcasts": record.rebroadcasts,
                        "age_seconds": round(now - (record.first_sent_at or now), 1),
                        "reason": record.stuck_reason,
                    }
                )
                if len(rows) >= limit:
                    return rows
        return rows

    return pending


def status_nodes(node: HttpUpstream | FailoverUpstream) -> list[Node]:
    """Each configured node, reached on its own (not through failover or the metrics)."""
    nodes = node.nodes if isinstance(node, FailoverUpstream) else [node]
    return [Node(n.display_url, n) for n in nodes]


def signers_of(registry: KeyRegistry) -> list[Signer]:
    return [registry.get(address) for address in registry.addresses]
