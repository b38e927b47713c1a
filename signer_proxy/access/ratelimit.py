"""Per-client rate limits: a token bucket per client name, charged one token per JSON-RPC call."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from signer_proxy.access.policy import RateLimit
from signer_proxy.errors import RateLimited


class RateLimiter:
    """Token buckets by client; a client without a limit is never refused."""

    def __init__(
        self, limits: Mapping[str, RateLimit], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._limits = dict(limits)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # client → (tokens, at)

    def charge(self, client: str, calls: int) -> None:
        """Take `calls` tokens from `client`'s bucket, or raise RateLimited with the wait."""
        limit = self._limits.get(client)
        if limit is None:
            return
        now = self._clock()
        tokens, at = self._buckets.get(client, (float(limit.burst), now))
        tokens = min(float(limit.burst), tokens + (now - at) * limit.per_second)
        if calls > limit.burst:
            raise RateLimited(
                f"this request has {calls} calls, more than client {client}'s burst of "
                f"{limit.burst}: split it into smaller batches",
                retry_after=0.0,
            )
        if tokens < calls:
            wait = (calls - tokens) / limit.per_second
            self._buckets[client] = (tokens, now)
            raise RateLimited(
                f"client {client} is over its rate limit of {limit.per_second:g} calls per "
                f"second (burst {limit.burst}); retry in {wait:.2f} s",
                retry_after=wait,
            )
        self._buckets[client] = (tokens - calls, now)
