"""Transactions: parse a request, choose its type, fill what is missing, encode and sign.

Parsing, type choice, fee arithmetic and encoding are pure; `fill` is the one place that asks
the node (chain id, gas estimate, fees) and computes blob commitments (in a thread). Nonces
are not filled here: the caller reserves one from the NonceManager right before signing, so a
failed fill never burns a nonce.

Types: 0 legacy (EIP-155; pre-155 only as chainId 0x0 behind an explicit setting), 1 EIP-2930,
2 EIP-1559, 3 EIP-4844 blobs, 4 EIP-7702 set-code (authorizations signed by whoever holds
the authorizing keys; `authorization_digest` is what such a key signs).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from signer_proxy import rlp_encoding
from signer_proxy.blobs import (
    BYTES_PER_BLOB,
    VERSIONED_HASH_VERSION_KZG,
    BlobSidecar,
    SidecarForm,
    build_sidecar,
)
from signer_proxy.ecdsa import Signature, keccak256
from signer_proxy.errors import ChainIdMismatch, InvalidParams, NodeRejected
from signer_proxy.hedera import HEDERA_CHAIN_IDS
from signer_proxy.hexdata import (
    MAX_UINT256,
    parse_address,
    parse_data,
    parse_quantity,
    to_data,
    to_quantity,
)
from signer_proxy.upstream import Upstream

LEGACY, ACCESS_LIST, DYNAMIC_FEE, BLOB, SET_CODE = 0, 1, 2, 3, 4
SUPPORTED_TYPES = (LEGACY, ACCESS_LIST, DYNAMIC_FEE, BLOB, SET_CODE)
DYNAMIC_FEE_TYPES = (DYNAMIC_FEE, BLOB, SET_CODE)
MAX_UINT64 = 2**64 - 1
# EIP-7702: the magic byte in front of an authorization's RLP when it is signed.
AUTHORIZATION_MAGIC = 0x05
# A legacy request with this chainId asks for a pre-EIP-155 signature (v = 27/28).
NO_CHAIN_ID = 0

AccessList = tuple[tuple[str, tuple[bytes, ...]], ...]


@dataclass(frozen=True, slots=True)
class Authorization:
    """One signed EIP-7702 authorization: `address`'s code is delegated to, chainId 0 = any."""

    chain_id: int
    address: str
    nonce: int
    y_parity: int
    r: int
    s: int

    def to_json(self) -> dict[str, str]:
        return {
            "chainId": to_quantity(self.chain_id),
            "address": self.address,
            "nonce": to_quantity(self.nonce),
            "yParity": to_quantity(self.y_parity),
            "r": to_quantity(self.r),
            "s": to_quantity(self.s),
        }


def authorization_digest(chain_id: int, address: str, nonce: int) -> bytes:
    """keccak(0x05 ‖ rlp([chain_id, address, nonce])): what an EIP-7702 authority signs."""
    return keccak256(
        bytes([AUTHORIZATION_MAGIC]) + _rlp([chain_id, bytes.fromhex(address[2:]), nonce])
    )


@dataclass(frozen=True, slots=True)
class TxRequest:
    """A transaction as the caller asked for it; None means 'fill it in'."""

    sender: str
    to: str | None = None
    value: int = 0
    data: bytes = b""
    gas: int | None = None
    gas_price: int | None = None
    max_fee_per_gas: int | None = None
    max_priority_fee_per_gas: int | None = None
    nonce: int | None = None
    chain_id: int | None = None
    type: int | None = None
    access_list: AccessList | None = None
    max_fee_per_blob_gas: int | None = None
    blob_versioned_hashes: tuple[bytes, ...] | None = None
    blobs: tuple[bytes, ...] | None = None
    authorization_list: tuple[Authorization, ...] | None = None

    @property
    def has_blob_fields(self) -> bool:
        return (
            self.blobs is not None
            or self.blob_versioned_hashes is not None
            or self.max_fee_per_blob_gas is not None
        )


