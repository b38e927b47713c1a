"""The tracker's pure parts, table-tested: fee bumps, decoding what was sent, the state
machine, the fee_bumping policy section; and both stores (memory, real redis-server)."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import replace
from typing import Any

import pytest

from signer_proxy.access.policy import parse_policy
from signer_proxy.errors import ConfigError, InvalidParams, NodeRejected
from signer_proxy.eth.blobs import BlobSidecar, SidecarForm
from signer_proxy.eth.ecdsa import Signature
from signer_proxy.eth.fee_bump import (
    Bump,
    BumpPolicy,
    Ceiling,
    Market,
    bump,
    cancellation,
    raised,
    worst_cost,
)
from signer_proxy.eth.tx_decoding import decode_raw
from signer_proxy.eth.tx_encoding import UnsignedTx, sign_with
from signer_proxy.tracking import state
from signer_proxy.tracking.state import Action, Observation, State
from signer_proxy.tracking.store import MemoryTrackStore, RedisTrackStore
from signer_proxy.tracking.tracker import BODIES_RETRY_SECONDS

GWEI = 10**9
ME = "0x" + "11" * 20
SIG = Signature(r=123456789, s=987654321, y_parity=1)
TYPE2 = UnsignedTx(
    type=2, chain_id=1, nonce=7, gas=50_000, to="0x" + "22" * 20, value=5, data=b"\x01\x02",
    max_fee_per_gas=20 * GWEI, max_priority_fee_per_gas=GWEI,
)  # fmt: skip
LEGACY = UnsignedTx(
    type=0, chain_id=1, nonce=3, gas=21_000, to=ME, value=1, data=b"", gas_price=10 * GWEI
)
BLOB = replace(
    TYPE2, type=3, max_fee_per_blob_gas=GWEI, blob_versioned_hashes=(b"\x01" + b"\x00" * 31,)
)
TYPE1 = replace(
    TYPE2, type=1, gas_price=3, max_fee_per_gas=0, max_priority_fee_per_gas=0,
    access_list=((ME, (b"\x00" * 32,)),),
)  # fmt: skip
MARKET = Market(base_fee=5 * GWEI, tip=GWEI, gas_price=9 * GWEI, blob_base_fee=GWEI // 4)
ON = BumpPolicy(enabled=True)


@pytest.mark.parametrize(
    ("value", "percent", "expected"),
    [
        pytest.param(100, 10, 110, id="ten-percent"),
        pytest.param(101, 10, 112, id="rounded-up"),
        pytest.param(0, 10, 1, id="zero-still-rises"),
        pytest.param(5, 10, 6, id="small-rises-by-one"),
        pytest.param(GWEI, 100, 2 * GWEI, id="blob-doubles"),
    ],
)
def test_raised_is_the_least_value_a_node_takes_as_a_bump(
    value: int, percent: int, expected: int
) -> None:
    assert raised(value, percent) == expected


def test_bump_raises_fee_cap_and_tip_by_at_least_the_node_rule_and_follows_the_market() -> None:
    made = bump(TYPE2, worst_cost(TYPE2), MARKET, ON, 0, 0)
    assert isinstance(made, Bump)
    assert made.tx.max_fee_per_gas == 22 * GWEI  # 20 gwei + 10 % beats 2 x 5 + 1.1 gwei
    assert made.tx.max_priority_fee_per_gas == raised(GWEI, 10)
    assert made.tx.nonce == TYPE2.nonce and made.tx.data == TYPE2.data
    assert made.extra_cost == made.step_cost == 50_000 * 2 * GWEI
    rising = bump(TYPE2, worst_cost(TYPE2), replace(MARKET, base_fee=30 * GWEI), ON, 0, 0)
    assert isinstance(rising, Bump)
    assert rising.tx.max_fee_per_gas == 60 * GWEI + raised(GWEI, 10)  # 2 x base + tip


@pytest.mark.parametrize(
    ("policy", "bumps", "spent", "rule"),
    [
        pytest.param(BumpPolicy(max_bumps=2), 2, 0, "max_bumps", id="max-bumps"),
        pytest.param(
            BumpPolicy(max_fee_per_gas=21 * GWEI), 0, 0, "max_fee_per_gas", id="fee-ceiling"
        ),
        pytest.param(
            BumpPolicy(max_extra_cost_per_tx=50_000 * GWEI),
            0,
            0,
            "max_extra_cost_per_tx",
            id="extra-per-tx",
        ),
        pytest.param(
            BumpPolicy(max_extra_cost_per_day=10**17),
            0,
            10**17,
            "max_extra_cost_per_day",
            id="extra-per-day",
        ),
    ],
)
def test_bump_stops_at_each_ceiling(policy: BumpPolicy, bumps: int, spent: int, rule: str) -> None:
    made = bump(TYPE2, worst_cost(TYPE2), MARKET, policy, bumps, spent)
    assert isinstance(made, Ceiling) and made.rule == rule, made


def test_a_ceiling_above_the_node_rule_caps_the_market_target() -> None:
    policy = BumpPolicy(max_fee_per_gas=25 * GWEI)
    made = bump(TYPE2, worst_cost(TYPE2), replace(MARKET, base_fee=30 * GWEI), policy, 0, 0)
    assert isinstance(made, Bump) and made.tx.max_fee_per_gas == 25 * GWEI


def test_legacy_and_blob_bumps_follow_their_own_fields() -> None:
    legacy = bump(LEGACY, worst_cost(LEGACY), MARKET, ON, 0, 0)
    assert isinstance(legacy, Bump) and legacy.tx.gas_price == 11 * GWEI
    blob = bump(BLOB, worst_cost(BLOB), MARKET, ON, 0, 0)
    assert isinstance(blob, Bump)
    assert blob.tx.max_fee_per_blob_gas == 2 * GWEI  # geth's blob pool: +100 %
    assert blob.tx.max_fee_per_gas == 40 * GWEI  # and every other fee by 100 % too
    capped = bump(BLOB, worst_cost(BLOB), MARKET, BumpPolicy(max_fee_per_blob_gas=GWEI), 0, 0)
    assert isinstance(capped, Ceiling) and capped.rule == "max_fee_per_blob_gas"


def test_cancellation_is_a_zero_value_transfer_to_the_sender() -> None:
    cancel = cancellation(replace(TYPE2, type=4), ME)
    assert (cancel.type, cancel.to, cancel.value, cancel.data, cancel.gas) == (
        2, ME, 0, b"", 21_000,
    )  # fmt: skip
    assert cancel.nonce == TYPE2.nonce and cancel.max_fee_per_gas == TYPE2.max_fee_per_gas


@pytest.mark.parametrize(
    "tx",
    [
        pytest.param(TYPE2, id="type-2"),
        pytest.param(LEGACY, id="legacy-155"),
        pytest.param(replace(LEGACY, chain_id=0), id="legacy-pre-155"),
        pytest.param(
            replace(TYPE2, type=1, gas_price=3, max_fee_per_gas=0, max_priority_fee_per_gas=0),
            id="type-1",
        ),
        pytest.param(BLOB, id="type-3-canonical"),
        pytest.param(
            replace(BLOB, sidecar=BlobSidecar(SidecarForm.EIP7594, (b"b",), (b"c",), (b"p",))),
            id="type-3-eip7594",
        ),
        pytest.param(
            replace(BLOB, sidecar=BlobSidecar(SidecarForm.EIP4844, (b"b",), (b"c",), (b"p",))),
            id="type-3-eip4844",
        ),
    ],
)
def test_decode_raw_gives_back_what_was_signed(tx: UnsignedTx) -> None:
    signed = sign_with(tx, SIG)
    decoded = decode_raw(signed.raw)
    assert decoded.tx == tx and decoded.hash == signed.hash


def test_decode_raw_refuses_what_is_not_a_transaction() -> None:
    for raw in (b"", b"\x07\xc0", b"\x02\x01"):
        with pytest.raises(InvalidParams, match="not a signed transaction"):
            decode_raw(raw)


RECORD = state.new_record(1, ME, 7, "0xaa", "0x02", "ci", now=1000.0)
SEEN = RECORD  # alias for readability below
POLICY = BumpPolicy(enabled=True, after_blocks=3, after_seconds=60)


def seen(**kw: Any) -> Observation:
    values: dict[str, Any] = {"now": 1001.0, "block": 10, "mined_count": 7, "known": True}
    return Observation(**{**values, **kw})


@pytest.mark.parametrize(
    ("record", "observation", "policy", "action", "after"),
    [
        pytest.param(RECORD, seen(), POLICY, Action.WAIT, State.PENDING, id="fresh-waits"),
        pytest.param(RECORD, seen(mined_count=8, receipt=("0xaa", 11, 1)), POLICY,
                     Action.FINALIZE, State.MINED, id="mined"),
        pytest.param(RECORD, seen(mined_count=8, known=False), POLICY,
                     Action.FINALIZE, State.SUPERSEDED, id="someone-else-took-the-nonce"),
        pytest.param(RECORD, seen(mined_count=8, known=True), POLICY,
                     Action.WAIT, State.PENDING, id="mined-receipt-not-served-yet"),
        pytest.param(RECORD, seen(known=False), POLICY, Action.REBROADCAST, State.PENDING,
                     id="forgotten-rebroadcast"),
        pytest.param(replace(RECORD, sent_block=5), seen(), POLICY, Action.BUMP, State.PENDING,
                     id="due-by-blocks-bumps"),
        pytest.param(RECORD, seen(now=1061.0), POLICY, Action.BUMP, State.PENDING,
                     id="due-by-seconds-bumps"),
        pytest.param(replace(RECORD, sent_block=5), seen(), BumpPolicy(), Action.STUCK,
                     State.PENDING, id="due-without-policy-stuck"),
        pytest.param(replace(RECORD, sent_block=5, state=State.DROPPED), seen(known=False),
                     POLICY, Action.BUMP, State.DROPPED, id="refused-and-due-bumps"),
        pytest.param(replace(RECORD, sent_block=5, state=State.STUCK), seen(), POLICY,
                     Action.WAIT, State.STUCK, id="stuck-stays-stuck"),
        pytest.param(replace(RECORD, state=State.DROPPED), seen(), POLICY,
                     Action.WAIT, State.PENDING, id="back-in-the-pool"),
    ],
)  # fmt: skip
def test_decide(
    record: state.Tracked,
    observation: Observation,
    policy: BumpPolicy,
    action: Action,
    after: State,
) -> None:
    step = state.decide(record, observation, policy)
    assert (step.action, step.record.state) == (action, after)


MINED_AT_9 = replace(
    RECORD, state=State.MINED, mined_hash="0xaa", block_number=9, sent_block=8, confirmed=False
)


def checked(block: int, receipt: tuple[str, int, int | None] | None = None) -> Observation:
    """A round at head `block` that asked the receipts of a record at its depth."""
    return seen(mined_count=8, block=block, receipt=receipt, checked=True)


@pytest.mark.parametrize(
    ("record", "observation", "action", "after", "final"),
    [
        pytest.param(RECORD, seen(mined_count=8, receipt=("0xaa", 9, 1)),
                     Action.WAIT, State.MINED, False, id="mined-one-block-deep-confirms"),
        pytest.param(RECORD, seen(mined_count=8, receipt=("0xaa", 8, 1)),
                     Action.FINALIZE, State.MINED, True, id="mined-two-blocks-deep-final"),
        pytest.param(RECORD, seen(mined_count=8, known=False),
                     Action.WAIT, State.SUPERSEDED, False, id="superseded-counts-from-now"),
        pytest.param(MINED_AT_9, seen(mined_count=8),
                     Action.WAIT, State.MINED, False, id="confirming-waits"),
        pytest.param(MINED_AT_9, seen(mined_count=8, block=11),
                     Action.WAIT, State.MINED, False, id="deep-enough-waits-for-its-check"),
        pytest.param(MINED_AT_9, checked(11, ("0xAA", 9, 1)),
                     Action.FINALIZE, State.MINED, True, id="deep-enough-and-still-there-final"),
        pytest.param(MINED_AT_9, checked(11, ("0xaa", 10, 1)),
                     Action.WAIT, State.MINED, False, id="moved-to-a-later-block-counts-again"),
        pytest.param(MINED_AT_9, checked(12, ("0xaa", 10, 1)),
                     Action.FINALIZE, State.MINED, True, id="moved-and-deep-enough-final"),
        pytest.param(MINED_AT_9, checked(11, ("0xbb", 9, 0)),
                     Action.FINALIZE, State.MINED, True, id="another-of-ours-in-its-place-final"),
        pytest.param(MINED_AT_9, checked(11),
                     Action.WAIT, State.SUPERSEDED, False, id="none-of-ours-now-superseded"),
        pytest.param(replace(MINED_AT_9, state=State.SUPERSEDED, mined_hash=None),
                     checked(11),
                     Action.FINALIZE, State.SUPERSEDED, True, id="superseded-still-final"),
        pytest.param(replace(MINED_AT_9, state=State.SUPERSEDED, mined_hash=None),
                     checked(11, ("0xaa", 9, 1)),
                     Action.FINALIZE, State.MINED, True, id="superseded-turns-out-ours"),
        pytest.param(MINED_AT_9, seen(mined_count=7, block=8, known=False),
                     Action.WAIT, State.MINED, False, id="a-lagging-node-is-not-a-reorg"),
        pytest.param(MINED_AT_9, seen(mined_count=7, block=9, known=False),
                     Action.REBROADCAST, State.PENDING, False, id="reorged-out-at-its-height"),
        pytest.param(MINED_AT_9, seen(mined_count=7, block=11),
                     Action.WAIT, State.PENDING, False, id="reorged-out-pooled-not-due"),
        pytest.param(MINED_AT_9, seen(mined_count=7, block=11, known=False),
                     Action.REBROADCAST, State.PENDING, False, id="reorged-out-and-forgotten"),
        pytest.param(replace(MINED_AT_9, state=State.SUPERSEDED, mined_hash=None),
                     seen(mined_count=7, known=False),
                     Action.REBROADCAST, State.PENDING, False, id="superseder-reorged-out"),
        pytest.param(replace(MINED_AT_9, confirmed=True), seen(mined_count=7, known=False),
                     Action.WAIT, State.MINED, True, id="final-is-final"),
    ],
)  # fmt: skip
def test_decide_with_confirmations(
    record: state.Tracked, observation: Observation, action: Action, after: State, final: bool
) -> None:
    """--tracking-confirmations 2: final once two blocks are on top of the block it is in, by
    the receipts the round checks then; until then a mined count that falls back under the
    nonce (a reorg; not a node whose head is behind that block) makes the record pending."""
    step = state.decide(record, observation, POLICY, confirmations=2)
    assert (step.action, step.record.state, step.record.final) == (action, after, final)
    receipt = observation.receipt
    if observation.checked and receipt is not None:  # where the receipt says it is now
        assert ((step.record.mined_hash or "").lower(), step.record.block_number) == (
            receipt[0].lower(),
            receipt[1],
        )
        assert step.record.status == receipt[2]
    elif observation.checked and after is State.SUPERSEDED and not final:
        assert (step.record.mined_hash, step.record.block_number) == (None, observation.block)
    if after is State.PENDING:  # what the reorg took away is forgotten; the bump clock restarts
        assert (step.record.mined_hash, step.record.block_number) == (None, None)
        assert (step.record.sent_block, step.record.sent_at) == (observation.block, observation.now)


def test_a_record_stored_before_confirmations_existed_reads_as_final() -> None:
    mined = replace(RECORD, state=State.MINED, mined_hash="0xaa", block_number=9)
    data = json.loads(mined.to_json())
    del data["confirmed"]
    assert state.Tracked.from_json(json.dumps(data)).final


def test_a_record_changed_is_a_new_record_as_dataclasses_makes_it() -> None:
    changed = state.replace(RECORD, state=State.STUCK, stuck_reason="why", sent_block=9)
    assert changed == replace(RECORD, state=State.STUCK, stuck_reason="why", sent_block=9)
    assert changed is not RECORD and RECORD.state is State.PENDING
    with pytest.raises(TypeError, match="no field"):
        state.replace(RECORD, stuck="x")
    with pytest.raises(AttributeError):
        changed.bumps = 3  # type: ignore[misc]  # still frozen


def test_status_for_each_hash_of_a_mined_record() -> None:
    record = state.bumped(RECORD, "0xbb", "0x02ff", 100, 1010.0, 12)
    mined = replace(record, state=State.MINED, mined_hash="0xbb", block_number=13, status=1)
    assert mined.status_for("0xaa")["state"] == "replaced"
    answer = mined.status_for("0xbb")
    assert answer["state"] == "mined" and answer["hashes"] == ["0xaa", "0xbb"]
    assert (answer["blockNumber"], answer["status"], answer["bumps"]) == ("0xd", "0x1", 1)
    assert answer["final"] is True
    assert replace(mined, confirmed=False).status_for("0xbb")["final"] is False
    assert state.Tracked.from_json(mined.to_json()) == mined
    # found in a block body: the status is the receipt's, asked only when a client wants it
    assert "status" not in replace(mined, status=None).status_for("0xbb")


@pytest.mark.parametrize(
    "first_cost, extra_cost",
    [
        (0, 0),
        (21_000 * 10**9, 0),
        (2**63 - 1, 2**63 - 1),  # the largest orjson writes
        (2**64, 0),  # past 64 bits: orjson refuses to write it
        (10**30, 5 * 10**29),  # and would read it back as a float
        (1, 2**200),
    ],
)
def test_a_record_reads_back_as_written_whatever_its_fees(first_cost: int, extra_cost: int) -> None:
    record = replace(RECORD, first_cost=first_cost, extra_cost=extra_cost, stuck_reason='é "x"')
    text = record.to_json()
    assert state.Tracked.from_json(text) == record
    assert state.Tracked.from_json(text.encode()) == record  # as Redis answers
    assert json.loads(text)["first_cost"] == first_cost


def test_fee_bumping_policy_section_parses_and_refuses_mistakes() -> None:
    policy = parse_policy(
        {"fee_bumping": {"enabled": True, "after_blocks": 2, "max_fee_per_gas": "50 gwei",
                         "max_extra_cost_per_day": "0.1 ether", "after_seconds": 30}}
    )  # fmt: skip
    assert policy.fee_bumping == BumpPolicy(
        enabled=True, after_blocks=2, after_seconds=30.0, max_fee_per_gas=50 * GWEI,
        max_extra_cost_per_day=10**17,
    )  # fmt: skip
    assert parse_policy({}).fee_bumping == BumpPolicy()
    assert policy.bind(lambda ref: ref).fee_bumping == policy.fee_bumping
    for wrong, message in (
        ({"max_bumps": 0}, "at least 1"),
        ({"enabled": "yes"}, "true or false"),
        ({"max_fee": 1}, "unknown entries max_fee"),
    ):
        with pytest.raises(ConfigError, match=message):
            parse_policy({"fee_bumping": wrong})


async def exercise_store(store: Any) -> None:
    other = state.new_record(1, ME, 8, "0xcc", "0x02", "ci", now=1000.0)
    await store.save(other)
    assert await store.before_track("0xaa", 1, ME, 7) == (None, None)
    await store.save(RECORD)
    assert await store.before_track("0xAA", 1, ME, 7) == (RECORD, RECORD)  # the same bytes
    assert await store.before_track("0xee", 1, ME, 7) == (None, RECORD)  # another, same nonce
    assert await store.before_track("0xee", 1, ME, 9) == (None, None)
    assert [r.nonce for r in await store.pending(1, ME)] == [7, 8]
    assert await store.watched() == [(1, ME.lower())]
    bumped = state.bumped(RECORD, "0xbb", "0x0203", 5, 1001.0, 3)
    await store.save(bumped)
    assert await store.find("0xAA") == bumped and await store.find("0xbb") == bumped
    done = replace(bumped, state=State.MINED, mined_hash="0xbb", block_number=4, status=1)
    await store.save(done)
    assert await store.find("0xaa") == replace(done, raw="")  # final: kept without its bytes
    kept = done.kept()
    assert kept == replace(done, raw="") and kept.kept() is kept
    assert [r.nonce for r in await store.pending(1, ME)] == [8]
    assert await store.find("0xdd") is None
    assert await store.spend(1, ME, "2026-01-01", 60, 100)
    assert not await store.spend(1, ME, "2026-01-01", 60, 100)
    assert await store.spent(1, ME, "2026-01-01") == 60
    async with store.lock(1, ME):
        pass


async def test_memory_store() -> None:
    await exercise_store(MemoryTrackStore())


async def test_records_this_process_added_read_back_without_parsing_again(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A watched address's new records are read back by the next round as the objects
    written (records are immutable); an address not watched here keeps nothing in memory."""
    from signer_proxy.nonces.redis_store import connect

    redis = connect(redis_url)
    try:
        store = RedisTrackStore(redis)
        other = "0x" + "44" * 20
        first = state.new_record(1, ME, 1, "0x" + "a1" * 32, "0x02", "ci", 1.0)
        assert await store.add_new([first]) == [True]
        assert await store.pending(1, ME) == [first]  # watched here from now on
        parses: list[str] = []
        real = state.Tracked.from_json
        monkeypatch.setattr(
            state.Tracked, "from_json", staticmethod(lambda t: parses.append(t) or real(t))
        )
        made = [state.new_record(1, ME, n, "0x" + f"{n:064x}", "0x02", "ci", 2.0) for n in (2, 3)]
        elsewhere = state.new_record(1, other, 1, "0x" + "b1" * 32, "0x02", "ci", 1.0)
        assert await store.add_new([*made, elsewhere]) == [True, True, True]
        assert await store.pending(1, ME) == [first, *made]
        assert parses == []
        assert store._key(1, other, "pending") not in store._parsed
        assert await store.pending(1, other) == [elsewhere] and len(parses) == 1
    finally:
        await redis.aclose()


