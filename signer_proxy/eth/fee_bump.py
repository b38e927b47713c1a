"""Fee bumping arithmetic: the replacement of a pending transaction (same nonce, higher fees)
that a node accepts and the operator's policy allows. Pure; table-tested.

A node replaces a pooled transaction only when every fee field rises by its price bump: geth's
--txpool.pricebump (10 %) for the fee cap and the tip (or the gas price), --blobpool.pricebump
(100 %) for a blob transaction's fees. The replacement follows the market too: its tip is at
least the node's suggested tip, its fee cap at least 2 x base fee + tip (the rule new sends are
filled with), its blob fee cap at least 2 x the blob base fee. Then the policy's ceilings: a
fee cap above `max_fee_per_gas` is lowered to it (and refused if that no longer beats the
node's bump), and the worst-case extra cost over the original is bounded per transaction and
per day. A refusal names the ceiling: the tracker then reports the transaction stuck.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from signer_proxy.eth.tx_encoding import UnsignedTx
from signer_proxy.eth.tx_request import BLOB, DYNAMIC_FEE, DYNAMIC_FEE_TYPES, SET_CODE

# EIP-4844: gas per blob.
GAS_PER_BLOB = 131072
# What a cancellation costs: a zero-value transfer with no data.
TRANSFER_GAS = 21000


@dataclass(frozen=True, slots=True)
class BumpPolicy:
    """The `fee_bumping` section of the policy file (docs/security.md). Ceilings apply to every
    replacement (automatic, signer_speedUpTransaction, signer_cancelTransaction); `enabled`
    switches on the automatic bumps only."""

    enabled: bool = False
    after_blocks: int = 3
    after_seconds: float = 60.0
    min_bump_percent: int = 10
    blob_min_bump_percent: int = 100
    max_fee_per_gas: int | None = None
    max_fee_per_blob_gas: int | None = None
    max_extra_cost_per_tx: int | None = None
    max_extra_cost_per_day: int | None = None
    max_bumps: int = 5


@dataclass(frozen=True, slots=True)
class Market:
    """What the node says fees are now."""

    base_fee: int  # the next block's; 0 on a chain without one
    tip: int  # suggested priority fee
    gas_price: int  # eth_gasPrice, for legacy and type 1 transactions
    blob_base_fee: int = 0


@dataclass(frozen=True, slots=True)
class Bump:
    """A replacement the node and the policy accept: `extra_cost` is its worst-case cost over
    the original's, `step_cost` over the transaction it replaces (what the day is charged)."""

    tx: UnsignedTx
    extra_cost: int
    step_cost: int


@dataclass(frozen=True, slots=True)
class Ceiling:
    """No replacement: the policy rule that stops it, and why."""

    rule: str
    message: str


def fee_cap(tx: UnsignedTx) -> int:
    """What one gas may cost at most: maxFeePerGas, or gasPrice for types 0 and 1."""
    return tx.max_fee_per_gas if tx.type in DYNAMIC_FEE_TYPES else tx.gas_price


def worst_cost(tx: UnsignedTx) -> int:
    """The most the fees of `tx` can cost (value excluded): gas x fee cap, plus blob gas x
    blob fee cap."""
    blob_gas = GAS_PER_BLOB * len(tx.blob_versioned_hashes) if tx.type == BLOB else 0
    return tx.gas * fee_cap(tx) + blob_gas * tx.max_fee_per_blob_gas


