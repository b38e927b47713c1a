"""The per-request deadline: one monotonic instant per call, read by every step that waits.

The router opens a scope for each request (`--request-deadline`); the upstream client, KMS
calls and the nonce store bound their own timeouts by what is left, so no step waits past
it and nothing has to be cancelled from outside (cancelling a send half-way would leave its
outcome unknown).
"""

from __future__ import annotations

import asyncio
import time
from contextvars import ContextVar, Token
from typing import Any

_DEADLINE: ContextVar[float | None] = ContextVar("signer_proxy_deadline", default=None)


class deadline_scope:  # a class named as the function it replaced: `with deadline_scope(s):`
    """Inside, `remaining()` counts down from `seconds` (an enclosing, earlier deadline wins).

    A class, not a @contextmanager generator: every request opens one, and the generator's
    machinery cost more than the scope itself."""

    __slots__ = ("_seconds", "_token")

    def __init__(self, seconds: float | None) -> None:
        self._seconds = seconds
        self._token: Token[float | None] | None = None

    def __enter__(self) -> None:
        seconds = self._seconds
        if seconds is not None:
            at = time.monotonic() + seconds
            outer = _DEADLINE.get()
            self._token = _DEADLINE.set(at if outer is None else min(at, outer))

    def __exit__(self, *_exc: object) -> None:
        if self._token is not None:
            _DEADLINE.reset(self._token)
            self._token = None


def expire(future: asyncio.Future[Any]) -> None:
    """A timer's callback for one awaited answer: it fails with TimeoutError unless it came.
    (A timer on the future costs less than an asyncio.timeout scope around the await.)"""
    if not future.done():
        future.set_exception(TimeoutError())


def remaining() -> float | None:
    """Seconds left before the current deadline (may be negative); None outside any scope."""
    at = _DEADLINE.get()
    return None if at is None else at - time.monotonic()


def bounded(timeout: float) -> float:
    """`timeout`, shortened to what is left of the deadline (never below zero)."""
    left = remaining()
    return timeout if left is None else max(0.0, min(timeout, left))
