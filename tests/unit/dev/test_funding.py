"""dev/funding: which way a node lets us fund the dev addresses, against a small fake node."""

from __future__ import annotations

from typing import Any

import pytest

from signer_proxy.dev.funding import (
    FUNDING_WEI,
    FundingFailed,
    fund,
    fund_or_explain,
    is_unsupported,
)
from signer_proxy.errors import NodeRejected

ADDRESSES = ["0x" + "aa" * 20, "0x" + "bb" * 20]


class FakeNode:
    """An Upstream that knows balances and the methods it is told to support."""

    def __init__(self, supports: set[str], accounts: list[str] | None = None) -> None:
        self.supports = supports
        self.accounts = accounts or []
        self.balances: dict[str, int] = {}
        self.calls: list[tuple[str, Any]] = []

    async def forward(self, body: bytes) -> bytes:
        raise AssertionError("not used")

    async def call(self, method: str, params: Any) -> Any:
        self.calls.append((method, params))
        if method == "eth_getBalance":
            return hex(self.balances.get(params[0], 0))
        if method == "eth_accounts":
            return self.accounts
        if method == "eth_getTransactionReceipt":
            return {"status": "0x1"}
        if method not in self.supports:
            raise NodeRejected(-32601, f"the method {method} does not exist/is not available")
        if method.endswith("_setBalance"):
            self.balances[params[0]] = int(params[1], 16)
            return None
        if method == "eth_sendTransaction":
            tx = params[0]
            self.balances[tx["to"]] = self.balances.get(tx["to"], 0) + int(tx["value"], 16)
            return "0x" + "cd" * 32
        raise AssertionError(method)


@pytest.mark.parametrize(
    ("supports", "accounts", "method"),
    [
        pytest.param({"anvil_setBalance", "hardhat_setBalance"}, [], "anvil_setBalance",
                     id="anvil-first"),
        pytest.param({"hardhat_setBalance"}, [], "hardhat_setBalance", id="hardhat"),
        pytest.param({"eth_sendTransaction"}, ["0xfunder"], "transfer from 0xfunder",
                     id="transfer"),
    ],
)  # fmt: skip
async def test_fund_uses_the_first_way_the_node_accepts(
    supports: set[str], accounts: list[str], method: str
) -> None:
    node = FakeNode(supports, accounts)
    funded = await fund(node, ADDRESSES)
    assert funded.method == method
    assert funded.balances == (FUNDING_WEI, FUNDING_WEI)


async def test_fund_tops_up_and_never_takes_funds_away() -> None:
    node = FakeNode({"eth_sendTransaction"}, ["0xfunder"])
    node.balances = {ADDRESSES[0]: 2 * FUNDING_WEI, ADDRESSES[1]: FUNDING_WEI - 5}
    funded = await fund(node, ADDRESSES)
    assert funded.balances == (2 * FUNDING_WEI, FUNDING_WEI)
    sends = [params for method, params in node.calls if method == "eth_sendTransaction"]
    assert sends == [[{"from": "0xfunder", "to": ADDRESSES[1], "value": hex(5)}]]


async def test_fund_skips_an_already_funded_node() -> None:
    node = FakeNode(set())
    node.balances = dict.fromkeys(ADDRESSES, FUNDING_WEI)
    assert (await fund(node, ADDRESSES)).method == "already funded"


async def test_fund_fails_naming_what_it_tried() -> None:
    with pytest.raises(FundingFailed) as failed:
        await fund(FakeNode(set()), ADDRESSES)
    message = str(failed.value)
    assert "anvil_setBalance" in message and "hardhat_setBalance" in message
    assert "no unlocked account" in message


async def test_fund_or_explain_reports_a_node_it_cannot_fund() -> None:
    node = FakeNode(set())
    node.balances = {ADDRESSES[0]: 3}
    funding, balances = await fund_or_explain(node, ADDRESSES)
    assert funding.startswith("NOT FUNDED (the node accepts none of: anvil_setBalance")
    assert funding.endswith("fund the addresses yourself")
    assert balances == (3, 0)


async def test_fund_or_explain_says_how() -> None:
    funding, balances = await fund_or_explain(FakeNode({"anvil_setBalance"}), ADDRESSES)
    assert funding == "1000 ETH each via anvil_setBalance"
    assert balances == (FUNDING_WEI, FUNDING_WEI)


async def test_fund_passes_on_a_real_refusal() -> None:
    class Refusing(FakeNode):
        async def call(self, method: str, params: Any) -> Any:
            if method == "anvil_setBalance":
                raise NodeRejected(-32000, "balance overflow")
            return await super().call(method, params)

    with pytest.raises(NodeRejected, match="balance overflow"):
        await fund(Refusing(set()), ADDRESSES)


@pytest.mark.parametrize(
    ("code", "message", "unsupported"),
    [
        pytest.param(-32601, "whatever", True, id="method-not-found-code"),
        pytest.param(-32000, "Method anvil_setBalance not found", True, id="not-found-text"),
        pytest.param(-32604, "the method does not exist/is not available", True, id="geth"),
        pytest.param(-32000, "insufficient funds", False, id="real-error"),
    ],
)
def test_is_unsupported(code: int, message: str, unsupported: bool) -> None:
    assert is_unsupported(NodeRejected(code, message)) is unsupported
