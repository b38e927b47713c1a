"""One tracked nonce and what happens to it: a pure state machine, table-tested.

A record is per (chain, address, nonce): every transaction the proxy sent for that nonce (the
first, then each replacement), the raw bytes of the current one, and its state:

    pending ──(current hash known to the node, waits)──▶ pending
    pending ──(node forgot it)──▶ rebroadcast same bytes ──▶ pending (accepted)
                                                       ──▶ dropped (refused)
    dropped ──(due, the bytes still refused)──▶ bump, or stuck as below
    pending ──(due: N blocks / S seconds)──▶ replaced by a bump ──▶ pending (new current hash)
    pending ──(due, bumping off or a ceiling reached)──▶ stuck (still watched; may be mined)
    stuck   ──(node forgot it)──▶ rebroadcast same bytes (stays stuck)
    pending | stuck ──(nonce mined by one of our hashes)──▶ mined      (final)
    pending | stuck ──(nonce mined by a transaction not ours)──▶ superseded (final)

With --tracking-confirmations N > 0 a mined or superseded record is final only once N blocks
are on top of the block it was seen in; until then it is watched, with its raw bytes:

    mined | superseded ──(N blocks on top, and the receipts still say so)──▶ final
    mined | superseded ──(N blocks on top, but a reorg moved it: another block, another of
                          our hashes, or another's transaction for the nonce)──▶ mined |
                          superseded where it is now, N blocks counted from there
    mined | superseded ──(the node's mined count fell back under the nonce, its head at or
                          past the block it was seen in: a reorg took the transaction
                          out)──▶ pending, and from there as any pending record
                          (the node still pools it: wait; it forgot it: rebroadcast)

Asked about one hash of a mined record, the answer is "mined" for the hash that was mined and
"replaced" for the others. "dropped" is what a pending record reads as between the round that
found the node without it and the rebroadcast that put it back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any

import orjson

from signer_proxy.eth.fee_bump import BumpPolicy


class State(StrEnum):
    PENDING = "pending"
    DROPPED = "dropped"
    STUCK = "stuck"
    MINED = "mined"
    REPLACED = "replaced"
    SUPERSEDED = "superseded"


# A record in one of these states saw its nonce mined; it is final once `confirmed`.
FINAL = frozenset({State.MINED, State.SUPERSEDED})


@dataclass(frozen=True, slots=True)
class Tracked:
    """Everything known about one nonce of one address; immutable (each step makes a new one)."""

    chain_id: int
    address: str  # checksummed
    nonce: int
    hashes: tuple[str, ...]  # every hash sent for this nonce, oldest first; the last is current
    raw: str  # 0x-hex of the current transaction, as sent (sidecar included)
    client: str  # whose send it was: replacements are signed for this client
    kind: str = "send"  # send | filler | cancel
    state: State = State.PENDING
    sent_at: float = 0.0  # when the current hash was sent (unix seconds)
    sent_block: int | None = None  # the first block number seen after it was sent
    first_sent_at: float = 0.0
    first_cost: int = 0  # the first transaction's worst-case fees (fee_bump.worst_cost)
    bumps: int = 0
    extra_cost: int = 0  # worst-case extra fees of the current hash over the first (wei)
    rebroadcasts: int = 0
    stuck_reason: str = ""
    mined_hash: str | None = None
    block_number: int | None = None
    status: int | None = None  # the receipt's status (1 success, 0 reverted), once asked
    # False while a mined or superseded record waits for --tracking-confirmations blocks on
    # top of its block (records stored before the setting existed read as confirmed).
    confirmed: bool = True

    @property
    def current(self) -> str:
        return self.hashes[-1]

    @property
    def final(self) -> bool:
        return self.state in FINAL and self.confirmed

    @property
    def seen_mined(self) -> bool:
        """Its nonce is mined (by one of ours or another's), final or still confirming."""
        return self.state in FINAL

    def kept(self) -> Tracked:
        """The record as a store keeps it once final: without its raw bytes (nothing sends
        them again; the chain has the transaction), since final records are kept for days."""
        return replace(self, raw="") if self.raw else self

    def to_json(self, raw: bool = True) -> str:
        """The record as JSON; without the raw bytes when not `raw` (as kept())."""
        # Field by field with orjson: dataclasses.asdict and the stdlib's json cost ~24 µs a
        # record, paid per send with tracking on (~2 µs now). Fees in wei may pass 64 bits,
        # which orjson refuses to write and reads back as floats: such a record goes through
        # the stdlib's json both ways.
        data = {name: getattr(self, name) for name in _FIELDS}
        data["state"] = self.state.value
        if not raw:
            data["raw"] = ""
        try:
            return orjson.dumps(data).decode()
        except TypeError:
            return _encode(data)

    @staticmethod
    def from_json(text: str | bytes) -> Tracked:
        data = orjson.loads(text)
        if type(data["first_cost"]) is float or type(data["extra_cost"]) is float:
            data = json.loads(text)  # a fee past 64 bits: orjson read it as a float
        data["hashes"] = tuple(data["hashes"])
        data["state"] = State(data["state"])
        return Tracked(**data)

    def status_for(self, tx_hash: str) -> dict[str, Any]:
        """signer_getTransactionStatus's answer for `tx_hash`, one of this record's hashes."""
        state = self.state
        if state is State.MINED and tx_hash.lower() != (self.mined_hash or "").lower():
            state = State.REPLACED
        answer: dict[str, Any] = {
            "state": state.value,
            "hash": tx_hash,
            "currentHash": self.mined_hash or self.current,
            "hashes": list(self.hashes),
            "from": self.address,
            "nonce": hex(self.nonce),
            "chainId": hex(self.chain_id),
            "bumps": self.bumps,
            "rebroadcasts": self.rebroadcasts,
            "final": self.final,
        }
        if self.state is State.MINED:
            answer["blockNumber"] = hex(self.block_number or 0)
            if self.status is not None:  # Tracker.with_status asks the node for it
                answer["status"] = hex(self.status)
        if self.state is State.STUCK:
            answer["reason"] = self.stuck_reason
        return answer


_FIELDS = tuple(f.name for f in fields(Tracked))


def replace(record: Tracked, **changes: Any) -> Tracked:
    """dataclasses.replace for a record, without its introspection per call (4.4 → 2.9 µs
    here; a watch round makes one or two per transaction)."""
    new = object.__new__(Tracked)
    for name in _FIELDS:
        value = changes.pop(name) if name in changes else getattr(record, name)
        object.__setattr__(new, name, value)  # frozen: as the generated __init__ sets it
    if changes:
        raise TypeError(f"Tracked has no field {sorted(changes)}")
    return new


_encode = json.JSONEncoder(separators=(",", ":")).encode


@dataclass(frozen=True, slots=True)
class Observation:
    """What one watch round learnt from the node about one record."""

    now: float
    block: int  # the latest block number
    mined_count: int  # the address's transaction count at the latest block
    known: bool  # the node knows one of the record's hashes (pool or chain)
    # (hash, block number, receipt status) of ours, if mined; the status is None when the hash
    # was found in a block body (the receipt is asked when a client wants it)
    receipt: tuple[str, int, int | None] | None = None
    # A confirming record due to be final (`due_final`): the receipts of all its hashes were
    # asked this round, and `receipt` is what they said (None: none of ours is on the chain).
    checked: bool = False


class Action(StrEnum):
    WAIT = "wait"
    FINALIZE = "finalize"
    REBROADCAST = "rebroadcast"
    BUMP = "bump"
    STUCK = "stuck"


@dataclass(frozen=True, slots=True)
class Step:
    """The action a round takes for a record, and the record as it is after the observation."""

    action: Action
    record: Tracked
    reason: str = ""


def _due(record: Tracked, seen: Observation, policy: BumpPolicy) -> bool:
    blocks = 0 if record.sent_block is None else seen.block - record.sent_block
    return blocks >= policy.after_blocks or seen.now - record.sent_at >= policy.after_seconds


def decide(record: Tracked, seen: Observation, policy: BumpPolicy, confirmations: int = 0) -> Step:
    """What to do about `record` given what the node says now. `confirmations`: the blocks on
    top of its block before a mined or superseded record is final (0: at once)."""
    if record.final:
        return Step(Action.WAIT, record)
    if record.seen_mined:  # confirming
        if seen.mined_count > record.nonce:
            if not due_final(record, seen.block, confirmations) or not seen.checked:
                return Step(Action.WAIT, record)  # (the round that checks it finalizes it)
            return _final_check(record, seen, confirmations)
        if record.block_number is not None and seen.block < record.block_number:
            # The node's head is behind the block it was seen mined in: a node that lags
            # (a load balancer's stale replica), not a reorg. The next rounds tell.
            return Step(Action.WAIT, record)
        # A reorg took the nonce's transaction out of the chain: pending again. Its fees got
        # it mined once, so a bump is due a whole policy's wait from now, not at once.
        record = replace(
            record,
            state=State.PENDING,
            mined_hash=None,
            block_number=None,
            status=None,
            sent_at=seen.now,
            sent_block=seen.block,
        )
    first_block = seen.block if record.sent_block is None else record.sent_block
    if seen.mined_count > record.nonce:  # one new record each (a round finds thousands)
        if seen.receipt is not None:
            mined_hash, block, status = seen.receipt
            # (a receipt can name a block past the head the round read)
            deep = confirmations == 0 or seen.block - block >= confirmations
            found = {"mined_hash": mined_hash, "status": status, "sent_block": first_block}
            return _seen_mined(record, State.MINED, block, deep, found)
        if not seen.known:
            # Mined by another at some block up to this one: counted from this one.
            at = seen.block if confirmations else None
            found = {"sent_block": first_block}
            return _seen_mined(record, State.SUPERSEDED, at, confirmations == 0, found)
    if record.sent_block is None:
        record = replace(record, sent_block=first_block)
    if seen.mined_count > record.nonce:  # one of ours is on chain, its receipt not served yet
        return Step(Action.WAIT, record)
    if not seen.known:
        # The node forgot it (restart, eviction, a provider dropped it): send the same bytes
        # again. If the last try was refused too (a node evicts and refuses a transaction
        # whose fee cap fell under the base fee), it is due for a bump like a pooled one.
        if record.state is State.DROPPED and _due(record, seen, policy):
            return _bump_or_stuck(record, policy)
        return Step(Action.REBROADCAST, record)
    if record.state is State.DROPPED:
        record = replace(record, state=State.PENDING)
    if record.state is State.STUCK or not _due(record, seen, policy):
        return Step(Action.WAIT, record)
    return _bump_or_stuck(record, policy)


def due_final(record: Tracked, head: int, confirmations: int) -> bool:
    """A confirming record with `confirmations` blocks on top of the block it was seen in, by
    its record: the round checks its receipts before it is final."""
    return (
        record.seen_mined
        and not record.confirmed
        and head - (record.block_number or 0) >= confirmations
    )


def _final_check(record: Tracked, seen: Observation, confirmations: int) -> Step:
    """A confirming record at its depth, against the receipts of its hashes: final where it
    was seen, or moved by a reorg that kept its nonce mined (another block, another of our
    hashes, or no hash of ours: another's transaction), counted again from there."""
    if seen.receipt is None:
        if record.state is State.SUPERSEDED:
            return Step(Action.FINALIZE, replace(record, confirmed=True))
        # Ours was seen mined; now none of our hashes is, and the nonce is used by another's.
        moved = replace(
            record, state=State.SUPERSEDED, mined_hash=None, block_number=seen.block, status=None
        )
        return Step(Action.WAIT, moved)
    mined_hash, block, status = seen.receipt
    same_hash = mined_hash.lower() == (record.mined_hash or "").lower()
    if record.state is State.MINED and same_hash and block == record.block_number:
        confirmed = replace(
            record, confirmed=True, status=status if status is not None else record.status
        )
        return Step(Action.FINALIZE, confirmed)
    moved = replace(
        record, state=State.MINED, mined_hash=mined_hash, block_number=block, status=status
    )
    if seen.block - block >= confirmations:
        return Step(Action.FINALIZE, replace(moved, confirmed=True))
    return Step(Action.WAIT, moved)


def _seen_mined(
    record: Tracked, mined: State, block: int | None, deep: bool, found: dict[str, Any]
) -> Step:
    """Its nonce mined (`mined`: by ours or another's) in `block`: final if `deep` enough,
    else confirming."""
    done = replace(record, state=mined, block_number=block, confirmed=deep, **found)
    return Step(Action.FINALIZE if deep else Action.WAIT, done)


def _bump_or_stuck(record: Tracked, policy: BumpPolicy) -> Step:
    if not policy.enabled:
        return Step(Action.STUCK, record, "fee bumping is off in the policy (fee_bumping.enabled)")
    return Step(Action.BUMP, record)


def rebroadcast(record: Tracked, accepted: bool) -> Tracked:
    """The record after its bytes were sent again: `accepted` by the node, or refused (then
    it reads "dropped", unless already stuck)."""
    if not accepted:
        return record if record.state is State.STUCK else replace(record, state=State.DROPPED)
    return replace(
        record,
        state=State.STUCK if record.state is State.STUCK else State.PENDING,
        rebroadcasts=record.rebroadcasts + 1,
    )


def bumped(
    record: Tracked, tx_hash: str, raw: str, extra_cost: int, now: float, block: int | None
) -> Tracked:
    """The record after a replacement `tx_hash` was accepted by the node."""
    return replace(
        record,
        hashes=(*record.hashes, tx_hash),
        raw=raw,
        state=State.PENDING,
        sent_at=now,
        sent_block=block,
        bumps=record.bumps + 1,
        extra_cost=extra_cost,
        stuck_reason="",
    )


def stuck(record: Tracked, reason: str) -> Tracked:
    return replace(record, state=State.STUCK, stuck_reason=reason)


def new_record(
    chain_id: int,
    address: str,
    nonce: int,
    tx_hash: str,
    raw: str,
    client: str,
    now: float,
    kind: str = "send",
    first_cost: int = 0,
) -> Tracked:
    return Tracked(
        chain_id=chain_id,
        address=address,
        nonce=nonce,
        hashes=(tx_hash,),
        raw=raw,
        client=client,
        kind=kind,
        sent_at=now,
        first_sent_at=now,
        first_cost=first_cost,
    )
