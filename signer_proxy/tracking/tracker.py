"""The tracker: records every transaction the proxy sent, watches each address's pending ones
round after round until they are final, rebroadcasts what the node forgot (the same raw bytes,
never re-signed), and replaces what is due with higher fees when the policy allows it
(docs/design.md, "Tracking transactions until they are final").

A replacement is signed like any send: through the signing gate, for the client whose send
it replaces (or the one asking, for signer_speedUpTransaction / signer_cancelTransaction), and
audited with `replaces` naming the hash it replaces.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from signer_proxy.access.gate import SigningGate
from signer_proxy.access.policy import key_denial
from signer_proxy.chain.fill import ChainFacts
from signer_proxy.chain.signing import sign_transaction
from signer_proxy.errors import (
    InvalidParams,
    NodeRejected,
    PolicyDenied,
    SignerProxyError,
    UpstreamBadResponse,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from signer_proxy.eth.fee_bump import (
    Bump,
    BumpPolicy,
    Ceiling,
    Market,
    bump,
    cancellation,
    worst_cost,
)
from signer_proxy.eth.hexdata import parse_quantity, to_data
from signer_proxy.eth.tx_decoding import decode_raw
from signer_proxy.eth.tx_encoding import SignedTx, UnsignedTx
from signer_proxy.eth.tx_request import BLOB, DYNAMIC_FEE_TYPES
from signer_proxy.jsonrpc import CallContext
from signer_proxy.keys import KeyRegistry
from signer_proxy.nonces.base import NonceManager
from signer_proxy.nonces.outcome import Delivery, delivery_of
from signer_proxy.ops.metrics import Metrics
from signer_proxy.tracking import state
from signer_proxy.tracking.state import Action, Observation, State, Tracked
from signer_proxy.tracking.store import TrackStore
from signer_proxy.upstream.base import Upstream
from signer_proxy.upstream.batch import call_many
from signer_proxy.upstream.node_errors import SendOutcome, classify_send_error

log = logging.getLogger(__name__)


RECEIPT, LOOKUP = "eth_getTransactionReceipt", "eth_getTransactionByHash"
BODY = "eth_getBlockByNumber"

# The most block bodies a round reads to find which of an address's transactions were mined;
# past it (a replica that was away, a node far ahead) each one's receipt is asked instead.
MAX_BODIES = 64
# After the node refuses a block body, how long rounds ask receipts before trying bodies again.
BODIES_RETRY_SECONDS = 600


def utc_day(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")


class Tracker:
    """Tracks sent transactions in `store`; `run()` is the watch loop (a background task)."""

    def __init__(
        self,
        store: TrackStore,
        upstream: Upstream,
        facts: ChainFacts,
        registry: Callable[[], KeyRegistry],
        gate: SigningGate,
        metrics: Metrics | None = None,
        *,
        interval: float = 2.0,
        lease_seconds: float = 30.0,
        confirmations: int = 0,
        clock: Callable[[], float] = time.time,
        chain: str = "default",
    ) -> None:
        self.store = store
        # The chain this tracker watches (its node's chain id): with several chains each has a
        # tracker, and the store (shared in Redis) holds every chain's records.
        self.chain = chain
        self._upstream = upstream
        self._facts = facts
        self._registry = registry
        self._gate = gate
        self._metrics = metrics
        self._interval = interval
        # --tracking-confirmations: blocks on top of a mined record's block before it is final
        self._confirmations = confirmations
        self._lease_seconds = lease_seconds
        self._clock = clock
        # The nonce manager whose kept bytes a replacement must update (set by the router
        # that shares both; None: nothing keeps bytes, e.g. a tracker in a test).
        self.nonces: NonceManager | None = None
        self._owner = f"{os.uname().nodename}-{os.getpid()}-{id(self)}"
        # (chain id, lower-case address) -> the checksummed address its gauges are labelled with
        self._watching: dict[tuple[int, str], str] = {}
        # Records queued this turn of the event loop, with the future their send awaits; the
        # tasks storing groups (held: the loop keeps only weak references to tasks).
        self._queued: list[tuple[Tracked, asyncio.Future[None]]] = []
        self._flushes: set[asyncio.Task[None]] = set()
        # Held while records the store already knew of are looked up and merged (rare).
        self._merging: asyncio.Lock | None = None
        # Per watched address: current hash -> (the record as stored, with its first block).
        self._first_blocks: dict[tuple[int, str], dict[str, tuple[Tracked, Tracked]]] = {}
        # Per watched address: the latest block its previous round saw, where the next round
        # starts reading block bodies for the transactions mined since (`_observe`).
        self._heads: dict[tuple[int, str], int] = {}
        # Block bodies are not read before this time (the node refused one: _no_bodies).
        self._bodies_after = 0.0

    @property
    def policy(self) -> BumpPolicy:
        return self._gate.policy.fee_bumping

    # -- recording --

    def track(
        self,
        signed: SignedTx,
        chain_id: int,
        address: str,
        client: str,
        kind: str = "send",
        tx: UnsignedTx | None = None,
    ) -> Awaitable[None]:
        """Track a transaction the node acknowledged: its record is queued at once, and what
        this returns completes once the record is stored (a status call right after finds
        it), so a caller can do its own closing work meanwhile (settle the nonce, write the
        audit) and wait only after. `tx`: what was signed, when the caller has it (else it is
        decoded from the raw bytes: ~45 µs). The records queued in one turn of the event loop
        are stored together, sent in the next turn without waiting for earlier groups: with
        Redis their script leaves in the same write as the nonces' commit of those sends (a
        group that waited for the one before went out alone: a quarter more writes to Redis,
        each a wake-up for Redis and for everything sharing its core). Never raises."""
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        try:
            unsigned = decode_raw(signed.raw).tx if tx is None else tx
            record = state.new_record(
                chain_id,
                address,
                signed.nonce,
                to_data(signed.hash),
                to_data(signed.raw),
                client,
                self._clock(),
                kind,
                worst_cost(unsigned),
            )
        except Exception as exc:  # the transaction is sent: report, do not fail the request
            self._not_tracked(to_data(signed.hash), address, exc)
            done.set_result(None)
            return done
        self._queued.append((record, done))
        if len(self._queued) == 1:  # the turn's first: its task takes the turn's records
            task = asyncio.create_task(self._flush())
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)
        # A request cancelled while it waits cancels only `done`: the group's write goes on.
        return done

    async def _flush(self) -> None:
        """Store the records queued in the turn this task was created in. Its first step runs
        in the next turn, before the Redis client writes what that turn sent."""
        group, self._queued = self._queued, []
        try:
            await self._store_group([record for record, _ in group])
        except Exception as exc:
            for record, _ in group:
                self._not_tracked(record.current, record.address, exc)
        finally:
            for _, done in group:
                if not done.done():
                    done.set_result(None)

    async def _store_group(self, records: list[Tracked]) -> None:
        # New sends first, in one call; what the store already knows of goes the long way.
        stored = await self.store.add_new(records)
        records = [r for r, done in zip(records, stored, strict=True) if not done]
        if not records:
            return
        if self._merging is None:
            self._merging = asyncio.Lock()
        async with self._merging:  # groups in flight: one merge at a time reads, then writes
            await self._merge(records)

    async def _merge(self, records: list[Tracked]) -> None:
        looked = await self.store.before_track_many(
            [(r.current, r.chain_id, r.address, r.nonce) for r in records]
        )
        saving: dict[tuple[int, str, int], Tracked] = {}
        for record, (known, earlier) in zip(records, looked, strict=True):
            if known is not None:
                continue  # already tracked (the same bytes sent again)
            key = (record.chain_id, record.address.lower(), record.nonce)
            earlier = saving.get(key, earlier)  # one of this group holds the nonce already
            if earlier is not None:
                if record.current in earlier.hashes:
                    continue
                # Another of our transactions holds the nonce (e.g. gap repair filled a nonce
                # it took for a hole): this one replaces it; the record keeps every hash.
                merged = state.bumped(
                    earlier, record.current, record.raw, earlier.extra_cost, record.sent_at, None
                )
                record = state.replace(merged, bumps=earlier.bumps)
            saving[key] = record
        await self.store.save_many(list(saving.values()))

    def _not_tracked(self, tx_hash: str, address: str, exc: BaseException) -> None:
        log.error(
            "could not track tx=%s from=%s: %s",
            tx_hash,
            address,
            exc.message if isinstance(exc, SignerProxyError) else repr(exc),
        )

    def track_send(
        self, signed: SignedTx, tx: UnsignedTx, address: str, client: str
    ) -> Awaitable[None]:
        """track() for eth_sendTransaction, which has the transaction it signed."""
        return self.track(signed, tx.chain_id, address, client, tx=tx)

    # -- asking --

    async def find(self, tx_hash: str) -> Tracked | None:
        """The record of `tx_hash` (any hash sent for its nonce) on this tracker's chain."""
        record = await self.store.find(tx_hash)
        if record is not None and record.chain_id != await self._facts.chain_id():
            return None  # another chain's transaction: asked on that chain's path
        return record

    # -- watching --

    async def run(self) -> None:
        """Watch every address with pending records, every `interval` seconds, forever."""
        while True:
            try:
                await self.round()
            except SignerProxyError as exc:
                log.warning("tracking round: %s", exc.message)
            except Exception:
                log.exception("tracking round failed")
            await asyncio.sleep(self._interval)

    async def round(self) -> None:
        """One round over every watched address this replica holds (or takes) the lease of."""
        mine = await self._facts.chain_id()
        watched = [(c, a) for c, a in await self.store.watched() if c == mine]
        bodies: dict[int, frozenset[str] | None] = {}  # read once a round for every address
        for chain_id, address in watched:
            if not await self.store.lease(chain_id, address, self._owner, self._lease_seconds):
                self._forget_gauges(chain_id, address)
                continue
            try:
                await self.watch(chain_id, address, bodies)
            except SignerProxyError as exc:
                log.warning("tracking %s: %s", address, exc.message)
        for chain_id, address in set(self._watching) - set(watched):
            self._forget_gauges(chain_id, address)

    def _forget_gauges(self, chain_id: int, address: str) -> None:
        self._first_blocks.pop((chain_id, address.lower()), None)
        self._heads.pop((chain_id, address.lower()), None)
        label = self._watching.pop((chain_id, address.lower()), None)
        if self._metrics is not None and label is not None:
            address = label
            for gauge in (
                self._metrics.tracked_pending,
                self._metrics.tracked_oldest_pending_seconds,
                self._metrics.tracked_stuck,
            ):
                with contextlib.suppress(KeyError):
                    gauge.remove(address, self.chain)

    async def watch(
        self,
        chain_id: int,
        address: str,
        bodies: dict[int, frozenset[str] | None] | None = None,
    ) -> None:
        """One round for one address: finalize, rebroadcast, bump or mark stuck. `bodies`:
        the block bodies already read this round (by number), shared across addresses."""
        records = await self.store.pending(chain_id, address)
        if not records:
            self._forget_gauges(chain_id, address)
            return
        block, mined_count, pooled = await self._counts(address)
        now = self._clock()
        left: list[Tracked] = []
        unsaved: list[Tracked] = []  # finalized or only updated: stored together below
        key = (chain_id, address.lower())
        since = self._heads.get(key)
        observed = await self._observe(
            records, now, block, mined_count, pooled, since, {} if bodies is None else bodies
        )
        self._heads[key] = block
        noted = self._first_blocks.get(key, {})
        noting: dict[str, tuple[Tracked, Tracked]] = {}
        for index, (stored, seen) in enumerate(zip(records, observed, strict=True)):
            if index % 256 == 255:
                await asyncio.sleep(0)  # thousands at once: let requests in between
            record = self._with_first_block(stored, noted.get(stored.current))
            step = state.decide(record, seen, self.policy, self._confirmations)
            if record.seen_mined and not step.record.seen_mined:
                self._reorged(record)
            elif record.seen_mined and _where(step.record) != _where(record):
                self._moved(record, step.record)
            if (
                step.action is Action.WAIT
                and step.record.state is record.state
                and not record.seen_mined
            ):
                if step.record is not record:  # only the first block seen is new: noted
                    noting[stored.current] = (stored, step.record)
                elif record is not stored:
                    noting[stored.current] = (stored, record)
                record = step.record
            elif step.action in (Action.FINALIZE, Action.WAIT):
                if step.action is Action.FINALIZE:
                    self._log_final(step.record)
                if step.action is Action.FINALIZE or step.record is not record:
                    unsaved.append(step.record)
                record = step.record
            else:
                record = await self._act(step, record, now)
            if not record.final:
                left.append(record)
        if noting:
            self._first_blocks[key] = noting
        else:
            self._first_blocks.pop(key, None)
        if unsaved:
            await self.store.save_many(unsaved)
        self._gauges(chain_id, address, left, now)

    async def _counts(self, address: str) -> tuple[int, int, int]:
        """The node's head, and the address's mined and pending transaction counts, asked in
        one batch: behind a load balancer one node answers all three, so a lagging one cannot
        pair its count with another's head (a reorg that was not). A node that refuses the
        "pending" tag is asked for the latest count in its place, as nonces do."""
        calls = [
            ("eth_blockNumber", []),
            ("eth_getTransactionCount", [address, "latest"]),
            ("eth_getTransactionCount", [address, "pending"]),
        ]
        try:
            block_hex, count_hex, pending_hex = await call_many(self._upstream, calls)
        except NodeRejected:
            block_hex, count_hex = await call_many(self._upstream, calls[:2])
            pending_hex = count_hex
        return (
            parse_quantity(block_hex, "the node's block number"),
            parse_quantity(count_hex, "the node's transaction count"),
            parse_quantity(pending_hex, "the node's pending transaction count"),
        )

    @staticmethod
    def _with_first_block(stored: Tracked, noted: tuple[Tracked, Tracked] | None) -> Tracked:
        """`stored` with the first block seen after its send, when a round noted it (in this
        process, not in the store: writing every record again for it was a write per
        transaction). A replica that takes the watch over notes its own first block: later,
        so a bump is due later, never sooner."""
        if noted is None or stored.sent_block is not None:
            return stored
        if noted[0] is stored:  # unchanged since (the store kept it parsed)
            return noted[1]
        return state.replace(stored, sent_block=noted[1].sent_block)

    def _gauges(self, chain_id: int, address: str, left: list[Tracked], now: float) -> None:
        if self._metrics is None:
            return
        left = [r for r in left if not r.seen_mined]  # confirming: mined, not pending
        if not left:
            self._forget_gauges(chain_id, address)
            return
        address = left[0].address
        self._watching[(chain_id, address.lower())] = address
        self._metrics.tracked_pending.labels(address, self.chain).set(len(left))
        oldest = min((r.first_sent_at for r in left), default=now)
        oldest_gauge = self._metrics.tracked_oldest_pending_seconds
        oldest_gauge.labels(address, self.chain).set(now - oldest)
        self._metrics.tracked_stuck.labels(address, self.chain).set(
            sum(1 for r in left if r.state is State.STUCK)
        )

    async def _observe(
        self,
        records: list[Tracked],
        now: float,
        block: int,
        mined_count: int,
        pooled: int,
        since: int | None,
        bodies: dict[int, frozenset[str] | None],
    ) -> list[Observation]:
        """What the node says of each record. A nonce under the node's pending count
        (`pooled`) and not mined is one the node holds in its pool: known, without asking per
        transaction. Above the pool the node is asked whether it knows each hash (forgotten
        ones are rebroadcast). A mined nonce's hash is looked for in the bodies of the blocks
        since the previous round (`since`, its latest block; without one, since the block of
        the lowest mined nonce, by its receipt) when they are fewer than the hashes to find:
        one call per block, not one per transaction (a receipt's status is asked when a client
        wants it, `with_status`). A hash found in no body has its receipt asked, and only a
        nonce none of whose hashes has a receipt is another's (superseded). Everything is
        asked in batches (upstream/batch.py)."""
        # Mined and confirming: known to be mined, nothing to look for (decide counts blocks)
        # until its depth is reached; then its hashes' receipts say whether a reorg moved it.
        mined = [r for r in records if r.nonce < mined_count and not r.seen_mined]
        due = [
            r
            for r in records
            if r.nonce < mined_count and state.due_final(r, block, self._confirmations)
        ]
        above = [r for r in records if mined_count <= r.nonce and pooled <= r.nonce]
        where: dict[str, tuple[int, int | None]] = {}  # mined hash -> (block, status)
        if since is None and len(mined) > 2:
            # No round before (a replica's first, or one taking the watch over): one sender's
            # nonces are mined in order, so the block of its lowest mined nonce starts them all.
            probe = _receipt_calls([min(mined, key=lambda r: r.nonce)])
            where = _receipts(probe, await call_many(self._upstream, probe))
            since = min((number for number, _ in where.values()), default=None)
        span = range(since, block + 1) if since is not None else range(0)
        hashes = sum(len(r.hashes) for r in mined)
        enough = 0 < len(span) <= MAX_BODIES and len(span) < hashes
        from_bodies = enough and now >= self._bodies_after
        unread = [n for n in span if n not in bodies] if from_bodies else []
        if unread:
            try:
                reads = [(BODY, [hex(n), False]) for n in unread]
                answers = await call_many(self._upstream, reads)
                read = {n: _body_hashes(a, n) for n, a in zip(unread, answers, strict=True)}
            except (NodeRejected, UpstreamBadResponse) as exc:
                self._no_bodies(exc)
                from_bodies = False
            else:
                bodies.update(read)
        lookups = [(LOOKUP, [tx_hash]) for r in above for tx_hash in reversed(r.hashes)]
        receipts = [] if from_bodies else _receipt_calls(mined)
        checks = _receipt_calls(due)
        calls = [*lookups, *receipts, *checks]
        answers = await call_many(self._upstream, calls) if calls else []
        known = {
            call[1][0].lower()
            for call, answer in zip(lookups, answers[: len(lookups)], strict=True)
            if answer is not None
        }
        asked = len(lookups) + len(receipts)
        where.update(_receipts(receipts, answers[len(lookups) : asked]))
        checked = _receipts(checks, answers[asked:])
        due_ids = {id(r) for r in due}
        if from_bodies:
            for number in span:
                for tx_hash in bodies[number] or ():
                    where.setdefault(tx_hash, (number, None))  # a probed receipt stays
            missed = [r for r in mined if not any(h.lower() in where for h in r.hashes)]
            if missed:  # mined before `since`, or the node's head moved on meanwhile
                receipts = _receipt_calls(missed)
                where.update(_receipts(receipts, await call_many(self._upstream, receipts)))
        observed = []
        for record in records:
            if mined_count > record.nonce and id(record) in due_ids:
                found = _found(record, checked)
                observed.append(Observation(now, block, mined_count, True, found, checked=True))
            elif mined_count > record.nonce and record.seen_mined:
                observed.append(Observation(now, block, mined_count, True))
            elif mined_count > record.nonce:
                found = _found(record, where)
                observed.append(Observation(now, block, mined_count, found is not None, found))
            elif record.nonce < pooled:
                observed.append(Observation(now, block, mined_count, True))
            else:
                seen = any(tx_hash.lower() in known for tx_hash in record.hashes)
                observed.append(Observation(now, block, mined_count, seen))
        return observed

    def _no_bodies(self, exc: SignerProxyError) -> None:
        """The node refused block bodies or served ones that are not the block asked: for the
        next BODIES_RETRY_SECONDS this tracker asks a receipt per transaction, as it did
        before bodies (a provider's passing rate limit does not turn them off for good)."""
        self._bodies_after = self._clock() + BODIES_RETRY_SECONDS
        log.warning(
            "tracking: eth_getBlockByNumber from the node failed (%s); asking a receipt per "
            "mined transaction for the next %d s",
            exc.message,
            BODIES_RETRY_SECONDS,
        )

    async def with_status(self, record: Tracked) -> Tracked:
        """`record`, and if it is mined, its receipt's status: a round that found the
        transaction in a block body did not ask for its receipt, so the node is asked when a
        client first wants it, and the answer is stored. A node that serves no receipt for it
        (it left the chain in a reorg) leaves the status unknown."""
        if record.state is not State.MINED or record.status is not None or not record.mined_hash:
            return record
        found = _receipts(
            [(RECEIPT, [record.mined_hash])],
            [await self._upstream.call(RECEIPT, [record.mined_hash])],
        )
        if not found:
            return record
        block, status = found[record.mined_hash.lower()]
        done = state.replace(record, block_number=block, status=status)
        await self.store.save(done)
        return done

    async def _act(self, step: state.Step, before: Tracked, now: float) -> Tracked:
        record = step.record
        if step.action is Action.FINALIZE:
            await self.store.save(record)
            self._log_final(record)
            return record
        if step.action is Action.REBROADCAST:
            return await self._rebroadcast(record, now)
        if step.action is Action.BUMP:
            context = CallContext(client=record.client, transport="tracker")
            try:
                return await self._replace(record, context, "auto")
            except SignerProxyError as exc:
                log.warning("automatic bump of tx=%s: %s", record.current, exc.message)
                return record
        if step.action is Action.STUCK:
            return await self._stuck(record, step.reason)
        if record != before:  # e.g. the first block seen after the send
            await self.store.save(record)
        return record

    def _log_final(self, record: Tracked) -> None:
        mined = record.state is State.MINED and record.block_number is not None
        log.info(
            "tx=%s nonce=%d from=%s %s%s",
            record.mined_hash or record.current,
            record.nonce,
            record.address,
            record.state.value,
            f" in block {record.block_number}" if mined else "",
            extra={"tx_hash": record.current, "from": record.address, "nonce": record.nonce},
        )

    def _reorged(self, record: Tracked) -> None:
        """A confirming record whose nonce the node no longer counts as mined."""
        if self._metrics is not None:
            self._metrics.tracked_reorged.labels(self.chain).inc()
        log.warning(
            "reorg: tx=%s nonce=%d from=%s was %s%s and is no longer on the chain; watching it "
            "as pending (rebroadcast if the node forgot it)",
            record.mined_hash or record.current,
            record.nonce,
            record.address,
            record.state.value,
            f" in block {record.block_number}" if record.block_number is not None else "",
            extra={"tx_hash": record.current, "from": record.address, "nonce": record.nonce},
        )

    def _moved(self, record: Tracked, now: Tracked) -> None:
        """A confirming record at its depth whose receipts say a reorg moved it, its nonce
        still mined: counted again from where it is now."""
        if self._metrics is not None:
            self._metrics.tracked_reorged.labels(self.chain).inc()
        was = (
            f"{record.mined_hash} in block {record.block_number}"
            if record.state is State.MINED
            else "mined by a transaction not ours"
        )
        is_now = (
            f"{now.mined_hash} in block {now.block_number}"
            if now.state is State.MINED
            else "mined by a transaction not ours"
        )
        log.warning(
            "reorg: nonce=%d from=%s was %s and is now %s; final once %d blocks are on top",
            record.nonce,
            record.address,
            was,
            is_now,
            self._confirmations,
            extra={
                "tx_hash": now.mined_hash or now.current,
                "from": record.address,
                "nonce": record.nonce,
            },
        )

    async def _stuck(self, record: Tracked, reason: str) -> Tracked:
        record = state.stuck(record, reason)
        await self.store.save(record)
        if self._metrics is not None:
            self._metrics.tracked_stuck_events.labels(self.chain).inc()
        log.warning(
            "stuck tx=%s nonce=%d from=%s hashes=%s: %s",
            record.current,
            record.nonce,
            record.address,
            ",".join(record.hashes),
            reason,
            extra={"tx_hash": record.current, "from": record.address, "nonce": record.nonce},
        )
        return record

    async def _rebroadcast(self, record: Tracked, now: float) -> Tracked:
        try:
            await self._upstream.call("eth_sendRawTransaction", [record.raw])
        except NodeRejected as exc:
            if classify_send_error(exc.message) is not SendOutcome.ALREADY_KNOWN:
                # nonce too low: mined meanwhile (the next round sees it); else the node's word
                if record.state is State.PENDING:
                    log.warning("rebroadcast of tx=%s refused: %s", record.current, exc.message)
                record = state.rebroadcast(record, accepted=False)
                await self.store.save(record)
                return record
        except (UpstreamUnavailable, UpstreamTimeout, UpstreamBadResponse) as exc:
            # Unsent, or maybe: the next round looks again. Raised, it ended the address's
            # round, and the records finalized before this one were never stored.
            log.warning("rebroadcast of tx=%s: %s", record.current, exc.message)
            return record
        record = state.rebroadcast(record, accepted=True)
        await self.store.save(record)
        if self._metrics is not None:
            self._metrics.tracked_rebroadcasts.labels(self.chain).inc()
        log.warning(
            "rebroadcast tx=%s nonce=%d from=%s (the node no longer had it; same bytes)",
            record.current,
            record.nonce,
            record.address,
            extra={"tx_hash": record.current, "from": record.address, "nonce": record.nonce},
        )
        return record

    # -- replacing --

    async def _market(self, tx_type: int) -> Market:
        if tx_type in DYNAMIC_FEE_TYPES:
            base_fee, tip = await self._facts.fee_suggestion()
            blob = 0
            if tx_type == BLOB:
                blob = parse_quantity(await self._upstream.call("eth_blobBaseFee", []), "blob fee")
            return Market(base_fee, tip, 0, blob)
        price = parse_quantity(await self._upstream.call("eth_gasPrice", []), "gas price")
        return Market(0, 0, price)

    async def replace(self, tx_hash: str, context: CallContext, trigger: str) -> Tracked:
        """signer_speedUpTransaction (trigger "speed_up") / signer_cancelTransaction ("cancel")
        for `context`'s client: the record after the replacement was sent."""
        method = "signer_cancelTransaction" if trigger == "cancel" else "signer_speedUpTransaction"
        record = await self.find(tx_hash)
        if record is None:
            raise InvalidParams(
                f"{tx_hash} is not a transaction this proxy sent (or it was final more than a "
                "week ago): only the proxy's own pending transactions can be replaced"
            )
        signer = self._registry().get(record.address)
        self._gate.check_key(context, method, signer)
        if record.seen_mined:  # final, or mined and confirming: nothing left to replace
            where = f" in block {record.block_number}" if record.block_number is not None else ""
            what = "final" if record.final else "mined, waiting for its confirmations"
            raise InvalidParams(
                f"{tx_hash} is {what} ({record.state.value}{where}): there is nothing to replace"
            )
        return await self._replace(record, context, trigger)

    async def _replace(self, record: Tracked, context: CallContext, trigger: str) -> Tracked:
        method = {
            "auto": "eth_sendTransaction",
            "speed_up": "signer_speedUpTransaction",
            "cancel": "signer_cancelTransaction",
        }[trigger]
        async with self.store.lock(record.chain_id, record.address):
            fresh = await self.store.find(record.current)
            if fresh is None or fresh.seen_mined or fresh.current != record.current:
                return fresh or record  # final or replaced meanwhile (another replica)
            record = fresh
            current = decode_raw(bytes.fromhex(record.raw[2:])).tx
            if trigger == "cancel":
                if current.type == BLOB:
                    raise InvalidParams(
                        "a blob transaction cannot be cancelled (a node's blob pool replaces it "
                        "only with another blob transaction): speed it up instead"
                    )
                current = cancellation(current, record.address)
            policy = self.policy
            now = self._clock()
            day = utc_day(now)
            spent = await self.store.spent(record.chain_id, record.address, day)
            made = bump(
                current, record.first_cost, await self._market(current.type), policy,
                record.bumps, spent,
            )  # fmt: skip
            if isinstance(made, Ceiling):
                reason = f"fee_bumping.{made.rule}: {made.message}"
                await self._stuck(record, reason)
                raise PolicyDenied(
                    f"fee_bumping.{made.rule}",
                    "fee_bumping",
                    f"policy rule fee_bumping.{made.rule} refused the replacement of "
                    f"{record.current}: {made.message}",
                )
            if policy.max_extra_cost_per_day is not None and not await self.store.spend(
                record.chain_id, record.address, day, made.step_cost, policy.max_extra_cost_per_day
            ):
                raise PolicyDenied(
                    "fee_bumping.max_extra_cost_per_day",
                    "fee_bumping",
                    "policy rule fee_bumping.max_extra_cost_per_day refused the replacement of "
                    f"{record.current}: the day's extra fees are used up",
                )
            return await self._sign_and_send(record, made, context, method, trigger, now)

    async def _sign_and_send(
        self,
        record: Tracked,
        made: Bump,
        context: CallContext,
        method: str,
        trigger: str,
        now: float,
    ) -> Tracked:
        signer = self._registry().get(record.address)
        async with self._gate.transaction(
            context, method, signer, made.tx, replaces=record.current
        ) as decision:
            decision.entry["replacement"] = trigger
            signed = await sign_transaction(made.tx, signer)
            decision.signed_transaction(signed.hash, signed.nonce)
            new_hash, raw = to_data(signed.hash), to_data(signed.raw)
            try:
                await self._upstream.call("eth_sendRawTransaction", [raw])
            except NodeRejected as exc:
                if classify_send_error(exc.message) is not SendOutcome.ALREADY_KNOWN:
                    raise
            except Exception as exc:
                # It may have arrived (a timeout, a connection lost mid-request, a gateway's
                # 502: the send path's own table says which): tracked as sent, so a mined
                # replacement reads as ours and a later round rebroadcasts its bytes if the
                # node lacks it (only one transaction of the nonce can be mined).
                if delivery_of(exc) is Delivery.MAYBE_DELIVERED:
                    await self.store.save(
                        state.bumped(record, new_hash, raw, made.extra_cost, now, None)
                    )
                    await self._keep(record, signed.raw)
                raise
        await self._keep(record, signed.raw)
        block = parse_quantity(await self._upstream.call("eth_blockNumber", []), "block number")
        replaced = state.bumped(record, new_hash, raw, made.extra_cost, now, block)
        await self.store.save(replaced)
        if self._metrics is not None:
            self._metrics.tracked_bumps.labels(trigger, self.chain).inc()
        log.warning(
            "%s tx=%s -> tx=%s nonce=%d from=%s bump %d, worst-case extra fees %d wei",
            "cancelled" if trigger == "cancel" else "bumped",
            record.current,
            new_hash,
            record.nonce,
            record.address,
            replaced.bumps,
            made.extra_cost,
            extra={"tx_hash": new_hash, "from": record.address, "nonce": record.nonce},
        )
        return replaced

    async def _keep(self, record: Tracked, raw: bytes) -> None:
        """The nonce manager keeps the replacement's bytes for a node that forgets its pool,
        not the original's (a cancelled payment would be resent). A store failure is logged:
        the replacement is sent, and the tracker rebroadcasts its own record's bytes."""
        if self.nonces is None:
            return
        try:
            await self.nonces.replaced(record.address, record.nonce, raw)
        except SignerProxyError as exc:
            log.warning(
                "nonce %d of %s: the nonce store still keeps the replaced transaction (%s)",
                record.nonce, record.address, exc.message,
            )  # fmt: skip


