"""transport/ws: the close reasons, the per-connection rate limit and the bounded send queue.
The transport itself is tested against anvil (tests/integration/test_ws.py)."""

from __future__ import annotations

import asyncio

import pytest

from signer_proxy.transport.ws import (
    MAX_CLOSE_REASON,
    SHUTDOWN_REASON,
    ClientGone,
    SendQueue,
    close_reason,
    full_reason,
    idle_reason,
    slow_reader_reason,
    too_big_reason,
)


@pytest.mark.parametrize(
    "reason",
    [
        pytest.param(SHUTDOWN_REASON, id="shutdown"),
        pytest.param(idle_reason(123456789.5), id="idle"),
        pytest.param(slow_reader_reason(123456789.5), id="slow"),
        pytest.param(too_big_reason(2**63), id="too-big"),
        pytest.param(full_reason(2**63), id="full"),
    ],
)
def test_every_close_reason_fits_a_close_frame_whole(reason: str) -> None:
    assert len(reason.encode()) <= MAX_CLOSE_REASON
    assert close_reason(reason) == reason.encode()


def test_close_reason_cuts_on_a_character_boundary() -> None:
    cut = close_reason("é" * 100)  # 200 bytes
    assert len(cut) <= MAX_CLOSE_REASON
    assert cut.decode() == "é" * 61


async def test_send_queue_put_waits_for_room_then_passes() -> None:
    queue = SendQueue(10)
    await queue.put(b"123456")
    blocked = asyncio.create_task(queue.put(b"abcdef"))
    await asyncio.sleep(0.01)
    assert not blocked.done()  # 12 bytes would be over the bound
    assert await queue.get() == b"123456"
    await asyncio.wait_for(blocked, 1)
    assert queue.queued_bytes == 6
    assert queue.high_water == 6


async def test_send_queue_takes_a_large_message_when_empty() -> None:
    queue = SendQueue(10)
    await asyncio.wait_for(queue.put(b"x" * 100), 1)
    assert await queue.get() == b"x" * 100


async def test_send_queue_flushed_waits_for_the_writer() -> None:
    queue = SendQueue(100)
    await queue.put(b"one")
    flushed = asyncio.create_task(queue.flushed())
    await queue.get()
    await asyncio.sleep(0.01)
    assert not flushed.done()  # taken, not yet sent
    await queue.sent()
    await asyncio.wait_for(flushed, 1)


async def test_send_queue_close_wakes_everyone_with_client_gone() -> None:
    queue = SendQueue(4)
    await queue.put(b"full")
    putter = asyncio.create_task(queue.put(b"more"))
    empty = SendQueue(4)
    getter = asyncio.create_task(empty.get())
    await asyncio.sleep(0.01)
    await queue.close()
    await empty.close()
    for task in (putter, getter):
        with pytest.raises(ClientGone):
            await asyncio.wait_for(task, 1)
    with pytest.raises(ClientGone):
        await queue.put(b"x")
    assert queue.queued_bytes == 0


async def test_send_queue_a_cancelled_waiter_leaves_and_the_others_go_on() -> None:
    queue = SendQueue(4)
    await queue.put(b"full")
    gone = asyncio.create_task(queue.put(b"gone"))
    kept = asyncio.create_task(queue.put(b"kept"))
    getter_of_nothing = SendQueue(4)
    waiting_get = asyncio.create_task(getter_of_nothing.get())
    await asyncio.sleep(0.01)
    gone.cancel()
    waiting_get.cancel()
    assert await queue.get() == b"full"
    await asyncio.wait_for(kept, 1)
    assert gone.cancelled() and waiting_get.cancelled()
    assert await queue.get() == b"kept" and queue.queued_bytes == 0
    await getter_of_nothing.put(b"late")  # nobody takes it; nothing was lost either
    assert await getter_of_nothing.get() == b"late"
