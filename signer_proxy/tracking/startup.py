"""The transaction tracker from the settings: in Redis with --nonce-store, else in memory,
watching in the background."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

from signer_proxy.access.gate import SigningGate
from signer_proxy.chain.fill import ChainFacts
from signer_proxy.config import Settings
from signer_proxy.keys import KeyRegistry
from signer_proxy.ops.background import background
from signer_proxy.ops.metrics import Metrics
from signer_proxy.tracking.tracker import Tracker
from signer_proxy.upstream.base import Upstream, redact_url


def start_tracker(
    stack: AsyncExitStack,
    redis: Any,
    upstream: Upstream,
    facts: ChainFacts,
    keys: Callable[[], KeyRegistry],
    gate: SigningGate,
    metrics: Metrics,
    settings: Settings,
    chain: str = "default",
) -> Tracker:
    """The transaction tracker (in Redis with --nonce-store, else in memory), watching in the
    background: replacements are signed through `gate` with the guarded keys."""
    from signer_proxy.tracking.store import MemoryTrackStore, RedisTrackStore, TrackStore

    store: TrackStore = (
        MemoryTrackStore()
        if redis is None
        else RedisTrackStore(redis, redact_url(settings.nonce_store))
    )
    tracker = Tracker(
        store,
        upstream,
        facts,
        keys,
        gate,
        metrics,
        interval=settings.tracking_interval,
        lease_seconds=settings.nonce_lease_seconds,
        confirmations=settings.tracking_confirmations,
        chain=chain,
    )
    background(stack, tracker.run())
    return tracker