async def test_redis_store_and_its_watch_lease(redis_url: str) -> None:
    from signer_proxy.nonces.redis_store import connect

    redis = connect(redis_url)
    try:
        store = RedisTrackStore(redis)
        await exercise_store(store)
        assert await store.lease(1, ME, "replica-a", 30)
        assert await store.lease(1, ME, "replica-a", 30)  # renewed
        assert not await store.lease(1, ME, "replica-b", 30)  # another holds it
        assert await store.lease(1, ME, "replica-b", 0.001) is False
        await redis.delete(store._key(1, ME, "lease"))  # what expiry does
        assert await store.lease(1, ME, "replica-b", 30)
        assert store.round_trips > 0
    finally:
        await redis.aclose()


async def test_a_send_stored_while_a_round_finds_the_address_empty_stays_watched(
    redis_url: str,
) -> None:
    """A round reads the address's pending records (none: the last one went final); a send
    on another replica stores one before the round unwatches the address. The address must
    stay watched, or no round looks at that record again (found by review: an SREM of its
    own, after the read, dropped it)."""
    from signer_proxy.nonces.redis_store import connect

    redis_a, redis_b = connect(redis_url), connect(redis_url)
    try:
        watcher, sender = RedisTrackStore(redis_a), RedisTrackStore(redis_b)
        first = state.new_record(1, ME, 0, "0x" + "a0" * 32, "0x02", "ci", 1.0)
        assert await sender.add_new([first]) == [True]
        await sender.save(replace(first, state=State.MINED, mined_hash=first.current))
        second = state.new_record(1, ME, 1, "0x" + "a1" * 32, "0x02", "ci", 2.0)
        read = redis_a.many

        async def read_then_a_send(commands: Any) -> Any:
            replies = await read(commands)
            if commands[0][0] == "HVALS":  # the round's read is answered: now the send
                assert await sender.add_new([second]) == [True]
            return replies

        redis_a.many = read_then_a_send  # type: ignore[method-assign]
        assert await watcher.pending(1, ME) == []
        redis_a.many = read  # type: ignore[method-assign]
        assert await watcher.watched() == [(1, ME.lower())]
        assert [r.nonce for r in await watcher.pending(1, ME)] == [1]
        # Nothing pending and nothing arriving: the address leaves the watched set.
        await sender.save(replace(second, state=State.MINED, mined_hash=second.current))
        assert await watcher.pending(1, ME) == [] and await watcher.watched() == []
    finally:
        await redis_a.aclose()
        await redis_b.aclose()