@dataclass(frozen=True, slots=True)
class UnsignedTx:
    """Every field a signature covers, filled in; `type` decides which of the fee fields count."""

    type: int
    chain_id: int
    nonce: int
    gas: int
    to: str | None
    value: int
    data: bytes
    gas_price: int = 0
    max_fee_per_gas: int = 0
    max_priority_fee_per_gas: int = 0
    access_list: AccessList = ()
    max_fee_per_blob_gas: int = 0
    blob_versioned_hashes: tuple[bytes, ...] = ()
    authorization_list: tuple[Authorization, ...] = ()
    # Not signed: the blobs, commitments and proofs that travel with a type 3 to the node.
    sidecar: BlobSidecar | None = None


@dataclass(frozen=True, slots=True)
class SignedTx:
    """`raw` is what the node is sent (with a blob sidecar if any); `hash` is the tx hash."""

    raw: bytes
    hash: bytes
    nonce: int


def _parse_access_list(value: Any) -> AccessList:
    if not isinstance(value, list):
        raise InvalidParams("accessList must be a list of {address, storageKeys} objects")
    entries = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise InvalidParams(f"accessList[{i}] must be an object with address and storageKeys")
        keys = item.get("storageKeys", [])
        if not isinstance(keys, list):
            raise InvalidParams(f"accessList[{i}].storageKeys must be a list of 32-byte hex keys")
        parsed_keys = []
        for j, key in enumerate(keys):
            raw = parse_data(key, f"accessList[{i}].storageKeys[{j}]")
            if len(raw) != 32:
                raise InvalidParams(f"accessList[{i}].storageKeys[{j}] must be 32 bytes")
            parsed_keys.append(raw)
        entries.append(
            (parse_address(item.get("address"), f"accessList[{i}].address"), tuple(parsed_keys))
        )
    return tuple(entries)


def _parse_versioned_hashes(value: Any) -> tuple[bytes, ...]:
    if not isinstance(value, list) or not value:
        raise InvalidParams("blobVersionedHashes must be a non-empty list of 32-byte hashes")
    hashes = []
    for i, item in enumerate(value):
        raw = parse_data(item, f"blobVersionedHashes[{i}]")
        if len(raw) != 32 or raw[0] != VERSIONED_HASH_VERSION_KZG:
            raise InvalidParams(
                f"blobVersionedHashes[{i}] must be 32 bytes starting with 0x01 "
                "(the KZG version byte)"
            )
        hashes.append(raw)
    return tuple(hashes)


def _parse_blobs(value: Any) -> tuple[bytes, ...]:
    if not isinstance(value, list) or not value:
        raise InvalidParams(
            f"blobs must be a non-empty list of 0x-hex blobs of {BYTES_PER_BLOB} bytes each"
        )
    blobs = []
    for i, item in enumerate(value):
        raw = parse_data(item, f"blobs[{i}]")
        if len(raw) != BYTES_PER_BLOB:
            raise InvalidParams(
                f"blobs[{i}] is {len(raw)} bytes; a blob is exactly {BYTES_PER_BLOB} bytes "
                "(4096 field elements of 32 bytes): pad your data"
            )
        blobs.append(raw)
    return tuple(blobs)


def parse_authorization(item: Any, field: str) -> Authorization:
    """One signed authorization {chainId, address, nonce, yParity (or v), r, s}."""
    if not isinstance(item, dict):
        raise InvalidParams(
            f"{field} must be an object with chainId, address, nonce, yParity, r and s"
        )
    missing = [k for k in ("chainId", "address", "nonce", "r", "s") if item.get(k) is None]
    if item.get("yParity") is None and item.get("v") is None:
        missing.append("yParity")
    if missing:
        raise InvalidParams(f"{field} has no {', '.join(missing)}")
    if item.get("yParity") is not None:
        y_parity = parse_quantity(item["yParity"], f"{field}.yParity")
    else:  # some clients send v; 27/28 are the pre-typed spelling of 0/1
        y_parity = parse_quantity(item["v"], f"{field}.v")
        y_parity = y_parity - 27 if y_parity in (27, 28) else y_parity
    if y_parity not in (0, 1):
        raise InvalidParams(f"{field}.yParity must be 0x0 or 0x1")
    return Authorization(
        chain_id=parse_quantity(item["chainId"], f"{field}.chainId"),
        address=parse_address(item["address"], f"{field}.address"),
        nonce=parse_quantity(item["nonce"], f"{field}.nonce", max_value=MAX_UINT64 - 1),
        y_parity=y_parity,
        r=parse_quantity(item["r"], f"{field}.r", max_value=MAX_UINT256),
        s=parse_quantity(item["s"], f"{field}.s", max_value=MAX_UINT256),
    )


