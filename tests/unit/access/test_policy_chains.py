"""The policy's chain scoping: clients limited to chains, rules for one chain, and names
checked against the chains served."""

from __future__ import annotations

import pytest

from signer_proxy.access.policy import parse_policy, transaction_denial
from signer_proxy.errors import ConfigError
from signer_proxy.eth.tx_encoding import UnsignedTx
from signer_proxy.eth.tx_request import TxType

ADDRESS = "0x71C7656EC7ab88b098defB751B7401B5f6d8976F"

POLICY = parse_policy(
    {
        "clients": {"bot": {"chains": ["base"]}, "ops": {}},
        "chains": {"mainnet": {"max_value": "1 ether"}},
    }
)


def tx(value: int) -> UnsignedTx:
    return UnsignedTx(
        type=TxType.DYNAMIC_FEE, chain_id=1, nonce=0, gas=21000, to=ADDRESS, value=value,
        data=b"", max_fee_per_gas=10, max_priority_fee_per_gas=1,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("client", "chain", "refused"),
    [("bot", "base", False), ("bot", "mainnet", True), ("ops", "mainnet", False)],
)
def test_a_client_with_chains_is_refused_on_the_others(
    client: str, chain: str, refused: bool
) -> None:
    denial = POLICY.client(client).chain_denial(chain)
    assert (denial is not None) == refused
    if denial is not None:
        assert denial.rule == "chains"
        assert "client bot may not use chain mainnet; its chains are base" in denial.message


def test_a_chains_rules_apply_on_that_chain_only() -> None:
    on_mainnet = POLICY.scopes("ops", ADDRESS, "mainnet")
    on_base = POLICY.scopes("ops", ADDRESS, "base")
    assert [s.label for s in on_mainnet] == ["defaults", "chain mainnet", "client ops"]
    assert [s.label for s in on_base] == ["defaults", "client ops"]
    denial = transaction_denial(on_mainnet, tx(2 * 10**18))
    assert denial is not None and denial.scope == "chain mainnet"
    assert transaction_denial(on_base, tx(2 * 10**18)) is None


@pytest.mark.parametrize(
    ("served", "fragment"),
    [
        (["base"], "chains.mainnet names the chain 'mainnet', which is not served"),
        (["mainnet"], "clients.bot.chains names the chain 'base'"),
    ],
)
def test_a_chain_the_proxy_does_not_serve_is_a_config_error(
    served: list[str], fragment: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        POLICY.check_chains(served)
    assert fragment in str(raised.value)
    POLICY.check_chains(["mainnet", "base"])  # both served: fine


def test_chains_entries_are_checked_like_other_rules() -> None:
    with pytest.raises(ConfigError, match=r"chains\.mainnet has unknown entries max_valu"):
        parse_policy({"chains": {"mainnet": {"max_valu": 1}}})
    with pytest.raises(ConfigError, match=r"clients\.bot\.chains must be a list of strings"):
        parse_policy({"clients": {"bot": {"chains": "base"}}})