def status_denial(gate: SigningGate, context: CallContext, record: Tracked) -> PolicyDenied | None:
    """Why `context`'s client may not see `record` (its scope lacks the key), or None."""
    return key_denial(gate.client_scope(context.client), record.address)


def _receipt_calls(records: list[Tracked]) -> list[tuple[str, list[str]]]:
    return [(RECEIPT, [tx_hash]) for r in records for tx_hash in reversed(r.hashes)]


def _where(record: Tracked) -> tuple[State, str | None, int | None]:
    return record.state, (record.mined_hash or "").lower() or None, record.block_number


def _found(
    record: Tracked, where: dict[str, tuple[int, int | None]]
) -> tuple[str, int, int | None] | None:
    """(hash, block, status) of the record's hash that `where` has (the newest first: usually
    the one), or None."""
    for tx_hash in reversed(record.hashes):
        spot = where.get(tx_hash.lower())
        if spot is not None:
            return (tx_hash, *spot)
    return None


def _receipts(
    calls: list[tuple[str, list[str]]], answers: list[object]
) -> dict[str, tuple[int, int | None]]:
    """Lower-case hash -> (block, status) for each receipt the node served (null: none)."""
    found: dict[str, tuple[int, int | None]] = {}
    for (_, (tx_hash,)), answer in zip(calls, answers, strict=True):
        if answer is None:
            continue
        if not isinstance(answer, dict):
            raise UpstreamBadResponse(
                f"the node answered eth_getTransactionReceipt for {tx_hash} with something "
                "that is not a receipt; check --upstream"
            )
        found[tx_hash.lower()] = (
            parse_quantity(answer.get("blockNumber"), "receipt blockNumber"),
            parse_quantity(answer.get("status", "0x1"), "receipt status"),
        )
    return found


def _body_hashes(answer: object, number: int) -> frozenset[str] | None:
    """The lower-case transaction hashes of an eth_getBlockByNumber answer (null: the node
    does not have that block yet)."""
    if answer is None:
        return None
    transactions = answer.get("transactions") if isinstance(answer, dict) else None
    said = answer.get("number") if isinstance(answer, dict) else None
    if not isinstance(transactions, list) or (
        said is not None and parse_quantity(said, "block number") != number
    ):
        raise UpstreamBadResponse(
            f"the node answered eth_getBlockByNumber for block {number} with something that "
            "is not that block; check --upstream"
        )
    hashes = set()
    for item in transactions:
        tx_hash = item.get("hash") if isinstance(item, dict) else item
        if not isinstance(tx_hash, str):
            raise UpstreamBadResponse(
                f"block {number} from the node lists a transaction without a hash; check --upstream"
            )
        hashes.add(tx_hash.lower())
    return frozenset(hashes)
