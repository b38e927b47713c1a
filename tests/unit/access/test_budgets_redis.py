"""RedisBudgetStore against a real redis-server: atomic, shared by replicas, rounded safely."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from signer_proxy.access.budgets import GWEI, RedisBudgetStore, budget_key
from signer_proxy.nonces.redis_store import connect

KEY = budget_key("defaults", "0x00000000000000000000000000000000000000aa", "2026-11-22")


@pytest.fixture(params=["pipelined", "redis-py"])
async def redis(redis_url: str, request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """The proxy's client (scripts over our pipelined connection), and redis-py's alone (as
    over rediss://)."""
    client = connect(redis_url) if request.param == "pipelined" else Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def test_spend_within_the_limit_then_refused_past_it(redis: Any) -> None:
    store = RedisBudgetStore(redis)
    assert await store.spend(KEY, 6 * GWEI, 10 * GWEI)
    assert not await store.spend(KEY, 5 * GWEI, 10 * GWEI)  # 11 > 10: refused, not charged
    assert await store.spend(KEY, 4 * GWEI, 10 * GWEI)
    assert int(await redis.get(KEY)) == 10
    assert 0 < await redis.ttl(KEY) <= 2 * 24 * 3600


async def test_concurrent_spends_from_two_replicas_never_exceed_the_limit(
    redis: Any, redis_url: str
) -> None:
    other = connect(redis_url)
    try:
        stores = [RedisBudgetStore(redis), RedisBudgetStore(other)]
        results = await asyncio.gather(
            *(stores[i % 2].spend(KEY, GWEI, 20 * GWEI) for i in range(50))
        )
    finally:
        await other.aclose()
    assert sum(results) == 20
    assert int(await redis.get(KEY)) == 20


async def test_rounding_only_refuses_early_and_refunds_give_back(redis: Any) -> None:
    store = RedisBudgetStore(redis)
    # 1 wei costs a whole gwei; a limit of 1.5 gwei allows one gwei.
    assert await store.spend(KEY, 1, 3 * GWEI // 2)
    assert not await store.spend(KEY, 1, 3 * GWEI // 2)
    await store.refund(KEY, 1)
    assert int(await redis.get(KEY)) == 0
    await store.refund(KEY, 5 * GWEI)  # never below zero
    assert int(await redis.get(KEY)) == 0
