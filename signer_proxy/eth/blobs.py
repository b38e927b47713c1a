"""EIP-4844 blobs: KZG commitments, proofs and versioned hashes with ckzg; CPU-bound, no I/O.

The trusted setup is the mainnet ceremony's `kzg_trusted_setup.txt` that eth-account ships
(ckzg's wheel carries none). Loading it takes ~2 s, so it is loaded once, on first use.
Computing one blob's cell proofs takes ~70 ms: async callers run `build_sidecar` in a thread.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from typing import Any

import ckzg

from signer_proxy.errors import InvalidParams

BYTES_PER_BLOB = 4096 * 32
VERSIONED_HASH_VERSION_KZG = 0x01
CELLS_PER_EXT_BLOB = 128

_setup: Any = None
_setup_lock = threading.Lock()


class SidecarForm(StrEnum):
    """Which network form a blob transaction's sidecar takes."""

    # EIP-7594 (Osaka/Fusaka, mainnet since December 2025): wrapper version 1, 128 cell
    # proofs per blob. eth-account produces this form.
    EIP7594 = "eip7594"
    # EIP-4844 (Cancun/Prague): one blob proof per blob.
    EIP4844 = "eip4844"


@dataclass(frozen=True, slots=True)
class BlobSidecar:
    """What travels with a blob transaction to the node but is not signed."""

    form: SidecarForm
    blobs: tuple[bytes, ...]
    commitments: tuple[bytes, ...]
    proofs: tuple[bytes, ...]  # cell proofs (128 per blob) for EIP-7594, one per blob for 4844

    @property
    def versioned_hashes(self) -> tuple[bytes, ...]:
        return tuple(versioned_hash(c) for c in self.commitments)


def trusted_setup_path() -> str:
    """The mainnet KZG trusted setup file shipped inside eth-account."""
    package = "eth_account.typed_transactions.blob_transactions"
    return str(resources.files(package).joinpath("kzg_trusted_setup.txt"))


def trusted_setup() -> Any:
    """The loaded KZG settings, loaded on first call and kept for the process."""
    global _setup
    if _setup is None:
        with _setup_lock:
            if _setup is None:
                _setup = ckzg.load_trusted_setup(trusted_setup_path(), 0)
    return _setup


def versioned_hash(commitment: bytes) -> bytes:
    """0x01 ‖ sha256(commitment)[1:] (EIP-4844's kzg_to_versioned_hash)."""
    return bytes([VERSIONED_HASH_VERSION_KZG]) + hashlib.sha256(commitment).digest()[1:]


def build_sidecar(blobs: tuple[bytes, ...], form: SidecarForm) -> BlobSidecar:
    """Commitments and proofs for `blobs`; InvalidParams naming the blob that is not valid."""
    setup = trusted_setup()
    commitments, proofs = [], []
    for index, blob in enumerate(blobs):
        if len(blob) != BYTES_PER_BLOB:
            raise InvalidParams(
                f"blobs[{index}] is {len(blob)} bytes; a blob is exactly {BYTES_PER_BLOB} "
                "bytes (4096 field elements of 32 bytes): pad your data"
            )
        try:
            commitment = ckzg.blob_to_kzg_commitment(blob, setup)
            if form is SidecarForm.EIP7594:
                _, cell_proofs = ckzg.compute_cells_and_kzg_proofs(blob, setup)
                proofs.extend(cell_proofs)
            else:
                proofs.append(ckzg.compute_blob_kzg_proof(blob, commitment, setup))
        except RuntimeError:  # ckzg says only "failed": a 32-byte word is not a field element
            raise InvalidParams(
                f"blobs[{index}] is not a valid blob: every 32-byte word must be below the "
                "BLS12-381 field modulus (keep each word's first byte 0x00 to be safe)"
            ) from None
        commitments.append(commitment)
    return BlobSidecar(form, tuple(blobs), tuple(commitments), tuple(proofs))
