"""Rate limits: one token bucket, used per client name (one token per JSON-RPC call, from the
policy) and per WebSocket connection (one token per message, --ws-messages-per-second)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from signer_proxy.access.policy import RateLimit
from signer_proxy.errors import RateLimited


class TokenBucket:
    """`per_second` tokens a second, holding at most `burst`; full at the start."""

    __slots__ = ("_at", "burst", "per_second", "tokens")

    def __init__(self, per_second: float, burst: float, now: float) -> None:
        self.per_second = per_second
        self.burst = burst
        self.tokens = burst
        self._at = now

    def take(self, tokens: float, now: float) -> float:
        """Spend `tokens` and return 0.0, or, when the bucket does not hold them yet, spend
        nothing and return the seconds until it will."""
        self.tokens = min(self.burst, self.tokens + max(now - self._at, 0.0) * self.per_second)
        self._at = now
        if self.tokens >= tokens:
            self.tokens -= tokens
            return 0.0
        return (tokens - self.tokens) / self.per_second

    def give_back(self, tokens: float) -> None:
        """Return `tokens` taken for something that did not go ahead after all."""
        self.tokens = min(self.burst, self.tokens + tokens)


class RateLimiter:
    """A token bucket per client; a client without a limit is never refused."""

    def __init__(
        self, limits: Mapping[str, RateLimit], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._limits = dict(limits)
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}

    def update(self, limits: Mapping[str, RateLimit]) -> None:
        """Apply these limits from now on (a reload); a client whose limit is unchanged keeps
        its bucket (a reload does not refill it), the others start afresh."""
        limits = dict(limits)
        self._buckets = {
            c: b for c, b in self._buckets.items() if limits.get(c) == self._limits.get(c)
        }
        self._limits = limits

    def charge(self, client: str, calls: int) -> None:
        """Take `calls` tokens from `client`'s bucket, or raise RateLimited with the wait."""
        limit = self._limits.get(client)
        if limit is None:
            return
        if calls > limit.burst:
            raise RateLimited(
                f"this request has {calls} calls, more than client {client}'s burst of "
                f"{limit.burst}: split it into smaller batches",
                retry_after=0.0,
            )
        now = self._clock()
        bucket = self._buckets.get(client)
        if bucket is None:
            bucket = self._buckets[client] = TokenBucket(limit.per_second, limit.burst, now)
        wait = bucket.take(calls, now)
        if wait:
            raise RateLimited(
                f"client {client} is over its rate limit of {limit.per_second:g} calls per "
                f"second (burst {limit.burst}); retry in {wait:.2f} s",
                retry_after=wait,
            )
