"""Background jobs that live as long as the app: started as tasks, cancelled at cleanup."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from contextlib import AsyncExitStack
from typing import Any


def background(stack: AsyncExitStack, job: Coroutine[Any, Any, None]) -> None:
    """Run `job` as a task until the app stops."""
    task = asyncio.create_task(job)

    async def stop() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    stack.push_async_callback(stop)
