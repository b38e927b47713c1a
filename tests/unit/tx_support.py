"""Fixtures the transaction tests share: a known key, a request builder, a fake node and clock."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from eth_account import Account

from signer_proxy.eth.tx_request import (
    TxRequest,
)

PRIVATE_KEY = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")


SENDER = Account.from_key(PRIVATE_KEY).address


TO = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"


def _req(**fields: Any) -> TxRequest:
    return TxRequest(sender=SENDER, **fields)


Answer = Any | Callable[[Any], Any]


class FakeNode:
    """An `Upstream` with scripted answers per method; records every call in order."""

    def __init__(self, **answers: Answer) -> None:
        self.answers: dict[str, Answer] = {
            "eth_chainId": "0x1",
            "eth_getBlockByNumber": {"number": "0x10", "baseFeePerGas": "0x64"},
            "eth_estimateGas": "0x5208",
            "eth_feeHistory": self._fee_history,
            "eth_maxPriorityFeePerGas": "0x2",
            "eth_gasPrice": "0x3b9aca00",
            **answers,
        }
        self.calls: list[tuple[str, Any]] = []

    @staticmethod
    def _fee_history(params: Any) -> Any:
        if params[2]:  # reward percentiles asked: the tip fallback
            return {
                "baseFeePerGas": ["0x64"] * 6,
                "reward": [["0x5"], ["0x1"], ["0x9"], ["0x3"], ["0x7"]],
            }
        return {"oldestBlock": "0x10", "baseFeePerGas": ["0x64", "0x70"]}

    @property
    def methods(self) -> list[str]:
        return [method for method, _ in self.calls]

    async def call(self, method: str, params: Any) -> Any:
        self.calls.append((method, params))
        answer = self.answers[method]
        if isinstance(answer, Exception):
            raise answer
        return answer(params) if callable(answer) else answer

    async def forward(self, body: bytes) -> bytes:
        raise AssertionError("fill never forwards")
