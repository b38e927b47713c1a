"""slots: a free slot at once, the rest in line (FIFO), a cancelled waiter skipped and a slot
handed to it passed on."""

from __future__ import annotations

import asyncio

import pytest

from signer_proxy.slots import Slots


async def test_slots_are_taken_at_once_while_free_then_in_order() -> None:
    slots = Slots(2)
    assert slots.try_take() and slots.free
    await slots.take()
    assert not slots.free and not slots.try_take()
    first = asyncio.create_task(slots.take())
    gone = asyncio.create_task(slots.take())
    last = asyncio.create_task(slots.take())
    await asyncio.sleep(0)
    gone.cancel()
    slots.release()  # to the first in line; the cancelled one is skipped
    await first
    assert not last.done() and not slots.try_take()  # a free slot never jumps the line
    slots.release()
    await last
    slots.release()
    slots.release()
    assert slots.free and slots.try_take() and slots.try_take() and not slots.try_take()


async def test_a_slot_given_to_a_waiter_that_timed_out_is_passed_on() -> None:
    slots = Slots(1)
    assert slots.try_take()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await slots.take()
    nxt = asyncio.create_task(slots.take())
    await asyncio.sleep(0)
    slots.release()  # the timed-out waiter left the line: the slot goes to the next
    await asyncio.wait_for(nxt, 1)
    assert not slots.free
