"""Nonce allocation: distinct, consecutive nonces per address, however many sends run at once.

The in-process manager keeps, per address, a counter and the set of nonces out on lease.
While any lease is out the counter is authoritative (the node's pending count lags a burst);
once the address is idle and the node was last asked over `IDLE_TRUST_SECONDS` ago, the next
reservation re-reads the node's pending count, so a transaction the node dropped, or one sent
around the proxy, cannot leave a gap or a clash behind for long. A released nonce (the node
refused the transaction outright) is handed out again before any new one, lowest first, so a
refusal leaves no gap either.

With a `Resender` (the proxy's wiring always gives one), the bytes of every transaction sent
are kept until the node's mined count passes their nonce. A node that forgot its pool (a
restart, a provider's drop) shows a pending count under them; the re-read then sends those
very bytes again instead of handing their nonces to new transactions, which would displace
acknowledged ones. Only nonces with no bytes kept (never sent by us, or refused outright on
the resend) are handed out again. At most `MAX_KEPT` per address are kept, the newest.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from signer_proxy.errors import NodeRejected, SignerProxyError
from signer_proxy.nonces.base import Lease, PendingCount
from signer_proxy.upstream.node_errors import SendOutcome, classify_send_error

log = logging.getLogger(__name__)

# How long after the node's pending count was last read an idle address keeps its counter.
# Sends one after another (one client, one at a time) would otherwise each pay a node round
# trip for the count; within this window a clash with a transaction sent around the proxy
# is caught by the node ("nonce too low" → resync and a fresh nonce), and a gap left by a
# dropped transaction heals at the next read, at most this long after the address rests.
IDLE_TRUST_SECONDS = 1.0
# The most sent transactions kept per address for a node that forgets its pool (the newest).
MAX_KEPT = 4096


@dataclass(frozen=True)
class Resender:
    """What keeping sent transactions needs of the node: its mined count, and a way to send
    raw bytes again."""

    mined_count: PendingCount
    send_raw: Callable[[bytes], Awaitable[None]]


@dataclass
class _AddressState:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    next_nonce: int | None = None
    synced_at: float = float("-inf")  # when the node's pending count was last read
    released: list[int] = field(default_factory=list)  # a heap
    leased: set[int] = field(default_factory=set)
    sent: dict[int, bytes] = field(default_factory=dict)  # nonce -> our bytes, until mined


class _MemoryLease:
    def __init__(self, state: _AddressState, nonce: int) -> None:
        self._state = state
        self._nonce = nonce
        self._done = False
        self._sending = False
        self._raw = b""

    @property
    def nonce(self) -> int:
        return self._nonce

    async def record(self, raw: bytes) -> None:
        # One process: its leases never expire. Recording marks the nonce as one this proxy
        # sends itself, and keeps the bytes in case the node forgets them.
        self._sending = True
        self._raw = raw

    async def commit(self, *, sent: bool = True) -> None:
        if not self._done:
            self._done = True
            self._state.leased.discard(self._nonce)
            if sent and self._sending:
                kept = self._state.sent
                kept[self._nonce] = self._raw
                if len(kept) > MAX_KEPT:  # the oldest kept goes (not min(): O(n) per send)
                    del kept[next(iter(kept))]
            if not (sent and self._sending):
                # Used, but not by a transaction we sent (eth_signTransaction hands the bytes
                # to the caller, who may never send them; a clash took it): only the node
                # knows what comes next, so the next idle reservation asks it.
                self._state.synced_at = float("-inf")

    async def release(self) -> bool:
        if not self._done:
            self._done = True
            self._state.leased.discard(self._nonce)
            heapq.heappush(self._state.released, self._nonce)
        return True  # one process: its leases never run out


class MemoryNonceManager:
    """Per-address asyncio lock and counter, synced to the node's pending count when idle."""

    def __init__(
        self,
        pending_count: PendingCount,
        idle_trust_seconds: float = IDLE_TRUST_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        resender: Resender | None = None,
    ) -> None:
        self._pending_count = pending_count
        self._resender = resender
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
                pending = await self._node_count(address, state)
                state.synced_at = self._clock()
                state.next_nonce = pending
                state.released = []
                await self._resend_forgotten(address, state, pending)
            while state.released:
                nonce = heapq.heappop(state.released)
                if nonce < state.next_nonce and nonce not in state.leased:
                    break
            else:
                nonce = state.next_nonce
                state.next_nonce += 1
            state.leased.add(nonce)
            return _MemoryLease(state, nonce)

    async def next_nonce(self, address: str) -> int:
        # reserve()'s choice, read only: the node's count when reserve would re-read it.
        state = self._state(address)
        async with state.lock:
            if state.next_nonce is None or (
                not state.leased and self._clock() - state.synced_at >= self._idle_trust
            ):
                # Where the node lacks our kept transactions, reserve resends them and hands
                # out the first nonce above them that holds none.
                nonce = await self._pending_count(address)
                while nonce in state.sent:
                    nonce += 1
                return nonce
            free = (n for n in state.released if n < state.next_nonce and n not in state.leased)
            return min(free, default=state.next_nonce)

    async def replaced(self, address: str, nonce: int, raw: bytes) -> None:
        state = self._states.get(address.lower())
        if state is not None and nonce in state.sent:
            state.sent[nonce] = raw

    async def resync(self, address: str) -> None:
        state = self._state(address)
        async with state.lock:
            pending = await self._node_count(address, state)
            state.synced_at = self._clock()
            # Leases out hold nonces below the counter: never step back under them.
            state.next_nonce = max(state.next_nonce or 0, pending) if state.leased else pending
            state.released = [n for n in state.released if n >= pending]
            heapq.heapify(state.released)
            await self._resend_forgotten(address, state, pending)

    async def _node_count(self, address: str, state: _AddressState) -> int:
        """The node's pending count; with kept bytes, also forget those of mined nonces."""
        if self._resender is None or not state.sent:
            return await self._pending_count(address)
        pending, mined = await asyncio.gather(
            self._pending_count(address), self._resender.mined_count(address)
        )
        for nonce in [n for n in state.sent if n < mined]:
            del state.sent[nonce]
        return pending

    async def _resend_forgotten(self, address: str, state: _AddressState, pending: int) -> None:
        """Our sent transactions at or above the node's pending count (it forgot them): the
        same bytes again, lowest first; the counter stays above them, and a nonce among them
        with nothing to resend is handed out again first (else it would be a gap)."""
        if self._resender is None:
            return
        forgotten = sorted(n for n in state.sent if n >= pending)
        if not forgotten:
            return
        for nonce in forgotten:
            try:
                await self._resender.send_raw(state.sent[nonce])
            except NodeRejected as exc:
                outcome = classify_send_error(exc.message)
                if outcome is SendOutcome.REJECTED:  # invalid now (e.g. funds): re-issue it
                    del state.sent[nonce]
                    log.warning(
                        "nonce %d of %s: the node forgot the transaction and refused it again "
                        "(%s); the nonce is handed out again",
                        nonce, address, exc.message,
                    )  # fmt: skip
                continue  # known, taken, or too high: the node has a word for it already
            except SignerProxyError as exc:  # unreachable, timeout: kept, tried next time
                log.warning("nonce %d of %s: resend failed: %s", nonce, address, exc.message)
                continue
            log.warning(
                "nonce %d of %s: resent our transaction, which the node no longer had",
                nonce,
                address,
            )
        top = max([pending, *(n + 1 for n in state.sent if n >= pending)])
        state.next_nonce = max(state.next_nonce or 0, top)
        holes = [
            n
            for n in range(pending, top)
            if n not in state.sent and n not in state.leased and n not in state.released
        ]
        for nonce in holes:
            heapq.heappush(state.released, nonce)