async def test_a_second_transaction_of_ours_for_a_tracked_nonce_joins_its_record() -> None:
    from signer_proxy.access.gate import SigningGate
    from signer_proxy.keys import KeyRegistry
    from signer_proxy.tracking.tracker import Tracker

    store = MemoryTrackStore()
    registry = KeyRegistry([])
    tracker = Tracker(store, None, None, lambda: registry, SigningGate())  # type: ignore[arg-type]
    first, filler = sign_with(TYPE2, SIG), sign_with(cancellation(TYPE2, ME), SIG)
    await tracker.track(first, 1, ME, "ci")
    await tracker.track(filler, 1, ME, "signer-proxy", "filler")
    await tracker.track(filler, 1, ME, "signer-proxy", "filler")  # the same bytes again
    record = await store.find("0x" + first.hash.hex())
    assert record is not None and record == await store.find("0x" + filler.hash.hex())
    assert record.hashes == ("0x" + first.hash.hex(), "0x" + filler.hash.hex())
    assert record.client == "ci" and [r.nonce for r in await store.pending(1, ME)] == [7]


async def test_sends_tracked_together_share_one_round_trip(redis_url: str) -> None:
    """Group commit: 20 concurrent new sends cost the Redis store 1 round trip, not 40, and
    each track() returns only once its record is stored; what the store already knows (the
    same bytes again, another transaction of ours for a tracked nonce) goes the long way."""
    from signer_proxy.access.gate import SigningGate
    from signer_proxy.keys import KeyRegistry
    from signer_proxy.nonces.redis_store import connect
    from signer_proxy.tracking.tracker import Tracker

    redis = connect(redis_url)
    try:
        store = RedisTrackStore(redis)
        registry = KeyRegistry([])
        tracker = Tracker(store, None, None, lambda: registry, SigningGate())  # type: ignore[arg-type]
        txs = [replace(TYPE2, nonce=100 + i) for i in range(20)]
        signed = [sign_with(tx, SIG) for tx in txs]
        before = store.round_trips
        await asyncio.gather(
            *(tracker.track_send(s, tx, ME, "ci") for s, tx in zip(signed, txs, strict=True))
        )
        assert store.round_trips - before == 1
        for s in signed:
            record = await store.find("0x" + s.hash.hex())
            assert record is not None and record.nonce == s.nonce
        # the same bytes again, and a second transaction of ours for a tracked nonce
        again, other = signed[0], sign_with(cancellation(txs[1], ME), SIG)
        await asyncio.gather(
            tracker.track_send(again, txs[0], ME, "ci"),
            tracker.track(other, 1, ME, "signer-proxy", "filler"),
        )
        joined = await store.find("0x" + other.hash.hex())
        assert joined is not None and joined.hashes == (
            "0x" + signed[1].hash.hex(),
            "0x" + other.hash.hex(),
        )
        assert (await store.find("0x" + again.hash.hex())).hashes == ("0x" + again.hash.hex(),)  # type: ignore[union-attr]
    finally:
        await redis.aclose()


