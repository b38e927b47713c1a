"""eth_accounts and eth_requestAccounts: the addresses this proxy holds keys for."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from signer_proxy.jsonrpc import CallContext
from signer_proxy.keys import KeyRegistry


class AccountMethods:
    def __init__(self, registry: Callable[[], KeyRegistry]) -> None:
        self._registry = registry

    async def eth_accounts(self, params: Any, context: CallContext) -> list[str]:
        return list(self._registry().addresses)

    eth_requestAccounts = eth_accounts
