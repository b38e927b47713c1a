"""deadline: one instant per request, read by every step that waits."""

from __future__ import annotations

import asyncio

from signer_proxy.deadline import bounded, deadline_scope, remaining


def test_outside_any_scope_nothing_is_bounded() -> None:
    assert remaining() is None
    assert bounded(30.0) == 30.0


def test_scope_counts_down_and_bounds_timeouts() -> None:
    with deadline_scope(2.0):
        left = remaining()
        assert left is not None and 1.9 < left <= 2.0
        assert bounded(30.0) <= 2.0
        assert bounded(0.5) == 0.5
    assert remaining() is None


def test_an_earlier_outer_deadline_wins() -> None:
    with deadline_scope(1.0), deadline_scope(60.0):
        left = remaining()
        assert left is not None and left <= 1.0


def test_none_opens_no_scope() -> None:
    with deadline_scope(None):
        assert remaining() is None


def test_a_spent_deadline_bounds_to_zero_never_below() -> None:
    with deadline_scope(-1.0):
        assert bounded(5.0) == 0.0


async def test_tasks_started_inside_the_scope_inherit_it() -> None:
    async def child() -> float | None:
        return remaining()

    with deadline_scope(3.0):
        left = await asyncio.create_task(child())
    assert left is not None and left <= 3.0
