"""signer_getTransactionStatus, signer_speedUpTransaction, signer_cancelTransaction: the
tracker's JSON-RPC extensions (docs/signing.md). Each takes one transaction hash: the one the
client was given, or any replacement's."""

from __future__ import annotations

import re
from typing import Any

from signer_proxy.access.gate import SigningGate
from signer_proxy.errors import InvalidParams
from signer_proxy.jsonrpc import CallContext
from signer_proxy.tracking.tracker import Tracker, status_denial

_HASH_RE = re.compile(r"^0x[0-9a-fA-F]{64}$")


def _one_hash(params: Any, method: str) -> str:
    if (
        isinstance(params, list)
        and len(params) == 1
        and isinstance(params[0], str)
        and _HASH_RE.match(params[0])
    ):
        return params[0].lower()
    raise InvalidParams(
        f"{method} takes one parameter, a transaction hash (0x and 64 hex digits): "
        f'["0x…"]; got {str(params)[:100]}'
    )


class TrackingMethods:
    def __init__(self, tracker: Tracker, gate: SigningGate) -> None:
        self._tracker = tracker
        self._gate = gate

    async def signer_getTransactionStatus(
        self, params: Any, context: CallContext
    ) -> dict[str, Any] | None:
        """The tracked state of the transaction; null if the proxy did not send it."""
        tx_hash = _one_hash(params, "signer_getTransactionStatus")
        record = await self._tracker.find(tx_hash)
        if record is None:
            return None
        denial = status_denial(self._gate, context, record)
        if denial is not None:
            raise denial
        return (await self._tracker.with_status(record)).status_for(tx_hash)

    async def signer_speedUpTransaction(self, params: Any, context: CallContext) -> dict[str, Any]:
        """Replace a pending transaction now with higher fees (within the policy's ceilings)."""
        tx_hash = _one_hash(params, "signer_speedUpTransaction")
        record = await self._tracker.replace(tx_hash, context, "speed_up")
        return record.status_for(record.current)

    async def signer_cancelTransaction(self, params: Any, context: CallContext) -> dict[str, Any]:
        """Replace a pending transaction with a zero-value transfer to its sender, fees bumped."""
        tx_hash = _one_hash(params, "signer_cancelTransaction")
        record = await self._tracker.replace(tx_hash, context, "cancel")
        return record.status_for(record.current)
