"""Transaction requests: parse and validate what a client asked for, and choose its type.

Pure. Types: 0 legacy (EIP-155; pre-155 only as chainId 0x0 behind an explicit setting), 1 EIP-2930,
2 EIP-1559, 3 EIP-4844 blobs, 4 EIP-7702 set-code.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from signer_proxy.errors import InvalidParams
from signer_proxy.eth.blobs import (
    BYTES_PER_BLOB,
    VERSIONED_HASH_VERSION_KZG,
)
from signer_proxy.eth.hexdata import (
    MAX_UINT256,
    parse_address,
    parse_data,
    parse_quantity,
    to_quantity,
)


class TxType(IntEnum):
    """The transaction types this proxy builds (the EIP-2718 type byte)."""

    LEGACY = 0  # EIP-155 (pre-155 only as chainId 0x0, behind a setting)
    ACCESS_LIST = 1  # EIP-2930
    DYNAMIC_FEE = 2  # EIP-1559
    BLOB = 3  # EIP-4844
    SET_CODE = 4  # EIP-7702


LEGACY, ACCESS_LIST, DYNAMIC_FEE, BLOB, SET_CODE = TxType


SUPPORTED_TYPES = (LEGACY, ACCESS_LIST, DYNAMIC_FEE, BLOB, SET_CODE)


DYNAMIC_FEE_TYPES = (DYNAMIC_FEE, BLOB, SET_CODE)


MAX_UINT64 = 2**64 - 1


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


def choose_type(req: TxRequest, *, node_has_base_fee: bool) -> TxType:
    """The transaction type: `type` when given, else from the fields, else from the node.

    Raises InvalidParams when the fields contradict the type (they would be silently dropped).
    """
    tx_type = _type_of(req, node_has_base_fee)
    _check_fields_for(req, tx_type)
    return tx_type


def _has_1559_fees(req: TxRequest) -> bool:
    return req.max_fee_per_gas is not None or req.max_priority_fee_per_gas is not None


def _type_of(req: TxRequest, node_has_base_fee: bool) -> TxType:
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
        return TxType(req.type)
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
