"""Signing keys: the `Signer` seam, the address → signer registry, and the backends (AWS KMS,
PKCS#11, keystores) that load them."""

from __future__ import annotations

from signer_proxy.keys.registry import KeyRegistry
from signer_proxy.keys.signer import Signer

__all__ = ["KeyRegistry", "Signer"]
