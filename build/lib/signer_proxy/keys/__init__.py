"""Signing keys: the `Signer` seam and the address → signer registry."""

from __future__ import annotations

from signer_proxy.keys.registry import KeyRegistry
from signer_proxy.keys.signer import Signer

__all__ = ["KeyRegistry", "Signer"]
