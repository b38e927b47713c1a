"""Transactions as bytes: the unsigned and signed forms, signing payloads and digests, and
the network encoding. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from signer_proxy.errors import InvalidParams
from signer_proxy.eth import rlp_encoding
from signer_proxy.eth.blobs import (
    BlobSidecar,
    SidecarForm,
)
from signer_proxy.eth.ecdsa import Signature, keccak256
from signer_proxy.eth.tx_request import (
    ACCESS_LIST,
    BLOB,
    DYNAMIC_FEE_TYPES,
    LEGACY,
    NO_CHAIN_ID,
    SET_CODE,
    AccessList,
    Authorization,
    TxType,
)

# EIP-7702: the magic byte in front of an authorization's RLP when it is signed.
AUTHORIZATION_MAGIC = 0x05


def authorization_digest(chain_id: int, address: str, nonce: int) -> bytes:
    """keccak(0x05 ‖ rlp([chain_id, address, nonce])): what an EIP-7702 authority signs."""
    return keccak256(
        bytes([AUTHORIZATION_MAGIC]) + _rlp([chain_id, bytes.fromhex(address[2:]), nonce])
    )


@dataclass(frozen=True, slots=True)
class UnsignedTx:
    """Every field a signature covers, filled in; `type` decides which of the fee fields count."""

    type: TxType
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