async def test_a_group_leaves_in_the_same_redis_write_as_the_nonce_commit(redis_url: str) -> None:
    """A send's record is queued, then its nonce committed in the same turn of the loop: the
    record's script goes out in the commit's write (one wake-up for Redis, not two), and a
    group never waits for an earlier one's reply (here: Redis has not answered the first)."""
    from signer_proxy.access.gate import SigningGate
    from signer_proxy.keys import KeyRegistry
    from signer_proxy.nonces.redis_store import connect
    from signer_proxy.tracking.tracker import Tracker

    redis = connect(redis_url)
    try:
        assert redis.pipelined is not None
        await redis.pipelined.command("PING")  # connected
        resp = redis.pipelined._resp
        assert resp is not None and resp._transport is not None
        writes: list[bytes] = []
        write = resp._transport.write
        resp._transport.write = lambda data: (writes.append(bytes(data)), write(data))[1]  # type: ignore[method-assign]
        registry = KeyRegistry([])
        tracker = Tracker(RedisTrackStore(redis), None, None, lambda: registry, SigningGate())  # type: ignore[arg-type]
        txs = [replace(TYPE2, nonce=200 + i) for i in range(2)]
        resp._transport.pause_reading()  # Redis's replies wait: the first group is in flight
        tracked, commits = [], []
        for i, tx in enumerate(txs):
            tracked.append(tracker.track_send(sign_with(tx, SIG), tx, ME, "ci"))
            # as settle() commits the send's nonce, in the same turn
            commits.append(asyncio.ensure_future(redis.pipelined.command("SET", f"commit-{i}", 1)))
            for _ in range(3):
                await asyncio.sleep(0)
        assert len(writes) == 2
        for i, data in enumerate(writes):
            assert data.count(b"EVALSHA") == 1 and f"commit-{i}".encode() in data
        resp._transport.resume_reading()
        await asyncio.gather(*tracked, *commits)
        assert [r.nonce for r in await RedisTrackStore(redis).pending(1, ME)] == [200, 201]
    finally:
        await redis.aclose()


class CountingNode:
    """A node whose address has `mined` nonces mined and the next ones up to `pooled` in its
    pool; it answers batches and counts what it was asked per method."""

    def __init__(self, mined: int, pooled: int) -> None:
        self.mined, self.pooled = mined, pooled
        self.asked: dict[str, int] = {}

    async def call(self, method: str, params: Any) -> Any:
        self.asked[method] = self.asked.get(method, 0) + 1
        if method == "eth_getTransactionCount":
            return hex(self.pooled if params[1] == "pending" else self.mined)
        if method == "eth_getTransactionReceipt":
            return {"transactionHash": params[0], "blockNumber": "0x5", "status": "0x1"}
        if method in ("eth_getTransactionByHash", "eth_getBlockByNumber"):
            return None  # above the pool: forgotten; blocks: not served (receipts are asked)
        return {"eth_blockNumber": "0x6", "eth_chainId": "0x1", "eth_sendRawTransaction": "0x"}[
            method
        ]

    async def forward(self, body: bytes) -> bytes:
        answers = [
            {"jsonrpc": "2.0", "id": c["id"], "result": await self.call(c["method"], c["params"])}
            for c in json.loads(body)
        ]
        return json.dumps(answers).encode()