def raised(value: int, percent: int) -> int:
    """The least value a node takes as `percent` above `value` (and never equal to it)."""
    return max(value + 1, -(-value * (100 + percent) // 100))


def cancellation(tx: UnsignedTx, sender: str) -> UnsignedTx:
    """`tx` turned into a zero-value transfer to `sender` itself (same nonce and fees): mined
    in its place, it does nothing but use the nonce. A set-code transaction becomes type 2 (its
    authorizations are not repeated); a blob transaction cannot be cancelled this way (a node's
    blob pool replaces a blob transaction only with another)."""
    return replace(
        tx,
        type=DYNAMIC_FEE if tx.type == SET_CODE else tx.type,
        to=sender,
        value=0,
        data=b"",
        gas=TRANSFER_GAS,
        access_list=(),
        authorization_list=(),
    )


def bump(
    current: UnsignedTx,
    original_cost: int,
    market: Market,
    policy: BumpPolicy,
    bumps_made: int,
    spent_today: int,
) -> Bump | Ceiling:
    """The replacement of `current`, or the ceiling; `original_cost` is the worst_cost of the
    first transaction sent for the nonce."""
    if bumps_made >= policy.max_bumps:
        return Ceiling(
            "max_bumps", f"{bumps_made} replacement(s) made; max_bumps is {policy.max_bumps}"
        )
    p = policy.min_bump_percent
    blob_part = 0
    fields: dict[str, int] = {}
    if current.type == BLOB:
        need_blob = raised(current.max_fee_per_blob_gas, policy.blob_min_bump_percent)
        blob_fee = max(need_blob, 2 * market.blob_base_fee)
        if policy.max_fee_per_blob_gas is not None and blob_fee > policy.max_fee_per_blob_gas:
            if need_blob > policy.max_fee_per_blob_gas:
                return Ceiling(
                    "max_fee_per_blob_gas",
                    f"the node needs a blob fee cap of at least {need_blob} wei; the policy "
                    f"allows {policy.max_fee_per_blob_gas}",
                )
            blob_fee = policy.max_fee_per_blob_gas
        fields["max_fee_per_blob_gas"] = blob_fee
        blob_part = GAS_PER_BLOB * len(current.blob_versioned_hashes) * blob_fee
        p = max(p, policy.blob_min_bump_percent)  # geth's blob pool bumps every fee by its rule
    cap = policy.max_fee_per_gas
    if policy.max_extra_cost_per_tx is not None and current.gas > 0:
        by_cost = (original_cost + policy.max_extra_cost_per_tx - blob_part) // current.gas
        cap = by_cost if cap is None else min(cap, by_cost)
    cap_rule = (
        "max_fee_per_gas"
        if policy.max_fee_per_gas is not None and (cap is None or cap >= policy.max_fee_per_gas)
        else "max_extra_cost_per_tx"
    )
    if current.type in DYNAMIC_FEE_TYPES:
        need_fee = raised(current.max_fee_per_gas, p)
        need_tip = raised(current.max_priority_fee_per_gas, p)
        tip = max(need_tip, market.tip)
        fee = max(need_fee, 2 * market.base_fee + tip)
        if cap is not None and fee > cap:
            fee = cap
        tip = min(tip, fee)
        if fee < need_fee or tip < need_tip:
            return Ceiling(
                cap_rule,
                f"the node needs a fee cap of at least {need_fee} wei and a tip of "
                f"{need_tip}; the policy allows a fee cap of {cap}",
            )
        fields.update(max_fee_per_gas=fee, max_priority_fee_per_gas=tip)
    else:
        need = raised(current.gas_price, p)
        price = max(need, market.gas_price)
        if cap is not None and price > cap:
            price = cap
        if price < need:
            return Ceiling(
                cap_rule,
                f"the node needs a gas price of at least {need} wei; the policy allows {cap}",
            )
        fields["gas_price"] = price
    new = replace(current, **fields)  # type: ignore[arg-type]
    extra = worst_cost(new) - original_cost
    step = max(0, worst_cost(new) - worst_cost(current))
    if policy.max_extra_cost_per_tx is not None and extra > policy.max_extra_cost_per_tx:
        return Ceiling(
            "max_extra_cost_per_tx",
            f"the replacement could cost {extra} wei more than the original; the policy "
            f"allows {policy.max_extra_cost_per_tx}",
        )
    day_limit = policy.max_extra_cost_per_day
    if day_limit is not None and spent_today + step > day_limit:
        return Ceiling(
            "max_extra_cost_per_day",
            f"{spent_today} wei of extra fees already allowed today (UTC); {step} more would "
            f"pass max_extra_cost_per_day {policy.max_extra_cost_per_day}",
        )
    return Bump(new, extra, step)
