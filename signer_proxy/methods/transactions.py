"""eth_sendTransaction and eth_signTransaction: fill, reserve a nonce, sign, send."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from signer_proxy.access.gate import SigningGate
from signer_proxy.chain.fill import ChainFacts, fill
from signer_proxy.chain.signing import sign_transaction
from signer_proxy.deadline import remaining
from signer_proxy.errors import (
    DeadlineExceeded,
    InvalidParams,
    NodeRejected,
    SignerProxyError,
    UpstreamTimeout,
)
from signer_proxy.eth.blobs import SidecarForm
from signer_proxy.eth.hexdata import to_data
from signer_proxy.eth.tx_encoding import SignedTx, UnsignedTx, with_nonce
from signer_proxy.eth.tx_request import TxRequest, parse_tx_request
from signer_proxy.jsonrpc import CallContext
from signer_proxy.keys import KeyRegistry, Signer
from signer_proxy.nonces.base import Lease, NonceManager
from signer_proxy.nonces.outcome import (
    DECISIONS,
    Delivery,
    Presence,
    after_lookup,
    delivery_of,
    settle,
)
from signer_proxy.ops import tracing
from signer_proxy.upstream.base import Upstream
from signer_proxy.upstream.node_errors import SendOutcome, classify_send_error

log = logging.getLogger(__name__)

# Told of each acknowledged send (what was sent, what was signed, the sender, the client;
# never raises): Tracker.track_send queues the record at once and returns what completes
# once it is stored.
TrackSend = Callable[[SignedTx, UnsignedTx, str, str], Awaitable[None]]

# A send that meets a nonce clash re-reads the node and tries again, this many times in all.
MAX_SEND_ATTEMPTS = 4
# After an ambiguous failure (timeout, connection lost mid-request) the same raw transaction
# is sent again after each of these pauses, while the request deadline allows.
RESEND_PAUSES = (0.1, 0.5, 1.0)


class TransactionMethods:
    def __init__(
        self,
        registry: Callable[[], KeyRegistry],
        upstream: Upstream,
        nonces: NonceManager,
        facts: ChainFacts,
        gas_margin: float,
        *,
        allow_pre_eip155: bool = False,
        sidecar_form: SidecarForm = SidecarForm.EIP7594,
        gate: SigningGate | None = None,
        track: TrackSend | None = None,
    ) -> None:
        self._registry = registry
        # The tracker (signer_proxy.tracking): told of each transaction the node acknowledged.
        self._track = track
        self._upstream = upstream
        self._nonces = nonces
        self._facts = facts
        self._gas_margin = gas_margin
        self._allow_pre_eip155 = allow_pre_eip155
        self._sidecar_form = sidecar_form
        # Without a policy (tests, embedded use): every client may use every key.
        self._gate = gate or SigningGate()

    async def _prepare(
        self, request: TxRequest, method: str, context: CallContext
    ) -> tuple[Signer, UnsignedTx]:
        signer = self._registry().get(request.sender)
        self._gate.check_key(context, method, signer)  # before any node query
        with tracing.span("fill", {"eth.from": signer.address}):
            unsigned = await fill(
                request,
                self._upstream,
                self._facts,
                self._gas_margin,
                allow_pre_eip155=self._allow_pre_eip155,
                sidecar_form=self._sidecar_form,
            )
        return signer, unsigned

    async def _sign_leased(self, unsigned: UnsignedTx, signer: Signer, lease: Lease) -> SignedTx:
        try:
            return await sign_transaction(with_nonce(unsigned, lease.nonce), signer)
        except BaseException:
            await lease.release()
            raise

    async def eth_signTransaction(self, params: Any, context: CallContext) -> str:
        """The raw signed transaction (0x-hex); a nonce filled here is taken as used."""
        request = parse_tx_request(params)
        signer, unsigned = await self._prepare(request, "eth_signTransaction", context)
        async with self._gate.transaction(
            context, "eth_signTransaction", signer, unsigned
        ) as decision:
            if request.nonce is not None:
                signed = await sign_transaction(unsigned, signer)
            else:
                lease = await self._nonces.reserve(signer.address)
                signed = await self._sign_leased(unsigned, signer, lease)
                await lease.commit()
            decision.signed_transaction(signed.hash, signed.nonce)
        self._log("eth_signTransaction", signer, signed)
        return to_data(signed.raw)

    async def eth_sendTransaction(self, params: Any, context: CallContext) -> str:
        """The transaction hash once the node has accepted the transaction."""
        request = parse_tx_request(params)
        if request.blobs is None and request.blob_versioned_hashes is not None:
            raise InvalidParams(
                "a blob transaction can only be sent with its blobs (nodes refuse it without "
                "them): give blobs; eth_signTransaction accepts blobVersionedHashes alone"
            )
        signer, unsigned = await self._prepare(request, "eth_sendTransaction", context)
        async with self._gate.transaction(
            context, "eth_sendTransaction", signer, unsigned
        ) as decision:
            signed, tracked = await self._sign_and_send(request, unsigned, signer, context.client)
            decision.signed_transaction(signed.hash, signed.nonce)
        if tracked is not None:
            await tracked  # its record was being stored while the nonce and audit closed
        # The "sending" line at info already named the transaction, its nonce, from and key.
        self._log("eth_sendTransaction", signer, signed, logging.DEBUG)
        return to_data(signed.hash)

    async def _sign_and_send(
        self, request: TxRequest, unsigned: UnsignedTx, signer: Signer, client: str
    ) -> tuple[SignedTx, Awaitable[None] | None]:
        """Sign and send, with a fresh nonce after each nonce clash; the transaction sent,
        and with tracking on, what completes once its record is stored (begun as soon as the
        node accepted it)."""
        if request.nonce is not None:  # the caller owns the nonce: one try, errors as they are
            signed = await sign_transaction(unsigned, signer)
            await self._send(signed, signer)
            return signed, self._tracked(signed, unsigned, signer, client)
        for attempt in range(1, MAX_SEND_ATTEMPTS + 1):
            lease = await self._nonces.reserve(signer.address)
            signed = await self._sign_leased(unsigned, signer, lease)
            try:
                # Kept before a byte leaves: replicas repair a dead send with these bytes.
                await lease.record(signed.raw)
                left = remaining()
                if left is not None and left <= 0:
                    raise DeadlineExceeded(
                        "the request used up --request-deadline before the transaction could "
                        "be sent; nothing was sent: retry, or raise --request-deadline"
                    )
            except BaseException:
                await lease.release()
                raise
            try:
                delivery, error = await self._deliver(signed, signer)
            except BaseException:
                # Anything else after the bytes may have left: the nonce counts as used
                # (replicas resend the recorded transaction if the node lacks it).
                await lease.commit()
                raise
            decision = DECISIONS[delivery]  # what it does to the nonce: nonces/outcome.py
            if delivery is Delivery.ACCEPTED:
                tracked = self._tracked(signed, unsigned, signer, client)
                await settle(lease, decision.nonce)
                return signed, tracked
            if not await settle(lease, decision.nonce):
                # The lease ran out while the node was asked (and a sync may already have
                # resent the recorded bytes): they stay with the nonce store, which sends
                # them until they are mined, so the client must not hear "not sent".
                assert error is not None
                raise UpstreamTimeout(
                    f"{error.message}; but the nonce's lease (--nonce-lease-seconds) ran out "
                    f"meanwhile, and the nonce store keeps and resends transaction "
                    f"{to_data(signed.hash)}: it may still be mined; check it with "
                    "eth_getTransactionByHash before sending again",
                    {"txHash": to_data(signed.hash), "nonce": hex(signed.nonce)},
                ) from error
            if delivery is Delivery.MAYBE_DELIVERED:
                message = error.message if error is not None else "the send was cut short"
                raise UpstreamTimeout(
                    f"{message}; transaction {to_data(signed.hash)} may still be mined: "
                    "check it with eth_getTransactionByHash before sending again",
                    {"txHash": to_data(signed.hash), "nonce": hex(signed.nonce)},
                ) from error
            assert error is not None
            if not decision.resign or attempt == MAX_SEND_ATTEMPTS:
                raise error
            log.warning(
                "eth_sendTransaction from %s: nonce %d refused (%s); resyncing, attempt %d",
                signer.address,
                signed.nonce,
                delivery.value,
                attempt + 1,
            )
            await self._nonces.resync(signer.address)
        raise AssertionError("unreachable")  # the loop returns or raises

    def _tracked(
        self, signed: SignedTx, unsigned: UnsignedTx, signer: Signer, client: str
    ) -> Awaitable[None] | None:
        if self._track is None:
            return None
        return self._track(signed, unsigned, signer.address, client)

    async def _deliver(
        self, signed: SignedTx, signer: Signer
    ) -> tuple[Delivery, SignerProxyError | None]:
        """Send; after an ambiguous failure resend the same bytes (a nonce that may have been
        delivered is never signed again), within the request deadline. How it ended, and the
        error that says so (None when accepted)."""
        maybe: SignerProxyError | None = None
        for pause in (0.0, *RESEND_PAUSES):
            if maybe is not None:
                left = remaining()
                if left is not None and left <= pause:
                    break
                await asyncio.sleep(pause)
                log.warning(
                    "resending transaction %s (nonce %d) after: %s",
                    to_data(signed.hash),
                    signed.nonce,
                    maybe.message,
                )
            try:
                await self._send(signed, signer)
                return Delivery.ACCEPTED, None
            except SignerProxyError as exc:
                delivery = delivery_of(exc)
                if delivery is Delivery.MAYBE_DELIVERED:
                    maybe = exc
                    continue
                if maybe is None:
                    return delivery, exc  # the first try: what the node said is the answer
                if delivery is Delivery.NOT_DELIVERED:
                    continue  # this resend never arrived; the first may have
                # The node refused the resend: is that because it has the first one?
                found = after_lookup(delivery, await self._presence(signed))
                return found, (None if found is Delivery.ACCEPTED else
                               maybe if found is Delivery.MAYBE_DELIVERED else exc)  # fmt: skip
        return Delivery.MAYBE_DELIVERED, maybe

    async def _presence(self, signed: SignedTx) -> Presence:
        """Whether the node has the transaction; UNKNOWN when the lookup fails too."""
        try:
            found = await self._upstream.call("eth_getTransactionByHash", [to_data(signed.hash)])
        except SignerProxyError:
            return Presence.UNKNOWN
        return Presence.NO if found is None else Presence.YES

    async def _send(self, signed: SignedTx, signer: Signer) -> None:
        # Logged before the send: if it is cut short (timeout, shutdown), the hash to look up.
        tx_hash = to_data(signed.hash)
        log.info(
            "sending tx=%s nonce=%d from=%s key=%s",
            tx_hash,
            signed.nonce,
            signer.address,
            signer.key_name,
            extra={
                "tx_hash": tx_hash,
                "nonce": signed.nonce,
                "from": signer.address,
                "key": signer.key_name,
            },
        )
        try:
            await self._upstream.call("eth_sendRawTransaction", [to_data(signed.raw)])
        except NodeRejected as exc:
            if classify_send_error(exc.message) is not SendOutcome.ALREADY_KNOWN:
                raise

    def _log(
        self, method: str, signer: Signer, signed: SignedTx, level: int = logging.INFO
    ) -> None:
        if not log.isEnabledFor(level):
            return
        tx_hash = to_data(signed.hash)
        log.log(
            level,
            "%s from=%s nonce=%d tx=%s key=%s",
            method,
            signer.address,
            signed.nonce,
            tx_hash,
            signer.key_name,
            extra={
                "from": signer.address,
                "nonce": signed.nonce,
                "tx_hash": tx_hash,
                "key": signer.key_name,
            },
        )