async def test_a_round_asks_per_transaction_only_below_the_mined_count_or_above_the_pool() -> None:
    """Ten records: nonces 0-2 mined (a receipt each: this node serves no block bodies), 3-6
    in the node's pool (known without asking), 7-9 above it (a lookup each, then a
    rebroadcast: the node forgot them)."""
    from signer_proxy.access.gate import SigningGate
    from signer_proxy.chain.fill import ChainFacts
    from signer_proxy.keys import KeyRegistry
    from signer_proxy.tracking.tracker import Tracker

    node = CountingNode(mined=3, pooled=7)
    store = MemoryTrackStore()
    registry = KeyRegistry([])
    tracker = Tracker(store, node, ChainFacts(node), lambda: registry, SigningGate())
    for nonce in range(10):
        tx = replace(TYPE2, nonce=nonce)
        await tracker.track_send(sign_with(tx, SIG), tx, ME, "ci")
    await tracker.watch(1, ME)
    assert node.asked["eth_getTransactionReceipt"] == 3
    assert node.asked["eth_getTransactionByHash"] == 3
    assert node.asked["eth_sendRawTransaction"] == 3  # the forgotten ones, same bytes
    left = await store.pending(1, ME)
    assert [r.nonce for r in left] == [3, 4, 5, 6, 7, 8, 9]
    assert all(r.rebroadcasts == (1 if r.nonce >= 7 else 0) for r in left)
    assert all(r.state is State.PENDING for r in left)
    # written when rebroadcast; the others' first block is noted in the process only
    assert [r.sent_block for r in left] == [None] * 4 + [6] * 3


@pytest.mark.parametrize("failure", ["timeout", "bad-response"])
async def test_a_rebroadcast_that_fails_does_not_end_the_round(failure: str) -> None:
    """Nonces 0-2 mined, 3 and 4 forgotten by the node; the rebroadcast of 3 times out (or a
    gateway answers 502). The round goes on: 0-2 are stored final and 4 is rebroadcast (found
    by review: the error ended the address's round, so nothing of it was stored, and a
    rebroadcast failing every round stalled the address's records)."""
    from signer_proxy.access.gate import SigningGate
    from signer_proxy.chain.fill import ChainFacts
    from signer_proxy.errors import UpstreamBadResponse, UpstreamTimeout
    from signer_proxy.keys import KeyRegistry
    from signer_proxy.tracking.tracker import Tracker

    class FailingOnce(CountingNode):
        async def call(self, method: str, params: Any) -> Any:
            if method == "eth_sendRawTransaction" and params[0] == stuck:
                await super().call(method, params)
                if failure == "timeout":
                    raise UpstreamTimeout("the node did not answer in time")
                raise UpstreamBadResponse("the gateway answered 502")
            return await super().call(method, params)

    node = FailingOnce(mined=3, pooled=3)
    store = MemoryTrackStore()
    registry = KeyRegistry([])
    tracker = Tracker(store, node, ChainFacts(node), lambda: registry, SigningGate())
    raws = []
    for nonce in range(5):
        tx = replace(TYPE2, nonce=nonce)
        signed = sign_with(tx, SIG)
        raws.append("0x" + signed.raw.hex())
        await tracker.track_send(signed, tx, ME, "ci")
    stuck = raws[3]
    await tracker.watch(1, ME)
    left = await store.pending(1, ME)
    assert [(r.nonce, r.rebroadcasts) for r in left] == [(3, 0), (4, 1)]
    assert node.asked["eth_sendRawTransaction"] == 2


class BlockNode(CountingNode):
    """CountingNode with blocks: `bodies` lists each block's transaction hashes, the latest is
    `block`; a receipt is served for a hash found in a body (status `statuses[hash]`, 1 by
    default), and for one of `served` even if no body lists it."""

    def __init__(self, mined: int, pooled: int) -> None:
        super().__init__(mined, pooled)
        self.block = 6
        self.bodies: dict[int, list[Any]] = {}
        self.statuses: dict[str, int] = {}
        self.served: set[str] = set()

    async def call(self, method: str, params: Any) -> Any:
        if method == "eth_blockNumber":
            self.asked[method] = self.asked.get(method, 0) + 1
            return hex(self.block)
        if method == "eth_getBlockByNumber":
            self.asked[method] = self.asked.get(method, 0) + 1
            number = int(params[0], 16)
            if number not in self.bodies:
                return None
            return {"number": params[0], "transactions": self.bodies[number]}
        if method == "eth_getTransactionReceipt":
            self.asked[method] = self.asked.get(method, 0) + 1
            tx_hash = params[0]
            hit = [n for n, hashes in self.bodies.items() if tx_hash in hashes]
            if not hit and tx_hash not in self.served:
                return None
            status = self.statuses.get(tx_hash, 1)
            return {"transactionHash": tx_hash, "blockNumber": hex(hit[0] if hit else 5),
                    "status": hex(status)}  # fmt: skip
        return await super().call(method, params)


async def _tracked(
    node: CountingNode,
    nonces: range,
    address: str = ME,
    confirmations: int = 0,
    store: Any = None,
) -> tuple[Any, list[str]]:
    from signer_proxy.access.gate import SigningGate
    from signer_proxy.chain.fill import ChainFacts
    from signer_proxy.keys import KeyRegistry
    from signer_proxy.tracking.tracker import Tracker

    registry = KeyRegistry([])
    tracker = Tracker(
        store or MemoryTrackStore(),
        node,
        ChainFacts(node),
        lambda: registry,
        SigningGate(),
        confirmations=confirmations,
    )
    hashes = []
    for nonce in nonces:
        tx = replace(TYPE2, nonce=nonce)
        signed = sign_with(tx, SIG)
        await tracker.track_send(signed, tx, address, "ci")
        hashes.append("0x" + signed.hash.hex())
    return tracker, hashes


async def test_a_round_finds_what_was_mined_in_block_bodies_and_asks_the_status_when_wanted() -> (
    None
):
    """After a round has seen block 6, the next finds the ten transactions mined since in the
    bodies of blocks 6-8 (three calls, not ten receipts); a status call asks the one receipt
    it needs, once, and the record keeps it."""
    from signer_proxy.jsonrpc import CallContext
    from signer_proxy.methods.tracking import TrackingMethods

    node = BlockNode(mined=0, pooled=10)
    tracker, hashes = await _tracked(node, range(10))
    await tracker.watch(1, ME)  # block 6: all in the pool, nothing asked per transaction
    assert "eth_getTransactionReceipt" not in node.asked
    upper = ["0x" + h[2:].upper() for h in hashes[4:]]  # a hash is hex: any case is the same
    node.bodies = {6: [], 7: ["0x" + "ab" * 32, *hashes[:4]], 8: upper}
    node.block, node.mined, node.statuses = 8, 10, {hashes[2]: 0}
    await tracker.watch(1, ME)
    assert node.asked["eth_getBlockByNumber"] == 3
    assert "eth_getTransactionReceipt" not in node.asked
    assert await tracker.store.pending(1, ME) == []
    record = await tracker.find(hashes[2])
    assert (record.state, record.block_number, record.status) == (State.MINED, 7, None)

    methods = TrackingMethods(tracker, tracker._gate)
    answer = await methods.signer_getTransactionStatus([hashes[2]], CallContext(client="ci"))
    assert (answer["state"], answer["blockNumber"], answer["status"]) == ("mined", "0x7", "0x0")
    again = await methods.signer_getTransactionStatus([hashes[2]], CallContext(client="ci"))
    assert again == answer and node.asked["eth_getTransactionReceipt"] == 1  # kept


