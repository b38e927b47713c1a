"""Give every dev address a balance on the node: set it where the node allows, else transfer.

Tried in order, the first the node accepts is used for all addresses:
`anvil_setBalance` (anvil), `hardhat_setBalance` (Hardhat Network), then a transfer with
`eth_sendTransaction` from the node's first unlocked account (the embedded dev chain's
prefunded account; geth --dev). A balance already at or above the target is left alone, so a
restart never takes funds away.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from signer_proxy.errors import NodeRejected, SignerProxyError
from signer_proxy.eth.hexdata import parse_quantity
from signer_proxy.upstream.base import Upstream

log = logging.getLogger(__name__)

FUNDING_WEI = 1000 * 10**18
SET_BALANCE_METHODS = ("anvil_setBalance", "hardhat_setBalance")
RECEIPT_WAIT_SECONDS = 30.0


class FundingFailed(Exception):
    """The node offers no way to fund the addresses; the message says what was tried."""


@dataclass(frozen=True)
class Funded:
    """How the addresses were funded, and each one's balance afterwards (wei)."""

    method: str
    balances: tuple[int, ...]


def is_unsupported(exc: NodeRejected) -> bool:
    """Does this node error mean "no such method here" (rather than a real refusal)?"""
    text = exc.message.lower()
    return exc.node_code == -32601 or any(
        words in text
        for words in ("not found", "does not exist", "not supported", "unsupported",
                      "not implemented", "not available")
    )  # fmt: skip


async def balance_of(node: Upstream, address: str) -> int:
    return parse_quantity(
        await node.call("eth_getBalance", [address, "latest"]), f"the balance of {address}"
    )


async def fund(node: Upstream, addresses: Sequence[str], wei: int = FUNDING_WEI) -> Funded:
    """Bring each address to at least `wei`; FundingFailed when the node allows no way."""
    balances = [await balance_of(node, a) for a in addresses]
    short = [(a, b) for a, b in zip(addresses, balances, strict=True) if b < wei]
    if not short:
        return Funded("already funded", tuple(balances))
    tried: list[str] = []
    for method in SET_BALANCE_METHODS:
        try:
            for address, _ in short:
                await node.call(method, [address, hex(wei)])
        except NodeRejected as exc:
            if not is_unsupported(exc):
                raise
            tried.append(method)
            continue
        return Funded(method, tuple([await balance_of(node, a) for a in addresses]))
    funder = await _unlocked_account(node)
    if funder is None:
        tried.append("eth_sendTransaction (the node has no unlocked account)")
        raise FundingFailed(f"the node accepts none of: {', '.join(tried)}")
    for address, balance in short:
        tx_hash = await node.call(
            "eth_sendTransaction", [{"from": funder, "to": address, "value": hex(wei - balance)}]
        )
        await _wait_for_receipt(node, tx_hash)
    return Funded(f"transfer from {funder}", tuple([await balance_of(node, a) for a in addresses]))


async def fund_or_explain(node: Upstream, addresses: Sequence[str]) -> tuple[str, tuple[int, ...]]:
    """Fund, then (what the banner says about it, each balance); a node that allows no way
    is reported, not fatal: the proxy is still useful and the user can fund the addresses."""
    try:
        funded = await fund(node, addresses)
    except FundingFailed as exc:
        log.warning("could not fund the dev addresses: %s", exc)
        balances = tuple([await balance_of(node, address) for address in addresses])
        return f"NOT FUNDED ({exc}): fund the addresses yourself", balances
    return f"{FUNDING_WEI // 10**18} ETH each via {funded.method}", funded.balances


async def _unlocked_account(node: Upstream) -> str | None:
    try:
        accounts = await node.call("eth_accounts", [])
    except SignerProxyError:
        return None
    return accounts[0] if isinstance(accounts, list) and accounts else None


async def _wait_for_receipt(node: Upstream, tx_hash: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RECEIPT_WAIT_SECONDS
    while await node.call("eth_getTransactionReceipt", [tx_hash]) is None:
        if loop.time() > deadline:
            raise FundingFailed(f"funding transaction {tx_hash} was not mined within "
                                f"{RECEIPT_WAIT_SECONDS:.0f} s")  # fmt: skip
        await asyncio.sleep(0.2)
