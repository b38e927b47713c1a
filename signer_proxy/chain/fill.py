"""Filling a transaction request from the node: chain id, gas, fees, blob commitments.

`fill` is the one place that asks the node (chain id, gas estimate, fees) and computes blob
commitments (in a thread). Nonces are not filled here: the caller reserves one from the
NonceManager right before signing, so a failed fill never burns a nonce.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from signer_proxy.errors import ChainIdMismatch, InvalidParams, NodeRejected
from signer_proxy.eth.blobs import (
    BlobSidecar,
    SidecarForm,
    build_sidecar,
)
from signer_proxy.eth.hexdata import (
    parse_quantity,
    to_data,
    to_quantity,
)
from signer_proxy.eth.tx_encoding import UnsignedTx
from signer_proxy.eth.tx_request import (
    BLOB,
    DYNAMIC_FEE_TYPES,
    MAX_UINT64,
    NO_CHAIN_ID,
    TxRequest,
    choose_type,
)
from signer_proxy.keys.hedera import HEDERA_CHAIN_IDS
from signer_proxy.upstream.base import Upstream


def dynamic_fees(
    base_fee: int, suggested_tip: int, max_fee: int | None, max_tip: int | None
) -> tuple[int, int]:
    """(maxFeePerGas, maxPriorityFeePerGas): caller values kept, the rest filled.

    The default max fee is 2 x base fee + tip: it stays valid through six full blocks of
    base-fee rises (each at most +12.5 %).
    """
    if max_tip is None:
        max_tip = suggested_tip if max_fee is None else min(suggested_tip, max_fee)
    if max_fee is None:
        max_fee = 2 * base_fee + max_tip
    if max_fee < max_tip:
        raise InvalidParams(
            f"maxFeePerGas ({max_fee}) is below maxPriorityFeePerGas ({max_tip}); "
            "the max fee must cover the tip"
        )
    return max_fee, max_tip


def apply_gas_margin(estimate: int, margin: float) -> int:
    """estimate x margin, rounded up, in exact decimal arithmetic (21000 x 1.1 is 23100)."""
    return min(math.ceil(Decimal(estimate) * Decimal(str(margin))), MAX_UINT64)


# How long the node's fee suggestion (next base fee, tip) is reused. The default max fee is
# twice the base fee plus the tip, which outlasts six full blocks of base-fee rises; a
# suggestion a second old is as good, and sparing two node round trips per transaction
# is a quarter of the proxy's CPU on the fee-filling path.
FEE_TTL_SECONDS = 1.0


class ChainFacts:
    """What the proxy learns from the node once (chain id, whether it has a base fee), and
    its fee suggestion, reused for FEE_TTL_SECONDS."""

    def __init__(
        self,
        upstream: Upstream,
        fee_ttl_seconds: float = FEE_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._upstream = upstream
        self._chain_id: int | None = None
        self._has_base_fee: bool | None = None
        self._lock = asyncio.Lock()
        self._fee_ttl = fee_ttl_seconds
        self._clock = clock
        self._fees: tuple[float, int, int] | None = None  # (asked at, base fee, tip)

    @property
    def known_chain_id(self) -> int | None:
        return self._chain_id

    def expect(self, chain_id: int) -> None:
        """Sign for `chain_id` (the configuration's) before the node has said it; the node
        saying another later fails readiness (ops/health.py upstream_check)."""
        self._chain_id = chain_id

    async def chain_id(self) -> int:
        if self._chain_id is None:
            async with self._lock:
                if self._chain_id is None:
                    result = await self._upstream.call("eth_chainId", [])
                    self._chain_id = parse_quantity(result, "the node's eth_chainId")
        return self._chain_id

    async def has_base_fee(self) -> bool:
        if self._has_base_fee is None:
            block = await self._upstream.call("eth_getBlockByNumber", ["latest", False])
            self._has_base_fee = isinstance(block, dict) and block.get("baseFeePerGas") is not None
        return self._has_base_fee

    async def fee_suggestion(self) -> tuple[int, int]:
        """(the next block's base fee, a suggested tip) from the node, at most the TTL old."""
        asked_at = self._clock()
        cached = self._fees
        if cached is not None and asked_at - cached[0] < self._fee_ttl:
            return cached[1], cached[2]
        # Sends that find it stale together each ask: no shared task whose failure or
        # deadline would become another request's.
        base_fee, tip = await asyncio.gather(
            _next_base_fee(self._upstream), _suggested_tip(self._upstream)
        )
        self._fees = (asked_at, base_fee, tip)
        return base_fee, tip


async def mined_nonce(upstream: Upstream, address: str) -> int:
    """The node's latest (mined) transaction count for `address`."""
    result = await upstream.call("eth_getTransactionCount", [address, "latest"])
    return parse_quantity(result, "the node's transaction count")


async def pending_nonce(upstream: Upstream, address: str) -> int:
    """The node's pending transaction count for `address` ("latest" where "pending" is refused).

    Some EVM endpoints (Hedera JSON-RPC relays among them) have no pending pool to count and
    refuse the "pending" tag; their latest count is the best the node knows.
    """
    try:
        result = await upstream.call("eth_getTransactionCount", [address, "pending"])
    except NodeRejected:
        result = await upstream.call("eth_getTransactionCount", [address, "latest"])
    return parse_quantity(result, "the node's pending transaction count")


async def _suggested_tip(upstream: Upstream) -> int:
    try:
        return parse_quantity(await upstream.call("eth_maxPriorityFeePerGas", []), "tip")
    except NodeRejected:  # not every node has it; fall back to the median reward
        history = await upstream.call("eth_feeHistory", ["0x5", "latest", [50]])
        rewards = [parse_quantity(r[0], "reward") for r in history.get("reward") or [] if r]
        return sorted(rewards)[len(rewards) // 2] if rewards else 0


async def _next_base_fee(upstream: Upstream) -> int:
    history = await upstream.call("eth_feeHistory", ["0x1", "latest", []])
    return parse_quantity(history["baseFeePerGas"][-1], "the node's baseFeePerGas")


async def _blob_base_fee(upstream: Upstream) -> int:
    try:
        return parse_quantity(await upstream.call("eth_blobBaseFee", []), "the node's blob fee")
    except NodeRejected:  # older nodes: the last entry of eth_feeHistory's blob base fees
        history = await upstream.call("eth_feeHistory", ["0x1", "latest", []])
        fees = history.get("baseFeePerBlobGas") if isinstance(history, dict) else None
        if not fees:
            raise InvalidParams(
                "the node reports no blob base fee (eth_blobBaseFee, eth_feeHistory): it may "
                "not support blob transactions; give maxFeePerBlobGas to sign anyway"
            ) from None
        return parse_quantity(fees[-1], "the node's baseFeePerBlobGas")


def _estimate_params(req: TxRequest, versioned_hashes: tuple[bytes, ...] = ()) -> dict[str, Any]:
    call: dict[str, Any] = {"from": req.sender, "value": to_quantity(req.value)}
    if req.to is not None:
        call["to"] = req.to
    if req.data:
        call["input"] = "0x" + req.data.hex()
    if req.access_list:
        call["accessList"] = [
            {"address": a, "storageKeys": ["0x" + k.hex() for k in keys]}
            for a, keys in req.access_list
        ]
    if versioned_hashes:  # BLOBHASH must see them during estimation
        call["blobVersionedHashes"] = [to_data(h) for h in versioned_hashes]
    if req.authorization_list:  # delegations change both the code run and the intrinsic gas
        call["authorizationList"] = [a.to_json() for a in req.authorization_list]
    return call


async def _blob_parts(
    req: TxRequest, sidecar_form: SidecarForm
) -> tuple[tuple[bytes, ...], BlobSidecar | None]:
    """(versioned hashes, sidecar): computed from blobs when given, in a worker thread."""
    if req.blobs is None:
        return req.blob_versioned_hashes or (), None
    sidecar = await asyncio.to_thread(build_sidecar, req.blobs, sidecar_form)
    hashes = sidecar.versioned_hashes
    if req.blob_versioned_hashes is not None and req.blob_versioned_hashes != hashes:
        raise InvalidParams(
            "blobVersionedHashes do not match the blobs' KZG commitments (expected "
            f"{', '.join(to_data(h) for h in hashes)}); send only the blobs"
        )
    return hashes, sidecar


def _fees_given(req: TxRequest, tx_type: int) -> bool:
    """Whether the request has every fee `tx_type` needs (fill asks the node for none)."""
    if tx_type in DYNAMIC_FEE_TYPES:
        return req.max_fee_per_gas is not None and req.max_priority_fee_per_gas is not None
    return req.gas_price is not None


def _needs_blob_fee(req: TxRequest, tx_type: int) -> bool:
    return tx_type == BLOB and req.max_fee_per_blob_gas is None


async def fill(
    req: TxRequest,
    upstream: Upstream,
    facts: ChainFacts,
    gas_margin: float,
    *,
    allow_pre_eip155: bool = False,
    sidecar_form: SidecarForm = SidecarForm.EIP7594,
) -> UnsignedTx:
    """Everything but the nonce (0 here): chain id, type, gas and fees, asked concurrently."""
    chain_id = await facts.chain_id()
    if req.chain_id == NO_CHAIN_ID:
        if not allow_pre_eip155:
            raise InvalidParams(
                "chainId 0x0 asks for a legacy signature without EIP-155 replay protection "
                "(anyone could replay it on any chain); this proxy refuses it unless started "
                "with --allow-pre-eip155 true"
            )
    elif req.chain_id is not None and req.chain_id != chain_id:
        raise ChainIdMismatch(
            f"chainId {req.chain_id} in the request differs from the node's chain id "
            f"{chain_id}; refusing to sign for another chain"
        )
    has_base_fee = (
        await facts.has_base_fee()
        if req.type is None
        and req.gas_price is None
        and req.max_fee_per_gas is None
        and req.max_priority_fee_per_gas is None
        and req.chain_id != NO_CHAIN_ID
        and not req.has_blob_fields
        and req.authorization_list is None
        else True
    )
    tx_type = choose_type(req, node_has_base_fee=has_base_fee)
    if tx_type == BLOB and chain_id in HEDERA_CHAIN_IDS:
        raise InvalidParams(
            f"Hedera (chain id {chain_id}) rejects blob (type 0x3) transactions (HIP-866): "
            "send a type 0x2 transaction instead"
        )
    versioned_hashes, sidecar = await _blob_parts(req, sidecar_form)

    async def gas() -> int:
        if req.gas is not None:
            return req.gas
        estimate = parse_quantity(
            await upstream.call("eth_estimateGas", [_estimate_params(req, versioned_hashes)]),
            "the node's gas estimate",
        )
        return apply_gas_margin(estimate, gas_margin)

    async def fees() -> tuple[int, int, int]:
        if tx_type in DYNAMIC_FEE_TYPES:
            given = _fees_given(req, tx_type)
            base_fee, tip = (0, 0) if given else await facts.fee_suggestion()
            max_fee, tip = dynamic_fees(
                base_fee, tip, req.max_fee_per_gas, req.max_priority_fee_per_gas
            )
            return 0, max_fee, tip
        if req.gas_price is not None:
            return req.gas_price, 0, 0
        return parse_quantity(await upstream.call("eth_gasPrice", []), "the node's gas price"), 0, 0

    async def blob_fee() -> int:
        if not _needs_blob_fee(req, tx_type):
            return req.max_fee_per_blob_gas or 0
        # Twice the current blob base fee, like the execution fee: room for a few rising blocks.
        return max(2 * await _blob_base_fee(upstream), 1)

    if req.gas is not None and _fees_given(req, tx_type) and not _needs_blob_fee(req, tx_type):
        # Nothing to ask the node: run the three inline, without a task each for gather.
        gas_limit, (gas_price, max_fee, tip), max_blob_fee = (
            await gas(),
            await fees(),
            await blob_fee(),
        )
    else:
        gas_limit, (gas_price, max_fee, tip), max_blob_fee = await asyncio.gather(
            gas(), fees(), blob_fee()
        )
    return UnsignedTx(
        type=tx_type,
        chain_id=NO_CHAIN_ID if req.chain_id == NO_CHAIN_ID else chain_id,
        nonce=req.nonce or 0,
        gas=gas_limit,
        to=req.to,
        value=req.value,
        data=req.data,
        gas_price=gas_price,
        max_fee_per_gas=max_fee,
        max_priority_fee_per_gas=tip,
        access_list=req.access_list or (),
        max_fee_per_blob_gas=max_blob_fee,
        blob_versioned_hashes=versioned_hashes,
        authorization_list=req.authorization_list or (),
        sidecar=sidecar,
    )
