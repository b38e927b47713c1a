"""Daily value budgets: how much value each address has signed away today, per rule set.

The seam is `BudgetStore`: one atomic "spend if it stays within the limit" and a refund. The
in-memory store serves one process. Several replicas need the shared store: the Redis nonce
store (branch `replicas`) plugs in here with the same two calls, e.g. `spend` as one Lua
script — INCRBY key amount; if the total is over the limit, DECRBY it back and answer 0;
else EXPIRE key 2 days and answer 1 — and `refund` as DECRBY. Keys are `budget_key(...)`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol


def utc_day(now: float) -> str:
    """The UTC calendar day of a Unix time, e.g. "2025-06-01": budgets reset at 00:00 UTC."""
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")


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

    def total(self, key: str) -> int:
        return self._totals.get(key, 0)
