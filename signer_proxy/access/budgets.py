"""Daily value budgets: how much value each address has signed away today, per rule set.

The seam is `BudgetStore`: one atomic "spend if it stays within the limit" and a refund. The
in-memory store serves one process; with --nonce-store the replicas share `RedisBudgetStore`
in the same Redis (one Lua script per spend). Keys are `budget_key(...)`.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Any, Protocol

SECONDS_PER_DAY = 86_400  # every UTC day, in Unix time (which has no leap seconds)


def utc_day(now: float) -> str:
    """The UTC calendar day of a Unix time, e.g. "2025-06-01": budgets reset at 00:00 UTC."""
    return _day_text(int(now // SECONDS_PER_DAY))


@functools.lru_cache(maxsize=4)
def _day_text(day: int) -> str:
    # Every signature asks (the operator page's count, budgets): formatting a datetime each
    # time cost ~10 µs per signed transaction in the loop, a cache hit well under one.
    return datetime.fromtimestamp(day * SECONDS_PER_DAY, UTC).strftime("%Y-%m-%d")


def budget_key(scope: str, address: str, day: str) -> str:
    """The store key of one address's budget under one rule set on one day."""
    return f"budget:{day}:{scope}:{address.lower()}"


class BudgetStore(Protocol):
    """Per-key running totals of wei, spent atomically against a limit."""

    async def spend(self, key: str, amount: int, limit: int) -> bool:
        """Add `amount` to `key`'s total if the total stays within `limit`; whether it did."""
        ...

    async def refund(self, key: str, amount: int) -> None:
        """Take back an amount `spend` added (a signature that was never used)."""
        ...

    async def used(self, key: str) -> int:
        """`key`'s total now, in wei (the operator page)."""
        ...


class MemoryBudgetStore:
    """Totals in process memory; a new day's key drops the days before it."""

    def __init__(self) -> None:
        self._totals: dict[str, int] = {}
        self._day = ""

    def _roll(self, key: str) -> None:
        day = key.split(":", 2)[1] if key.startswith("budget:") else ""
        if day > self._day:
            self._day = day
            self._totals = {k: v for k, v in self._totals.items() if f":{day}:" in k}

    async def spend(self, key: str, amount: int, limit: int) -> bool:
        self._roll(key)
        total = self._totals.get(key, 0) + amount
        if total > limit:
            return False
        self._totals[key] = total
        return True

    async def refund(self, key: str, amount: int) -> None:
        if key in self._totals:
            self._totals[key] = max(0, self._totals[key] - amount)

    async def used(self, key: str) -> int:
        self._roll(key)
        return self.total(key)

    def total(self, key: str) -> int:
        return self._totals.get(key, 0)


# INCRBY in whole gwei, refuse (and take back) past the limit, keep the key two days.
_SPEND = """
local total = redis.call('INCRBY', KEYS[1], ARGV[1])
if total > tonumber(ARGV[2]) then
  redis.call('DECRBY', KEYS[1], ARGV[1])
  return 0
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""
_REFUND = """
local total = redis.call('DECRBY', KEYS[1], ARGV[1])
if total < 0 then redis.call('SET', KEYS[1], 0, 'KEEPTTL') end
return 1
"""

GWEI = 10**9
BUDGET_KEY_SECONDS = 2 * 24 * 3600


class RedisBudgetStore:
    """Totals in the Redis nonce store, shared by every replica (--nonce-store).

    Redis integers are 64-bit, and wei are not: totals are kept in whole gwei, a spend rounded
    up and the limit rounded down, so rounding can only refuse a little early, never let more
    through (2^63 gwei is over nine billion ether)."""

    def __init__(self, redis: Any) -> None:
        self._redis = redis
        self._spend = redis.register_script(_SPEND)
        self._refund = redis.register_script(_REFUND)

    async def spend(self, key: str, amount: int, limit: int) -> bool:
        units = -(-amount // GWEI)
        return bool(await self._spend(keys=[key], args=[units, limit // GWEI, BUDGET_KEY_SECONDS]))

    async def refund(self, key: str, amount: int) -> None:
        await self._refund(keys=[key], args=[-(-amount // GWEI)])

    async def used(self, key: str) -> int:
        return int(await self._redis.get(key) or 0) * GWEI