def _parse_authorization_list(value: Any) -> tuple[Authorization, ...]:
    if not isinstance(value, list) or not value:
        raise InvalidParams(
            "authorizationList must be a non-empty list of signed authorizations "
            "{chainId, address, nonce, yParity, r, s}"
        )
    return tuple(
        parse_authorization(item, f"authorizationList[{i}]") for i, item in enumerate(value)
    )


_KNOWN_FIELDS = frozenset(
    {
        "from",
        "to",
        "value",
        "data",
        "input",
        "gas",
        "gasPrice",
        "maxFeePerGas",
        "maxPriorityFeePerGas",
        "nonce",
        "chainId",
        "type",
        "accessList",
        "maxFeePerBlobGas",
        "blobVersionedHashes",
        "blobs",
        "authorizationList",
    }
)


def parse_tx_request(params: Any) -> TxRequest:
    """The single transaction object of eth_sendTransaction / eth_signTransaction params."""
    if isinstance(params, list):
        if len(params) != 1:
            raise InvalidParams("expected params [transaction], one transaction object")
        params = params[0]
    if not isinstance(params, dict):
        raise InvalidParams('the transaction must be a JSON object with at least "from"')
    tx: dict[str, Any] = params
    if "from" not in tx:
        raise InvalidParams('the transaction has no "from": name the account to sign with')
    unsupported = sorted(k for k in tx if k not in _KNOWN_FIELDS and tx[k] is not None)
    if unsupported:
        raise InvalidParams(
            f"unsupported transaction field(s) {', '.join(unsupported)}; this proxy signs "
            f"fields {', '.join(sorted(_KNOWN_FIELDS))}"
        )

    def opt_quantity(name: str, max_value: int = 2**256 - 1) -> int | None:
        value = tx.get(name)
        return None if value is None else parse_quantity(value, name, max_value=max_value)

    data_field, data_name = tx.get("input"), "input"
    if tx.get("data") is not None:
        if data_field is not None and parse_data(data_field, "input") != parse_data(
            tx["data"], "data"
        ):
            raise InvalidParams('both "data" and "input" are set and differ; send one of them')
        data_field, data_name = tx["data"], "data"
    to = tx.get("to")
    request = TxRequest(
        sender=parse_address(tx["from"], "from"),
        to=None if to in (None, "", "0x") else parse_address(to, "to"),
        value=opt_quantity("value") or 0,
        data=b"" if data_field is None else parse_data(data_field, data_name),
        gas=opt_quantity("gas", MAX_UINT64),
        gas_price=opt_quantity("gasPrice"),
        max_fee_per_gas=opt_quantity("maxFeePerGas"),
        max_priority_fee_per_gas=opt_quantity("maxPriorityFeePerGas"),
        nonce=opt_quantity("nonce", MAX_UINT64 - 1),
        chain_id=opt_quantity("chainId", MAX_UINT64),
        type=opt_quantity("type", 0xFF),
        access_list=None if tx.get("accessList") is None else _parse_access_list(tx["accessList"]),
        max_fee_per_blob_gas=opt_quantity("maxFeePerBlobGas"),
        blob_versioned_hashes=None
        if tx.get("blobVersionedHashes") is None
        else _parse_versioned_hashes(tx["blobVersionedHashes"]),
        blobs=None if tx.get("blobs") is None else _parse_blobs(tx["blobs"]),
        authorization_list=None
        if tx.get("authorizationList") is None
        else _parse_authorization_list(tx["authorizationList"]),
    )
    choose_type(request, node_has_base_fee=True)  # reject contradictory fee fields early
    return request


def choose_type(req: TxRequest, *, node_has_base_fee: bool) -> int:
    """The transaction type: `type` when given, else from the fields, else from the node.

    Raises InvalidParams when the fields contradict the type (they would be silently dropped).
    """
    tx_type = _type_of(req, node_has_base_fee)
    _check_fields_for(req, tx_type)
    return tx_type


def _has_1559_fees(req: TxRequest) -> bool:
    return req.max_fee_per_gas is not None or req.max_priority_fee_per_gas is not None


