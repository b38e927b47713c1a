"""Signed transactions back into their fields: the inverse of tx_encoding for every type this
proxy signs, sidecar included. Pure. The tracker rebuilds a replacement (same nonce, higher
fees) from the raw bytes it sent, so nothing but those bytes has to be kept per transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import rlp

from signer_proxy.errors import InvalidParams
from signer_proxy.eth.blobs import BlobSidecar, SidecarForm
from signer_proxy.eth.ecdsa import keccak256
from signer_proxy.eth.tx_encoding import UnsignedTx
from signer_proxy.eth.tx_request import (
    ACCESS_LIST,
    BLOB,
    DYNAMIC_FEE,
    LEGACY,
    NO_CHAIN_ID,
    SET_CODE,
    Authorization,
    TxType,
)


@dataclass(frozen=True, slots=True)
class DecodedTx:
    """A signed transaction's fields (`tx`) and its hash (of the canonical form)."""

    tx: UnsignedTx
    hash: bytes


def _int(item: bytes) -> int:
    return int.from_bytes(item, "big")


def _to(item: bytes) -> str | None:
    return None if item == b"" else "0x" + item.hex()


def _access_list(items: list[Any]) -> tuple[tuple[str, tuple[bytes, ...]], ...]:
    return tuple(("0x" + addr.hex(), tuple(keys)) for addr, keys in items)


def _authorizations(items: list[Any]) -> tuple[Authorization, ...]:
    return tuple(
        Authorization(_int(c), "0x" + a.hex(), _int(n), _int(y), _int(r), _int(s))
        for c, a, n, y, r, s in items
    )


def decode_raw(raw: bytes) -> DecodedTx:
    """The fields of a raw signed transaction (network form); InvalidParams if it is none."""
    try:
        return _decode(raw)
    except (rlp.exceptions.DecodingError, ValueError, TypeError, IndexError) as exc:
        raise InvalidParams(f"not a signed transaction this proxy can read: {exc}") from None


def _decode(raw: bytes) -> DecodedTx:
    if not raw:
        raise ValueError("empty")
    if raw[0] >= 0xC0:  # legacy: an RLP list
        f = rlp.decode(raw)
        v = _int(f[6])
        chain_id = NO_CHAIN_ID if v in (27, 28) else (v - 35) // 2
        tx = UnsignedTx(
            type=LEGACY,
            chain_id=chain_id,
            nonce=_int(f[0]),
            gas_price=_int(f[1]),
            gas=_int(f[2]),
            to=_to(f[3]),
            value=_int(f[4]),
            data=f[5],
        )
        return DecodedTx(tx, keccak256(raw))
    tx_type = raw[0]
    body = rlp.decode(raw[1:])
    sidecar = None
    if tx_type == BLOB and isinstance(body[0], list):  # network form with its sidecar
        if len(body) == 5:
            _, version, blobs, commitments, proofs = body
            if _int(version) != 1:
                raise ValueError(f"unknown blob sidecar version {_int(version)}")
            form = SidecarForm.EIP7594
        else:
            _, blobs, commitments, proofs = body
            form = SidecarForm.EIP4844
        sidecar = BlobSidecar(form, tuple(blobs), tuple(commitments), tuple(proofs))
        body = body[0]
    canonical = bytes([tx_type]) + rlp.encode(body)
    if tx_type == ACCESS_LIST:
        tx = UnsignedTx(
            type=TxType(tx_type),
            chain_id=_int(body[0]),
            nonce=_int(body[1]),
            gas_price=_int(body[2]),
            gas=_int(body[3]),
            to=_to(body[4]),
            value=_int(body[5]),
            data=body[6],
            access_list=_access_list(body[7]),
        )
    elif tx_type in (DYNAMIC_FEE, BLOB, SET_CODE):
        extra: dict[str, Any] = {}
        if tx_type == BLOB:
            extra = {
                "max_fee_per_blob_gas": _int(body[9]),
                "blob_versioned_hashes": tuple(body[10]),
                "sidecar": sidecar,
            }
        elif tx_type == SET_CODE:
            extra = {"authorization_list": _authorizations(body[9])}
        tx = UnsignedTx(
            type=TxType(tx_type),
            chain_id=_int(body[0]),
            nonce=_int(body[1]),
            max_priority_fee_per_gas=_int(body[2]),
            max_fee_per_gas=_int(body[3]),
            gas=_int(body[4]),
            to=_to(body[5]),
            value=_int(body[6]),
            data=body[7],
            access_list=_access_list(body[8]),
            **extra,
        )
    else:
        raise ValueError(f"transaction type {tx_type} is not supported")
    return DecodedTx(tx, keccak256(canonical))
