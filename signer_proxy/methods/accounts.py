"""eth_accounts and eth_requestAccounts: the addresses this proxy holds keys for (those the
calling client may use, when its scope names keys)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from signer_proxy.access.gate import SigningGate
from signer_proxy.jsonrpc import CallContext
from signer_proxy.keys import KeyRegistry


class AccountMethods:
    def __init__(
        self, registry: Callable[[], KeyRegistry], gate: SigningGate | None = None
    ) -> None:
        self._registry = registry
        self._gate = gate or SigningGate()

    async def eth_accounts(self, params: Any, context: CallContext) -> list[str]:
        return self._gate.visible_accounts(context.client, self._registry().addresses)

    eth_requestAccounts = eth_accounts