def _type_of(req: TxRequest, node_has_base_fee: bool) -> int:
    has_1559_fees = _has_1559_fees(req)
    if req.gas_price is not None and has_1559_fees:
        raise InvalidParams(
            "both gasPrice and maxFeePerGas/maxPriorityFeePerGas are set; gasPrice is for "
            "legacy and type 1 transactions, the max fees for type 2: send one kind"
        )
    if req.type is not None:
        if req.type not in SUPPORTED_TYPES:
            raise InvalidParams(
                f"transaction type {to_quantity(req.type)} is not supported; supported types "
                "are 0x0 (legacy, EIP-155), 0x1 (EIP-2930), 0x2 (EIP-1559), 0x3 (EIP-4844 "
                "blobs) and 0x4 (EIP-7702 set code)"
            )
        return req.type
    if req.has_blob_fields and req.authorization_list is not None:
        raise InvalidParams(
            "blob fields and an authorizationList cannot be in one transaction: blobs are "
            "type 0x3, authorizations type 0x4"
        )
    if req.has_blob_fields:
        return BLOB
    if req.authorization_list is not None:
        return SET_CODE
    if req.gas_price is not None:
        return ACCESS_LIST if req.access_list is not None else LEGACY
    if req.chain_id == NO_CHAIN_ID and not has_1559_fees:
        return LEGACY
    if has_1559_fees or node_has_base_fee:
        return DYNAMIC_FEE
    return ACCESS_LIST if req.access_list is not None else LEGACY


def _check_fields_for(req: TxRequest, tx_type: int) -> None:
    name = f"type {to_quantity(tx_type)}"
    if tx_type in (LEGACY, ACCESS_LIST) and _has_1559_fees(req):
        raise InvalidParams(f"{name} takes gasPrice, not maxFeePerGas/maxPriorityFeePerGas")
    if tx_type in DYNAMIC_FEE_TYPES and req.gas_price is not None:
        raise InvalidParams(f"{name} takes maxFeePerGas/maxPriorityFeePerGas, not gasPrice")
    if tx_type == LEGACY and req.access_list:
        raise InvalidParams("a legacy (type 0x0) transaction cannot carry an accessList")
    if tx_type != BLOB and req.has_blob_fields:
        raise InvalidParams(
            f"blobs, blobVersionedHashes and maxFeePerBlobGas belong to type 0x3 (blob) "
            f"transactions, not to {name}"
        )
    if tx_type != SET_CODE and req.authorization_list is not None:
        raise InvalidParams(
            f"authorizationList belongs to type 0x4 (EIP-7702) transactions, not to {name}"
        )
    if tx_type == BLOB:
        if req.blobs is None and req.blob_versioned_hashes is None:
            raise InvalidParams(
                "a type 0x3 (blob) transaction needs blobs (eth_signTransaction also accepts "
                "blobVersionedHashes alone)"
            )
        if req.to is None:
            raise InvalidParams("a type 0x3 (blob) transaction cannot create a contract: give to")
        if (
            req.blobs is not None
            and req.blob_versioned_hashes is not None
            and len(req.blobs) != len(req.blob_versioned_hashes)
        ):
            raise InvalidParams(
                f"{len(req.blobs)} blobs but {len(req.blob_versioned_hashes)} "
                "blobVersionedHashes: send one hash per blob, or only the blobs"
            )
    if tx_type == SET_CODE:
        if req.authorization_list is None:
            raise InvalidParams(
                "a type 0x4 (EIP-7702) transaction needs an authorizationList; a key of this "
                "proxy can sign one with signer_signAuthorization"
            )
        if req.to is None:
            raise InvalidParams(
                "a type 0x4 (EIP-7702) transaction cannot create a contract: give to"
            )
    if req.chain_id == NO_CHAIN_ID and tx_type != LEGACY:
        raise InvalidParams(
            "chainId 0x0 (no EIP-155 replay protection) exists only for legacy (type 0x0) "
            f"transactions, not {name}"
        )


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


def _rlp(items: list[Any]) -> bytes:
    return rlp_encoding.encode(items)


def _to_bytes(to: str | None) -> bytes:
    return b"" if to is None else bytes.fromhex(to[2:])


