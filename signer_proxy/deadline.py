"""The per-request deadline: one monotonic instant per call, read by every step that waits.

The router opens a scope for each request (`--request-deadline`); the upstream client, KMS
calls and the nonce store bound their own timeouts by what is left, so no step waits past
it and nothing has to be cancelled from outside (cancelling a send half-way would leave its
outcome unknown).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_DEADLINE: ContextVar[float | None] = ContextVar("signer_proxy_deadline", default=None)


@contextmanager
def deadline_scope(seconds: float | None) -> Iterator[None]:
    """Inside, `remaining()` counts down from `seconds` (an enclosing, earlier deadline wins)."""
    if seconds is None:
        yield
        return
    at = time.monotonic() + seconds
    outer = _DEADLINE.get()
    token = _DEADLINE.set(at if outer is None else min(at, outer))
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def remaining() -> float | None:
    """Seconds left before the current deadline (may be negative); None outside any scope."""
    at = _DEADLINE.get()
    return None if at is None else at - time.monotonic()


def bounded(timeout: float) -> float:
    """`timeout`, shortened to what is left of the deadline (never below zero)."""
    left = remaining()
    return timeout if left is None else max(0.0, min(timeout, left))
