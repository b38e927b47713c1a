"""shutdown: the in-flight count that a SIGTERM drain waits on (the drain itself is tested
end to end with a real process in tests/integration/test_operations_cli.py)."""

from __future__ import annotations

import asyncio

import pytest

from signer_proxy.ops.shutdown import InFlight


async def test_in_flight_idle_waits_for_the_last_request() -> None:
    in_flight = InFlight()
    await asyncio.wait_for(in_flight.idle(), 0.1)  # idle from the start
    release = asyncio.Event()

    async def request() -> None:
        with in_flight.track():
            await release.wait()

    tasks = [asyncio.create_task(request()) for _ in range(3)]
    await asyncio.sleep(0)
    assert in_flight.count == 3
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(in_flight.idle(), 0.05)
    release.set()
    await asyncio.wait_for(in_flight.idle(), 1)
    assert in_flight.count == 0
    await asyncio.gather(*tasks)


async def test_in_flight_counts_down_when_a_request_fails() -> None:
    in_flight = InFlight()
    with pytest.raises(RuntimeError), in_flight.track():
        raise RuntimeError("boom")
    assert in_flight.count == 0
    await asyncio.wait_for(in_flight.idle(), 0.1)
