"""Slots: at most N of something at once, the rest waiting in line (FIFO).

Not asyncio.Semaphore: its acquire() and locked() cost more than a free slot needs (a counter),
and a free slot can be taken here without awaiting (`try_take`), which a protocol's data
callback needs. Used by the node/KMS connection pool (exchanges at once) and by each client
WebSocket (messages handled at once).
"""

from __future__ import annotations

import asyncio
from collections import deque


class Slots:
    """`limit` slots: a free one is taken at once, a caller past that waits in line and is
    handed the slot of the next `release`."""

    __slots__ = ("_free", "_line")

    def __init__(self, limit: int) -> None:
        self._free = limit
        self._line: deque[asyncio.Future[None]] = deque()

    @property
    def free(self) -> bool:
        return self._free > 0 and not self._line

    def try_take(self) -> bool:
        """Take a free slot now; False when there is none (or others wait for one)."""
        if self.free:
            self._free -= 1
            return True
        return False

    async def take(self) -> None:
        """Take a slot, waiting in line for one (bound the wait with a timeout around it)."""
        if self.try_take():
            return
        turn = asyncio.get_running_loop().create_future()
        self._line.append(turn)
        try:
            await turn
        except BaseException:  # timed out or cancelled: pass on a slot given meanwhile
            if turn.done() and not turn.cancelled():
                self.release()
            else:
                turn.cancel()  # release skips it
            raise

    def release(self) -> None:
        line = self._line
        while line:
            turn = line.popleft()
            if not turn.done():
                turn.set_result(None)  # the slot goes to the next in line
                return
        self._free += 1