@pytest.mark.parametrize("redis", [False, True])
async def test_a_confirming_record_is_watched_until_deep_enough_and_rebroadcast_after_a_reorg(
    redis: bool, redis_url: str
) -> None:
    """--tracking-confirmations 2. Round 1 finds nonces 0-2 mined in block 7: not final, kept
    with their bytes. Round 2 (block 8) asks nothing per transaction for them. Then a reorg:
    the head is block 8 again but the mined count is 1, and the node has forgotten nonces 1
    and 2. Round 3 rebroadcasts their same bytes, and nonce 0 stays confirming. Round 4
    finds them in block 9 (nonce 0, two blocks deep, is final), and two blocks later, round 5
    makes the other two final."""
    from signer_proxy.nonces.redis_store import connect

    client = connect(redis_url) if redis else None
    store = RedisTrackStore(client) if client is not None else MemoryTrackStore()
    node = BlockNode(mined=0, pooled=3)
    tracker, hashes = await _tracked(node, range(3), confirmations=2, store=store)
    await tracker.watch(1, ME)  # block 6: pooled
    node.bodies, node.block, node.mined = {6: [], 7: hashes}, 7, 3
    await tracker.watch(1, ME)
    confirming = await tracker.store.pending(1, ME)
    assert [(r.state, r.block_number, r.final) for r in confirming] == [(State.MINED, 7, False)] * 3
    assert all(r.raw for r in confirming)  # the bytes are kept while confirming
    asked = dict(node.asked)
    node.bodies[8], node.block = [], 8
    await tracker.watch(1, ME)
    assert node.asked.get("eth_getTransactionReceipt") == asked.get("eth_getTransactionReceipt")
    assert node.asked.get("eth_getBlockByNumber") == asked.get("eth_getBlockByNumber")

    # The reorg: block 7 is replaced by one holding only nonce 0 (the node forgot 1 and 2).
    node.bodies, node.mined, node.pooled = {6: [], 7: hashes[:1], 8: []}, 1, 1
    sends = node.asked.get("eth_sendRawTransaction", 0)
    await tracker.watch(1, ME)
    assert node.asked["eth_sendRawTransaction"] == sends + 2
    records = await tracker.store.pending(1, ME)
    assert [(r.state, r.rebroadcasts) for r in records] == [
        (State.MINED, 0), (State.PENDING, 1), (State.PENDING, 1)
    ]  # fmt: skip
    node.bodies[9], node.block, node.mined, node.pooled = hashes[1:], 9, 3, 3
    await tracker.watch(1, ME)
    assert [r.block_number for r in await tracker.store.pending(1, ME)] == [9, 9]  # 0: final
    node.bodies.update({10: [], 11: []})
    node.block = 11
    await tracker.watch(1, ME)
    assert await tracker.store.pending(1, ME) == []
    finals = [await tracker.find(h) for h in hashes]
    assert [(r.state, r.block_number, r.final) for r in finals if r] == [
        (State.MINED, 7, True), (State.MINED, 9, True), (State.MINED, 9, True)
    ]  # fmt: skip
    if client is not None:
        await client.aclose()


