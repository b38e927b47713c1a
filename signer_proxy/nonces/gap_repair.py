"""Gap repair (Redis nonce store): every replica, every quarter lease, syncs each of its
addresses with the node. A sync resends raw transactions that a dead replica recorded but
may never have sent, and re-issues nonces that a dead replica reserved and never used. A
released nonce that no send has taken by the next round is filled with a zero-value
transfer to the address itself, so transactions already acknowledged above it are mined
even when no new request comes. See docs/design.md, "Nonces across replicas".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import Protocol

from signer_proxy.chain.fill import ChainFacts, fill
from signer_proxy.chain.signing import sign_transaction
from signer_proxy.deadline import deadline_scope
from signer_proxy.errors import (
    SignerProxyError,
)
from signer_proxy.eth.hexdata import to_data
from signer_proxy.eth.tx_encoding import SignedTx, UnsignedTx, with_nonce
from signer_proxy.eth.tx_request import TxRequest
from signer_proxy.keys import KeyRegistry
from signer_proxy.keys.signer import Signer
from signer_proxy.nonces.base import Lease
from signer_proxy.nonces.outcome import DECISIONS, Delivery, delivery_of, settle
from signer_proxy.nonces.redis_store import RedisNonceManager
from signer_proxy.upstream.base import Upstream

log = logging.getLogger(__name__)


class Noted(Protocol):
    """What the audit notes of a signed filler (access.gate.Decision)."""

    def signed_transaction(self, tx_hash: bytes, nonce: int) -> None: ...

    def failed(self, error: SignerProxyError) -> None: ...


# (signer, transaction, reason) -> `async with` around its signing and sending, audited.
Witness = Callable[[Signer, UnsignedTx, str], AbstractAsyncContextManager[Noted]]


class GapRepairer:
    """Finds and fills nonce gaps for every address of the registry, round after round."""

    def __init__(
        self,
        nonces: RedisNonceManager,
        registry: Callable[[], KeyRegistry],
        upstream: Upstream,
        facts: ChainFacts,
        gas_margin: float,
        deadline: float,
        track: Callable[[SignedTx, int, str, str], Awaitable[None]] | None = None,
        witness: Witness | None = None,
    ) -> None:
        self._nonces = nonces
        self._track = track
        # The signing gate's audit for what the proxy signs on its own (SigningGate.on_its_own).
        self._witness = witness
        self._registry = registry
        self._upstream = upstream
        self._facts = facts
        self._gas_margin = gas_margin
        self._deadline = deadline
        self._released: dict[str, tuple[int, ...]] = {}

    async def run(self, interval: float) -> None:
        """Repair every address every `interval` seconds, forever (a background task)."""
        while True:
            for address in self._registry().addresses:
                try:
                    await self.repair(address)
                except SignerProxyError as exc:
                    log.warning("gap repair for %s: %s", address, exc.message)
                except Exception:
                    log.exception("gap repair for %s failed", address)
            await asyncio.sleep(interval)

    async def repair(self, address: str) -> None:
        """One round: fill the nonces released since the last round and still unused (by
        whichever replica or path released them), then sync."""
        with deadline_scope(self._deadline):
            for nonce in self._released.pop(address, ()):
                lease = await self._nonces.claim(address, nonce)
                if lease is not None:
                    await self._fill(address, lease)
            result = await self._nonces.sync(address)
            if result.released:
                self._released[address] = result.released

    async def _fill(self, address: str, lease: Lease) -> None:
        signer = self._registry().get(address)
        async with AsyncExitStack() as audited:
            try:
                request = TxRequest(sender=address, to=address)
                unsigned = await fill(request, self._upstream, self._facts, self._gas_margin)
                decision = None
                if self._witness is not None:  # refused while the audit log is down
                    witness = self._witness(signer, unsigned, "nonce gap filler")
                    decision = await audited.enter_async_context(witness)
            except BaseException:
                await lease.release()  # the next round tries again
                raise
            await self._sign_and_send(address, signer, unsigned, lease, decision)

    async def _sign_and_send(
        self,
        address: str,
        signer: Signer,
        unsigned: UnsignedTx,
        lease: Lease,
        decision: Noted | None,
    ) -> None:
        try:
            signed = await sign_transaction(with_nonce(unsigned, lease.nonce), signer)
            await lease.record(signed.raw)
        except BaseException:
            await lease.release()
            raise
        if decision is not None:
            decision.signed_transaction(signed.hash, signed.nonce)
        try:
            await self._upstream.call("eth_sendRawTransaction", [to_data(signed.raw)])
        except SignerProxyError as exc:
            delivery = delivery_of(exc)
            # A filler is never signed again at another nonce (it only closes this gap); a
            # maybe-delivered one stays recorded and the next sync resends it if need be.
            await settle(lease, DECISIONS[delivery].nonce)
            if delivery in (Delivery.NOT_DELIVERED, Delivery.MAYBE_DELIVERED):
                raise
            log.warning("gap filler for nonce %d of %s: %s", lease.nonce, address, exc.message)
            if decision is not None:
                decision.failed(exc)
            return
        except BaseException:
            await lease.commit()
            raise
        await lease.commit()
        if self._track is not None:
            await self._track(signed, unsigned.chain_id, address, "signer-proxy")
        log.warning(
            "nonce gap of %s: filled nonce %d with a zero-value transfer to itself (tx %s)",
            address,
            lease.nonce,
            to_data(signed.hash),
        )
