"""budgets: the in-memory store spends atomically within a limit, refunds, and rolls over."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from signer_proxy.access.budgets import MemoryBudgetStore, budget_key, utc_day

ADDRESS = "0x000000000000000000000000000000000000dEaD"


def test_utc_day_changes_at_midnight_utc() -> None:
    assert utc_day(1_767_225_599) == "2025-12-31"  # 23:59:59 UTC
    assert utc_day(1_767_225_600) == "2026-01-01"


@pytest.mark.parametrize(
    "now",
    [0, 1.5, 951_782_399.999, 951_782_400, 1_709_164_800.25, 1_767_225_599.9, 4_102_444_800],
    #   epoch, 2000-02-28 23:59:59.999 then the leap day, 2024-02-29, 2100-01-01
)
def test_utc_day_is_what_datetime_says_also_from_its_cache(now: float) -> None:
    expected = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")
    assert utc_day(now) == expected
    assert utc_day(now) == expected  # the second answer comes from the cache


def test_budget_key_is_per_day_scope_and_address_case_insensitive() -> None:
    key = budget_key("client ci", ADDRESS, "2026-01-01")
    assert key == budget_key("client ci", ADDRESS.lower(), "2026-01-01")
    assert key != budget_key("defaults", ADDRESS, "2026-01-01")
    assert key != budget_key("client ci", ADDRESS, "2026-01-02")


async def test_spend_up_to_the_limit_then_refuse_then_refund() -> None:
    store = MemoryBudgetStore()
    key = budget_key("defaults", ADDRESS, "2026-01-01")

    assert await store.spend(key, 6, 10)
    assert await store.spend(key, 4, 10)  # exactly at the limit
    assert not await store.spend(key, 1, 10)
    assert store.total(key) == 10  # a refused spend adds nothing
    await store.refund(key, 4)
    assert await store.spend(key, 3, 10)
    assert store.total(key) == 9


async def test_concurrent_spends_never_overshoot() -> None:
    store = MemoryBudgetStore()
    key = budget_key("defaults", ADDRESS, "2026-01-01")

    results = await asyncio.gather(*(store.spend(key, 3, 10) for _ in range(10)))

    assert results.count(True) == 3
    assert store.total(key) == 9


async def test_a_new_day_starts_at_zero_and_drops_old_days() -> None:
    store = MemoryBudgetStore()
    yesterday = budget_key("defaults", ADDRESS, "2026-01-01")
    today = budget_key("defaults", ADDRESS, "2026-01-02")

    assert await store.spend(yesterday, 10, 10)
    assert await store.spend(today, 10, 10)
    assert store.total(yesterday) == 0  # forgotten


async def test_refund_of_an_unknown_key_is_harmless() -> None:
    store = MemoryBudgetStore()
    await store.refund(budget_key("defaults", ADDRESS, "2026-01-01"), 5)
    assert store.total(budget_key("defaults", ADDRESS, "2026-01-01")) == 0
