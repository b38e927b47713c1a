"""Transactions: parse a request, choose its type, fill what is missing, encode and sign.

Parsing, type choice, fee arithmetic and encoding are pure; `fill` is the one place that asks
the node (chain id, gas estimate, fees). Nonces are not filled here: the caller reserves one
from the NonceManager right before signing, so a failed fill never burns a nonce.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

import rlp

from signer_proxy.ecdsa import Signature, keccak256
from signer_proxy.errors import ChainIdMismatch, InvalidParams, NodeRejected
from signer_proxy.hexdata import parse_address, parse_data, parse_quantity, to_quantity
from signer_proxy.upstream import Upstream

LEGACY, ACCESS_LIST, DYNAMIC_FEE = 0, 1, 2
SUPPORTED_TYPES = (LEGACY, ACCESS_LIST, DYNAMIC_FEE)
MAX_UINT64 = 2**64 - 1

AccessList = tuple[tuple[str, tuple[bytes, ...]], ...]


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


@dataclass(frozen=True, slots=True)
class SignedTx:
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
    )
    choose_type(request, node_has_base_fee=True)  # reject contradictory fee fields early
    return request


def choose_type(req: TxRequest, *, node_has_base_fee: bool) -> int:
    """The transaction type: `type` when given, else from the fee fields, else from the node."""
    has_1559_fees = req.max_fee_per_gas is not None or req.max_priority_fee_per_gas is not None
    if req.gas_price is not None and has_1559_fees:
        raise InvalidParams(
            "both gasPrice and maxFeePerGas/maxPriorityFeePerGas are set; gasPrice is for "
            "legacy and type 1 transactions, the max fees for type 2: send one kind"
        )
    if req.type is not None:
        if req.type not in SUPPORTED_TYPES:
            raise InvalidParams(
                f"transaction type {to_quantity(req.type)} is not supported; supported types "
                "are 0x0 (legacy, EIP-155), 0x1 (EIP-2930) and 0x2 (EIP-1559)"
            )
        if req.type in (LEGACY, ACCESS_LIST) and has_1559_fees:
            raise InvalidParams(
                f"type {to_quantity(req.type)} takes gasPrice, not maxFeePerGas/"
                "maxPriorityFeePerGas"
            )
        if req.type == DYNAMIC_FEE and req.gas_price is not None:
            raise InvalidParams("type 0x2 takes maxFeePerGas/maxPriorityFeePerGas, not gasPrice")
        if req.type == LEGACY and req.access_list:
            raise InvalidParams("a legacy (type 0x0) transaction cannot carry an accessList")
        return req.type
    if req.gas_price is not None:
        return ACCESS_LIST if req.access_list is not None else LEGACY
    if has_1559_fees or node_has_base_fee:
        return DYNAMIC_FEE
    return ACCESS_LIST if req.access_list is not None else LEGACY


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


class ChainFacts:
    """What the proxy learns from the node once: chain id and whether it has a base fee."""

    def __init__(self, upstream: Upstream) -> None:
        self._upstream = upstream
        self._chain_id: int | None = None
        self._has_base_fee: bool | None = None
        self._lock = asyncio.Lock()

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


def _estimate_params(req: TxRequest) -> dict[str, Any]:
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
    return call


async def fill(
    req: TxRequest, upstream: Upstream, facts: ChainFacts, gas_margin: float
) -> UnsignedTx:
    """Everything but the nonce (0 here): chain id, type, gas and fees, asked concurrently."""
    chain_id = await facts.chain_id()
    if req.chain_id is not None and req.chain_id != chain_id:
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
        else True
    )
    tx_type = choose_type(req, node_has_base_fee=has_base_fee)

    async def gas() -> int:
        if req.gas is not None:
            return req.gas
        estimate = parse_quantity(
            await upstream.call("eth_estimateGas", [_estimate_params(req)]),
            "the node's gas estimate",
        )
        return apply_gas_margin(estimate, gas_margin)

    async def fees() -> tuple[int, int, int]:
        if tx_type == DYNAMIC_FEE:
            if req.max_fee_per_gas is not None and req.max_priority_fee_per_gas is not None:
                max_fee, tip = dynamic_fees(0, 0, req.max_fee_per_gas, req.max_priority_fee_per_gas)
                return 0, max_fee, tip
            base_fee, tip = await asyncio.gather(_next_base_fee(upstream), _suggested_tip(upstream))
            max_fee, tip = dynamic_fees(
                base_fee, tip, req.max_fee_per_gas, req.max_priority_fee_per_gas
            )
            return 0, max_fee, tip
        if req.gas_price is not None:
            return req.gas_price, 0, 0
        return parse_quantity(await upstream.call("eth_gasPrice", []), "the node's gas price"), 0, 0

    gas_limit, (gas_price, max_fee, tip) = await asyncio.gather(gas(), fees())
    return UnsignedTx(
        type=tx_type,
        chain_id=chain_id,
        nonce=req.nonce or 0,
        gas=gas_limit,
        to=req.to,
        value=req.value,
        data=req.data,
        gas_price=gas_price,
        max_fee_per_gas=max_fee,
        max_priority_fee_per_gas=tip,
        access_list=req.access_list or (),
    )


def _rlp(items: list[Any]) -> bytes:
    encoded: bytes = rlp.encode(items)
    return encoded


def _to_bytes(to: str | None) -> bytes:
    return b"" if to is None else bytes.fromhex(to[2:])


def _rlp_access_list(access_list: AccessList) -> list[list[Any]]:
    return [[bytes.fromhex(addr[2:]), list(keys)] for addr, keys in access_list]


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
    if tx.type == DYNAMIC_FEE:
        return [
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
    raise InvalidParams(f"transaction type {tx.type} is not supported")


def signing_payload(tx: UnsignedTx) -> bytes:
    """The bytes whose keccak-256 is signed (EIP-155 for legacy, EIP-2718 envelope otherwise)."""
    if tx.type == LEGACY:
        return _rlp([*_fields(tx), tx.chain_id, 0, 0])
    return bytes([tx.type]) + _rlp(_fields(tx))


def signing_digest(tx: UnsignedTx) -> bytes:
    return keccak256(signing_payload(tx))


def encode_signed(tx: UnsignedTx, sig: Signature) -> bytes:
    """The raw transaction for eth_sendRawTransaction: v = chainId·2+35+parity for legacy."""
    if tx.type == LEGACY:
        v = tx.chain_id * 2 + 35 + sig.y_parity
        return _rlp([*_fields(tx), v, sig.r, sig.s])
    return bytes([tx.type]) + _rlp([*_fields(tx), sig.y_parity, sig.r, sig.s])


def sign_with(tx: UnsignedTx, sig: Signature) -> SignedTx:
    raw = encode_signed(tx, sig)
    return SignedTx(raw=raw, hash=keccak256(raw), nonce=tx.nonce)


def with_nonce(tx: UnsignedTx, nonce: int) -> UnsignedTx:
    return replace(tx, nonce=nonce)