def _rlp_access_list(access_list: AccessList) -> list[list[Any]]:
    return [[bytes.fromhex(addr[2:]), list(keys)] for addr, keys in access_list]


def _rlp_authorizations(authorizations: tuple[Authorization, ...]) -> list[list[Any]]:
    return [
        [a.chain_id, bytes.fromhex(a.address[2:]), a.nonce, a.y_parity, a.r, a.s]
        for a in authorizations
    ]


def _fields(tx: UnsignedTx) -> list[Any]:
    to = _to_bytes(tx.to)
    if tx.type == LEGACY:
        return [tx.nonce, tx.gas_price, tx.gas, to, tx.value, tx.data]
    if tx.type == ACCESS_LIST:
        return [
            tx.chain_id,
            tx.nonce,
            tx.gas_price,
            tx.gas,
            to,
            tx.value,
            tx.data,
            _rlp_access_list(tx.access_list),
        ]
    if tx.type in DYNAMIC_FEE_TYPES:
        fields = [
            tx.chain_id,
            tx.nonce,
            tx.max_priority_fee_per_gas,
            tx.max_fee_per_gas,
            tx.gas,
            to,
            tx.value,
            tx.data,
            _rlp_access_list(tx.access_list),
        ]
        if tx.type == BLOB:
            fields += [tx.max_fee_per_blob_gas, list(tx.blob_versioned_hashes)]
        elif tx.type == SET_CODE:
            fields.append(_rlp_authorizations(tx.authorization_list))
        return fields
    raise InvalidParams(f"transaction type {tx.type} is not supported")


def signing_payload(tx: UnsignedTx) -> bytes:
    """The bytes whose keccak-256 is signed (EIP-155 for legacy, EIP-2718 envelope otherwise).

    A legacy transaction with chain id 0 is pre-EIP-155: the six fields alone.
    """
    if tx.type == LEGACY:
        if tx.chain_id == NO_CHAIN_ID:
            return _rlp(_fields(tx))
        return _rlp([*_fields(tx), tx.chain_id, 0, 0])
    return bytes([tx.type]) + _rlp(_fields(tx))


def signing_digest(tx: UnsignedTx) -> bytes:
    return keccak256(signing_payload(tx))


def legacy_v(chain_id: int, y_parity: int) -> int:
    """EIP-155 v = chainId·2 + 35 + parity; pre-155 (chain id 0) v = 27 + parity."""
    return 27 + y_parity if chain_id == NO_CHAIN_ID else chain_id * 2 + 35 + y_parity


def encode_signed(tx: UnsignedTx, sig: Signature) -> bytes:
    """The canonical signed transaction, whose keccak is its hash (no blob sidecar)."""
    if tx.type == LEGACY:
        return _rlp([*_fields(tx), legacy_v(tx.chain_id, sig.y_parity), sig.r, sig.s])
    return bytes([tx.type]) + _rlp([*_fields(tx), sig.y_parity, sig.r, sig.s])


def encode_network(tx: UnsignedTx, sig: Signature) -> bytes:
    """What eth_sendRawTransaction takes: the canonical form, or for a blob transaction with
    blobs its pooled form with the sidecar (EIP-7594 or EIP-4844 layout)."""
    if tx.sidecar is None:
        return encode_signed(tx, sig)
    body = [*_fields(tx), sig.y_parity, sig.r, sig.s]
    sidecar = tx.sidecar
    blobs, commitments, proofs = (
        list(sidecar.blobs),
        list(sidecar.commitments),
        list(sidecar.proofs),
    )
    if sidecar.form is SidecarForm.EIP7594:
        return bytes([tx.type]) + _rlp([body, 1, blobs, commitments, proofs])
    return bytes([tx.type]) + _rlp([body, blobs, commitments, proofs])


def sign_with(tx: UnsignedTx, sig: Signature) -> SignedTx:
    canonical = encode_signed(tx, sig)
    # Without a sidecar the network form is the canonical one: not encoded a second time.
    raw = canonical if tx.sidecar is None else encode_network(tx, sig)
    return SignedTx(raw=raw, hash=keccak256(canonical), nonce=tx.nonce)


def with_nonce(tx: UnsignedTx, nonce: int) -> UnsignedTx:
    return replace(tx, nonce=nonce)
