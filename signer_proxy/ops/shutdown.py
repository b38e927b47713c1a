"""Graceful shutdown: stop accepting, let in-flight requests finish within a deadline.

aiohttp's own cleanup also waits for handlers, but its timeout is rounded up to whole
seconds and applied twice (wait, then cancel and wait again); draining here first makes the
deadline the operator set the one that holds, and lets the log say what happened.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

from aiohttp import web

log = logging.getLogger(__name__)


class InFlight:
    """Counts requests being handled; `idle()` waits until there are none."""

    def __init__(self) -> None:
        self.count = 0
        self.draining = False
        # Connections the drain leaves readable (WebSockets): their transport answers new
        # calls with an error while draining and closes them itself at shutdown.
        self.long_lived: set[object] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        self.count += 1
        self._idle.clear()

    def leave(self) -> None:
        self.count -= 1
        if self.count == 0:
            self._idle.set()

    @contextmanager
    def track(self) -> Iterator[None]:
        self.enter()
        try:
            yield
        finally:
            self.leave()

    async def idle(self) -> None:
        await self._idle.wait()


IN_FLIGHT = web.AppKey("in_flight", InFlight)


async def drain(runner: web.BaseRunner, in_flight: InFlight, deadline: float) -> bool:
    """Close the listeners and idle connections, then wait up to `deadline` seconds for
    in-flight requests; True when all finished (the caller then runs runner.cleanup())."""
    in_flight.draining = True
    for site in list(runner.sites):
        await site.stop()
    if runner.server is not None:
        # Keep-alive connections: no new request on them; busy ones close after replying.
        # (aiohttp's pre_shutdown() would also make WebSockets drop whatever they receive.)
        for connection in runner.server.connections:
            if connection in in_flight.long_lived:
                continue
            # close() only cancels an idle connection's wait and leaves its socket open until
            # cleanup, so a client could still send on it; an idle one (aiohttp's own test,
            # RequestHandler._process_keepalive) is closed now.
            waiter = getattr(connection, "_waiter", None)
            if waiter is not None and not waiter.done():
                connection.force_close()
            else:
                connection.close()
    pending = in_flight.count
    if pending == 0:
        log.info("stopped accepting connections; no request in flight")
        return True
    log.info(
        "stopped accepting connections; waiting up to %g s for %d in-flight request(s)",
        deadline,
        pending,
    )
    started = time.monotonic()
    try:
        async with asyncio.timeout(deadline):
            await in_flight.idle()
    except TimeoutError:
        log.warning(
            "shutdown deadline of %g s reached: cancelling %d request(s) still in flight "
            "(raise --shutdown-timeout to give them longer)",
            deadline,
            in_flight.count,
        )
        return False
    log.info("in-flight requests finished in %.1f s", time.monotonic() - started)
    return True
