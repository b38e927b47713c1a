"""Nonce allocation: distinct, consecutive nonces per address, however many sends run at once.

The in-process manager keeps, per address, a counter and the set of nonces out on lease.
While any lease is out the counter is authoritative (the node's pending count lags a burst);
once the address is idle and the node was last asked over `IDLE_TRUST_SECONDS` ago, the next
reservation re-reads the node's pending count, so a transaction the node dropped, or one sent
around the proxy, cannot leave a gap or a clash behind for long. A released nonce (the node
refused the transaction outright) is handed out again before any new one, lowest first, so a
refusal leaves no gap either.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from signer_proxy.nonces.base import Lease, PendingCount

# How long after the node's pending count was last read an idle address keeps its counter.
# Sends one after another (one client, one at a time) would otherwise each pay a node round
# trip for the count; within this window a clash with a transaction sent around the proxy
# is caught by the node ("nonce too low" → resync and a fresh nonce), and a gap left by a
# dropped transaction heals at the next read, at most this long after the address rests.
IDLE_TRUST_SECONDS = 1.0


@dataclass
class _AddressState:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    next_nonce: int | None = None
    synced_at: float = float("-inf")  # when the node's pending count was last read
    released: list[int] = field(default_factory=list)  # a heap
    leased: set[int] = field(default_factory=set)


class _MemoryLease:
    def __init__(self, state: _AddressState, nonce: int) -> None:
        self._state = state
        self._nonce = nonce
        self._done = False
        self._sending = False

    @property
    def nonce(self) -> int:
        return self._nonce

    async def record(self, raw: bytes) -> None:
        # One process: its leases never expire, and it resends from memory. Recording marks
        # the nonce as one this proxy sends itself.
        self._sending = True

    async def commit(self, *, sent: bool = True) -> None:
        if not self._done:
            self._done = True
            self._state.leased.discard(self._nonce)
            if not (sent and self._sending):
                # Used, but not by a transaction we sent (eth_signTransaction hands the bytes
                # to the caller, who may never send them; a clash took it): only the node
                # knows what comes next, so the next idle reservation asks it.
                self._state.synced_at = float("-inf")

    async def release(self) -> None:
        if not self._done:
            self._done = True
            self._state.leased.discard(self._nonce)
            heapq.heappush(self._state.released, self._nonce)


class MemoryNonceManager:
    """Per-address asyncio lock and counter, synced to the node's pending count when idle."""

    def __init__(
        self,
        pending_count: PendingCount,
        idle_trust_seconds: float = IDLE_TRUST_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pending_count = pending_count
        self._idle_trust = idle_trust_seconds
        self._clock = clock
        self._states: dict[str, _AddressState] = {}

    def _state(self, address: str) -> _AddressState:
        key = address.lower()
        state = self._states.get(key)
        if state is None:  # not setdefault: that would build a state (and a lock) every call
            state = self._states[key] = _AddressState()
        return state

    async def reserve(self, address: str) -> Lease:
        state = self._state(address)
        async with state.lock:
            if state.next_nonce is None or (
                not state.leased and self._clock() - state.synced_at >= self._idle_trust
            ):
                pending = await self._pending_count(address)
                state.synced_at = self._clock()
                state.next_nonce = pending
                state.released = []
            while state.released:
                nonce = heapq.heappop(state.released)
                if nonce < state.next_nonce and nonce not in state.leased:
                    break
            else:
                nonce = state.next_nonce
                state.next_nonce += 1
            state.leased.add(nonce)
            return _MemoryLease(state, nonce)

    async def resync(self, address: str) -> None:
        state = self._state(address)
        async with state.lock:
            pending = await self._pending_count(address)
            state.synced_at = self._clock()
            # Leases out hold nonces below the counter: never step back under them.
            state.next_nonce = max(state.next_nonce or 0, pending) if state.leased else pending
            state.released = [n for n in state.released if n >= pending]
            heapq.heapify(state.released)