@pytest.mark.parametrize("redis", [False, True])
async def test_a_reorg_that_moves_a_confirming_transaction_restarts_its_count(
    redis: bool, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """--tracking-confirmations 2. Nonce 0 is seen mined in block 7. A reorg moves it to
    block 8, so the mined count never falls: at head 9 its receipt (asked only now, at its
    depth) says block 8, and it is final only at head 10. Nonce 1, seen mined in block 7
    too, is replaced by a transaction not ours: none of our hashes has a receipt at its
    depth, so it is superseded, counted from that round's head."""
    from signer_proxy.nonces.redis_store import connect

    client = connect(redis_url) if redis else None
    store = RedisTrackStore(client) if client is not None else MemoryTrackStore()
    node = BlockNode(mined=0, pooled=2)
    tracker, hashes = await _tracked(node, range(2), confirmations=2, store=store)
    await tracker.watch(1, ME)  # block 6: pooled
    node.bodies, node.block, node.mined = {6: [], 7: hashes}, 7, 2
    await tracker.watch(1, ME)
    assert [r.block_number for r in await tracker.store.pending(1, ME)] == [7, 7]
    node.bodies = {6: [], 7: [], 8: hashes[:1]}  # the reorg; nonce 1's slot is another's
    node.bodies[9], node.block = [], 9
    receipts = node.asked.get("eth_getTransactionReceipt", 0)
    with caplog.at_level(logging.WARNING, logger="signer_proxy.tracking.tracker"):
        await tracker.watch(1, ME)
    assert node.asked["eth_getTransactionReceipt"] == receipts + 2  # one per hash, at depth
    records = await tracker.store.pending(1, ME)
    assert [(r.state, r.block_number, r.mined_hash, r.final) for r in records] == [
        (State.MINED, 8, hashes[0], False), (State.SUPERSEDED, 9, None, False)
    ]  # fmt: skip
    assert f"was {hashes[0]} in block 7 and is now {hashes[0]} in block 8" in caplog.text
    assert "is now mined by a transaction not ours" in caplog.text
    node.bodies[10], node.block = [], 10
    await tracker.watch(1, ME)
    assert [r.nonce for r in await tracker.store.pending(1, ME)] == [1]
    assert (await tracker.find(hashes[0])).final  # type: ignore[union-attr]
    node.bodies[11], node.block = [], 11
    await tracker.watch(1, ME)
    assert await tracker.store.pending(1, ME) == []
    last = await tracker.find(hashes[1])
    assert last is not None and (last.state, last.final) == (State.SUPERSEDED, True)
    if client is not None:
        await client.aclose()


async def test_a_node_behind_the_block_of_a_confirming_transaction_is_not_a_reorg() -> None:
    """A node answering from behind the block a record was seen mined in (a load balancer's
    lagging replica) says a lower mined count: the record keeps confirming, and nothing is
    rebroadcast."""
    node = BlockNode(mined=0, pooled=1)
    tracker, hashes = await _tracked(node, range(1), confirmations=2)
    await tracker.watch(1, ME)
    node.bodies, node.block, node.mined = {6: [], 7: hashes}, 7, 1
    await tracker.watch(1, ME)
    node.block, node.mined, node.pooled = 6, 0, 0  # the lagging replica
    sends = node.asked.get("eth_sendRawTransaction", 0)
    await tracker.watch(1, ME)
    assert node.asked.get("eth_sendRawTransaction", 0) == sends
    records = await tracker.store.pending(1, ME)
    assert [(r.state, r.block_number) for r in records] == [(State.MINED, 7)]


class Balanced:
    """A load balancer over node replicas: each request (a call, or a whole batch) goes to
    the next replica in turn."""

    def __init__(self, *replicas: BlockNode) -> None:
        self.replicas = list(replicas)
        self.turn = 0

    def _next(self) -> BlockNode:
        self.turn += 1
        return self.replicas[self.turn % len(self.replicas)]

    async def call(self, method: str, params: Any) -> Any:
        return await self._next().call(method, params)

    async def forward(self, body: bytes) -> bytes:
        return await self._next().forward(body)


async def test_a_lagging_replica_behind_a_load_balancer_is_not_a_reorg(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A confirming record, mined in block 7, watched through a load balancer whose second
    replica lags at block 6 without it. Each round asks the head and both counts in one
    batch, so one replica answers all three: never the fresh head with the stale count,
    which would read as a reorg (and rebroadcast)."""
    fresh = BlockNode(mined=0, pooled=1)
    balanced = Balanced(fresh, fresh)
    tracker, hashes = await _tracked(balanced, range(1), confirmations=3)  # type: ignore[arg-type]
    await tracker.watch(1, ME)
    fresh.bodies, fresh.block, fresh.mined = {6: [], 7: hashes}, 7, 1
    await tracker.watch(1, ME)
    stale = BlockNode(mined=0, pooled=0)  # block 6, before the transaction
    fresh.bodies[8], fresh.block = [], 8
    balanced.replicas = [fresh, stale]
    with caplog.at_level(logging.WARNING, logger="signer_proxy.tracking.tracker"):
        for _ in range(4):
            await tracker.watch(1, ME)
    assert "reorg" not in caplog.text
    assert "eth_sendRawTransaction" not in fresh.asked | stale.asked
    records = await tracker.store.pending(1, ME)
    assert [(r.state, r.block_number) for r in records] == [(State.MINED, 7)]


class NoPendingTag(CountingNode):
    """A node without a pool to count (as some EVM endpoints): "pending" is refused."""

    async def call(self, method: str, params: Any) -> Any:
        if method == "eth_getTransactionCount" and params[1] == "pending":
            raise NodeRejected(-32602, "unsupported block tag: pending")
        return await super().call(method, params)


async def test_a_node_that_refuses_the_pending_tag_is_watched_with_its_latest_count() -> None:
    node = NoPendingTag(mined=1, pooled=1)
    tracker, _ = await _tracked(node, range(2))
    await tracker.watch(1, ME)  # nonce 0 mined (its receipt); 1 looked up, forgotten: resent
    assert node.asked["eth_sendRawTransaction"] == 1
    records = await tracker.store.pending(1, ME)
    assert [(r.nonce, r.state, r.rebroadcasts) for r in records] == [(1, State.PENDING, 1)]


async def test_a_first_round_starts_reading_at_the_block_of_the_lowest_mined_nonce() -> None:
    """No round before (a fresh replica, a takeover): the receipt of the lowest mined nonce
    says where one sender's mined transactions start (nonces are mined in order), and the
    bodies from there to the head say where the rest are."""
    node = BlockNode(mined=10, pooled=10)
    tracker, hashes = await _tracked(node, range(10))
    node.block = 9
    node.bodies = {7: hashes[:6], 8: hashes[6:], 9: []}
    await tracker.watch(1, ME)
    assert node.asked["eth_getTransactionReceipt"] == 1
    assert node.asked["eth_getBlockByNumber"] == 3  # 7, 8 and 9
    records = [await tracker.find(h) for h in hashes]
    assert [(r.state, r.block_number) for r in records if r] == [(State.MINED, 7)] * 6 + [
        (State.MINED, 8)
    ] * 4
    assert [r.status for r in records if r] == [1] + [None] * 9  # the probe's receipt is kept


async def test_a_hash_no_body_lists_has_its_receipt_asked_before_anything_is_decided() -> None:
    """Nonce 0 was mined before the first block read (its receipt says so), nonce 1 by a
    transaction not ours (no receipt for our hash: superseded), nonces 2-4 are in block 7."""
    node = BlockNode(mined=0, pooled=5)
    tracker, hashes = await _tracked(node, range(5))
    await tracker.watch(1, ME)
    node.bodies = {6: ["0x" + "cd" * 32], 7: hashes[2:]}
    node.served = {hashes[0]}
    node.block, node.mined = 7, 5
    await tracker.watch(1, ME)
    assert node.asked["eth_getBlockByNumber"] == 2
    assert node.asked["eth_getTransactionReceipt"] == 2  # nonces 0 and 1 only
    states = [(await tracker.find(h)).state for h in hashes]  # type: ignore[union-attr]
    assert states == [State.MINED, State.SUPERSEDED, State.MINED, State.MINED, State.MINED]
    assert (await tracker.find(hashes[0])).status == 1  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("since_gap", "mined", "bodies_read"),
    [
        pytest.param(1, 3, True, id="two-blocks-three-hashes"),
        pytest.param(2, 3, False, id="as-many-blocks-as-hashes"),
        pytest.param(70, 100, False, id="more-blocks-than-the-cap"),
    ],
)
async def test_bodies_are_read_only_when_fewer_than_the_receipts_they_replace(
    since_gap: int, mined: int, bodies_read: bool
) -> None:
    node = BlockNode(mined=0, pooled=mined)
    tracker, hashes = await _tracked(node, range(mined))
    await tracker.watch(1, ME)
    node.block, node.mined = 6 + since_gap, mined
    node.bodies = {6 + since_gap: hashes}
    await tracker.watch(1, ME)
    assert ("eth_getBlockByNumber" in node.asked) is bodies_read
    assert node.asked.get("eth_getTransactionReceipt", 0) == (0 if bodies_read else mined)
    assert await tracker.store.pending(1, ME) == []


async def test_one_round_reads_each_block_once_for_every_address() -> None:
    other = "0x" + "33" * 20
    node = BlockNode(mined=0, pooled=4)
    tracker, hashes = await _tracked(node, range(4))
    more = []
    for nonce in range(4):  # another sender (the fake node gives every address one count)
        tx = replace(TYPE2, nonce=nonce, value=9)
        signed = sign_with(tx, SIG)
        await tracker.track_send(signed, tx, other, "ci")
        more.append("0x" + signed.hash.hex())
    await tracker.round()
    node.block, node.mined = 7, 4
    node.bodies = {6: hashes, 7: more}
    await tracker.round()
    assert node.asked["eth_getBlockByNumber"] == 2
    assert await tracker.store.watched() == []


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"number": "0x7"}, id="no-transactions"),
        pytest.param({"number": "0x9", "transactions": []}, id="another-block"),
        pytest.param({"number": "0x7", "transactions": [7]}, id="not-a-hash"),
        pytest.param(["0x7"], id="not-an-object"),
        pytest.param(NodeRejected(-32601, "the method does not exist"), id="refused"),
    ],
)
async def test_a_node_that_refuses_or_garbles_block_bodies_is_asked_receipts_for_a_while(
    body: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing is decided from a body that is not the block asked; the round asks receipts
    (the way before bodies), and so do this tracker's rounds for the next ten minutes; then
    bodies are tried again."""
    node = BlockNode(mined=0, pooled=9)
    tracker, hashes = await _tracked(node, range(9))
    clock = [1000.0]
    tracker._clock = lambda: clock[0]
    await tracker.watch(1, ME)

    async def bad(method: str, params: Any) -> Any:
        if method == "eth_getBlockByNumber":
            node.asked[method] = node.asked.get(method, 0) + 1
            if isinstance(body, Exception):
                raise body
            return body if params[0] == "0x7" else {"number": params[0], "transactions": []}
        return await BlockNode.call(node, method, params)

    node.call = bad  # type: ignore[method-assign]
    node.block, node.mined, node.served = 7, 3, set(hashes)
    await tracker.watch(1, ME)
    assert node.asked["eth_getTransactionReceipt"] == 3
    assert "asking a receipt per mined transaction" in caplog.text
    assert [r.nonce for r in await tracker.store.pending(1, ME)] == [3, 4, 5, 6, 7, 8]
    assert (await tracker.find(hashes[0])).state is State.MINED  # type: ignore[union-attr]
    asked = node.asked["eth_getBlockByNumber"]
    node.block, node.mined = 8, 6
    await tracker.watch(1, ME)
    assert node.asked["eth_getBlockByNumber"] == asked  # not asked again
    assert node.asked["eth_getTransactionReceipt"] == 6
    assert [r.nonce for r in await tracker.store.pending(1, ME)] == [6, 7, 8]
    clock[0] += BODIES_RETRY_SECONDS
    node.call = BlockNode.call.__get__(node)  # type: ignore[method-assign]  # healthy again
    node.block, node.mined, node.bodies = 9, 9, {8: [], 9: hashes[6:]}
    await tracker.watch(1, ME)
    assert node.asked["eth_getBlockByNumber"] == asked + 2  # blocks 8 and 9, read again
    assert node.asked["eth_getTransactionReceipt"] == 6 and not await tracker.store.pending(1, ME)


class MovingNode(CountingNode):
    """CountingNode whose latest block is `block`."""

    block = 6

    async def call(self, method: str, params: Any) -> Any:
        if method == "eth_blockNumber":
            return hex(self.block)
        return await super().call(method, params)


@pytest.mark.parametrize("redis", [False, True])
async def test_the_first_block_seen_is_noted_not_written_and_still_makes_it_due(
    redis: bool, redis_url: str
) -> None:
    """A round that only learns the first block after a send keeps it in the process (no
    write per transaction); that block still counts: after_blocks later it is due (stuck,
    with fee bumping off), and then it is written with the block first seen."""
    from signer_proxy.access.gate import SigningGate
    from signer_proxy.chain.fill import ChainFacts
    from signer_proxy.keys import KeyRegistry
    from signer_proxy.nonces.redis_store import connect
    from signer_proxy.tracking.tracker import Tracker

    client = connect(redis_url) if redis else None
    try:
        store: Any = RedisTrackStore(client) if client is not None else MemoryTrackStore()
        node = MovingNode(mined=0, pooled=3)
        policy = parse_policy({"fee_bumping": {"after_blocks": 2, "after_seconds": 3600}})
        registry = KeyRegistry([])
        gate = SigningGate(policy)
        tracker = Tracker(store, node, ChainFacts(node), lambda: registry, gate)
        for nonce in range(3):
            tx = replace(TYPE2, nonce=nonce)
            await tracker.track_send(sign_with(tx, SIG), tx, ME, "ci")
        writes = store.round_trips if client is not None else 0
        await tracker.watch(1, ME)  # block 6: noted
        assert [r.sent_block for r in await store.pending(1, ME)] == [None] * 3
        node.block = 7
        await tracker.watch(1, ME)  # one block on: not due yet
        assert all(r.state is State.PENDING for r in await store.pending(1, ME))
        if client is not None:  # two rounds and two reads here, one round trip each: no writes
            assert store.round_trips - writes == 4
        node.block = 8
        await tracker.watch(1, ME)  # two blocks after the first seen: due
        left = await store.pending(1, ME)
        assert [(r.state, r.sent_block) for r in left] == [(State.STUCK, 6)] * 3
    finally:
        if client is not None:
            await client.aclose()


# --- a replacement's send that fails -------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "recorded"),
    [
        pytest.param("timeout", True, id="timeout-maybe-delivered"),
        pytest.param("bad-response", True, id="gateway-502-maybe-delivered"),
        pytest.param("unavailable", False, id="not-delivered"),
        pytest.param("refused", False, id="refused-by-the-node"),
    ],
)
async def test_a_replacement_that_may_have_reached_the_node_is_recorded(
    error: str, recorded: bool
) -> None:
    """signer_speedUpTransaction whose send fails: a replacement that may have reached the node
    (by the send path's own table, nonces/outcome.py) is recorded as sent, or a mined
    replacement would read "superseded" and the old bytes be rebroadcast (found by review:
    only a timeout was recorded, not a gateway's 502); one that surely did not is not."""
    from signer_proxy.access.gate import SigningGate
    from signer_proxy.chain.fill import ChainFacts
    from signer_proxy.chain.signing import sign_transaction
    from signer_proxy.errors import UpstreamBadResponse, UpstreamTimeout, UpstreamUnavailable
    from signer_proxy.jsonrpc import CallContext
    from signer_proxy.keys import KeyRegistry
    from signer_proxy.keys.local import LocalKeySigner
    from signer_proxy.tracking.tracker import Tracker
    from tests.unit.tx_support import PRIVATE_KEY, TO, FakeNode

    failure = {
        "timeout": UpstreamTimeout("the node did not answer in time"),
        "bad-response": UpstreamBadResponse("the gateway answered 502"),
        "unavailable": UpstreamUnavailable("the node could not be reached"),
        "refused": NodeRejected(-32000, "insufficient funds for gas * price + value"),
    }[error]
    signer = LocalKeySigner(PRIVATE_KEY)
    registry = KeyRegistry([signer])
    node = FakeNode(eth_blockNumber="0x10")
    tracker = Tracker(MemoryTrackStore(), node, ChainFacts(node), lambda: registry, SigningGate())
    tx = UnsignedTx(
        type=2, chain_id=1, nonce=0, gas=21_000, to=TO, value=1, data=b"",
        max_fee_per_gas=300, max_priority_fee_per_gas=2,
    )  # fmt: skip
    first = await sign_transaction(tx, signer)
    await tracker.track_send(first, tx, signer.address, "ci")
    first_hash = "0x" + first.hash.hex()

    node.answers["eth_sendRawTransaction"] = failure
    with pytest.raises(type(failure)):
        await tracker.replace(first_hash, CallContext(client="ci"), "speed_up")

    sent = [params[0] for method, params in node.calls if method == "eth_sendRawTransaction"]
    record = await tracker.find(first_hash)
    assert len(sent) == 1 and record is not None
    if recorded:
        assert len(record.hashes) == 2 and record.raw == sent[0]
    else:
        assert record.hashes == (first_hash,) and record.raw == "0x" + first.raw.hex()


@pytest.mark.parametrize("redis", [False, True], ids=["memory", "redis"])
async def test_a_cancelled_payment_is_not_resent_after_the_node_forgets_its_pool(
    redis: bool, redis_url: str
) -> None:
    """A payment (nonce 0), then signer_cancelTransaction, which the node takes; the node
    then forgets its pool (a restart). The nonce manager resends what it keeps for nonce 0:
    that must be the cancel, not the payment the user cancelled (found by review: the kept
    bytes were never updated by the replacement). build_router wires the two together."""
    from signer_proxy.access.gate import SigningGate
    from signer_proxy.app import build_router
    from signer_proxy.chain.fill import ChainFacts
    from signer_proxy.config import Settings
    from signer_proxy.jsonrpc import CallContext
    from signer_proxy.keys import KeyRegistry
    from signer_proxy.keys.local import LocalKeySigner
    from signer_proxy.methods.transactions import TransactionMethods
    from signer_proxy.nonces.base import NonceManager
    from signer_proxy.nonces.memory import MemoryNonceManager, Resender
    from signer_proxy.nonces.redis_store import RedisNonceManager, connect
    from signer_proxy.tracking.tracker import Tracker
    from tests.unit.tx_support import PRIVATE_KEY, TO, FakeNode

    signer = LocalKeySigner(PRIVATE_KEY)
    registry = KeyRegistry([signer])
    node = FakeNode(eth_blockNumber="0x10", eth_sendRawTransaction="0x")
    pending = {"count": 0}
    resent: list[str] = []
    now = [1000.0]

    async def pending_count(address: str) -> int:
        return pending["count"]

    async def mined_count(address: str) -> int:
        return 0

    async def send_raw(raw: bytes) -> None:
        resent.append("0x" + raw.hex())

    async def chain_id() -> int:
        return 1

    client = connect(redis_url) if redis else None
    try:
        nonces: NonceManager = (
            RedisNonceManager(client, pending_count, send_raw, chain_id, 0.05, redis_url,
                              mined_count=mined_count)
            if client is not None
            else MemoryNonceManager(pending_count, 1.0, lambda: now[0],
                                    Resender(mined_count, send_raw))
        )  # fmt: skip
        tracker = Tracker(
            RedisTrackStore(client) if client is not None else MemoryTrackStore(),
            node, ChainFacts(node), lambda: registry, SigningGate(),
        )  # fmt: skip
        build_router(registry, node, ChainFacts(node), Settings(), nonces=nonces, tracker=tracker)
        assert tracker.nonces is not None
        methods = TransactionMethods(
            lambda: registry, node, nonces, ChainFacts(node), 1.2, track=tracker.track_send
        )
        request = [{"from": signer.address, "to": TO, "value": hex(10**18), "gas": "0x5208"}]
        payment_hash = await methods.eth_sendTransaction(request, CallContext(client="ci"))
        payment_raw = next(p[0] for m, p in node.calls if m == "eth_sendRawTransaction")
        pending["count"] = 1  # pooled
        cancel = await tracker.replace(payment_hash, CallContext(client="ci"), "cancel")

        pending["count"] = 0  # the node restarted and forgot its pool
        now[0] += 2.0
        await asyncio.sleep(0.1)  # Redis: a recorded transaction is resent a lease after
        assert (await nonces.reserve(signer.address)).nonce == 1
        assert payment_raw not in resent, "the cancelled payment was sent again"
        assert resent == [cancel.raw]
    finally:
        if client is not None:
            await client.aclose()
