"""policy: amounts and selectors as operators write them, each rule's allow and deny, client
scopes, the policy file's errors, and binding key references to loaded keys."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from signer_proxy.access.policy import (
    ClientScope,
    Policy,
    RateLimit,
    Rules,
    Scope,
    authorization_denial,
    key_denial,
    load_policy,
    message_denial,
    parse_amount,
    parse_policy,
    parse_rules,
    parse_selector,
    transaction_denial,
)
from signer_proxy.errors import ConfigError
from signer_proxy.eth.ecdsa import keccak256
from signer_proxy.eth.tx_encoding import UnsignedTx

ROOT = Path(__file__).resolve().parents[3]
TO = "0x000000000000000000000000000000000000dEaD"
OTHER = "0x1111111111111111111111111111111111111111"
TRANSFER = bytes.fromhex("a9059cbb")
APPROVE = bytes.fromhex("095ea7b3")
GWEI = 10**9
ETHER = 10**18

TX = UnsignedTx(
    type=2,
    chain_id=1,
    nonce=0,
    gas=50_000,
    to=TO,
    value=ETHER,
    data=TRANSFER + b"\x00" * 64,
    max_fee_per_gas=30 * GWEI,
    max_priority_fee_per_gas=2 * GWEI,
)
LEGACY = replace(TX, type=0, gas_price=40 * GWEI, max_fee_per_gas=0, max_priority_fee_per_gas=0)


@pytest.mark.parametrize(
    ("value", "wei"),
    [
        pytest.param(0, 0, id="zero"),
        pytest.param(21000, 21000, id="int"),
        pytest.param("0x10", 16, id="hex"),
        pytest.param("1000", 1000, id="decimal-string"),
        pytest.param("30 gwei", 30 * GWEI, id="gwei"),
        pytest.param("1.5 ether", 15 * 10**17, id="ether"),
        pytest.param("2ETH", 2 * ETHER, id="eth-no-space"),
        pytest.param("0.000000001 ether", GWEI, id="tiny-ether"),
        pytest.param("7 wei", 7, id="wei"),
    ],
)
def test_parse_amount(value: Any, wei: int) -> None:
    assert parse_amount(value, "max_value") == wei


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        pytest.param(1.5, "write an amount", id="float"),
        pytest.param(True, "must be an amount", id="bool"),
        pytest.param(-1, "must not be negative", id="negative"),
        pytest.param("1.5 wei", "less than one wei", id="fractional-wei"),
        pytest.param("ten ether", "write an amount", id="words"),
        pytest.param("1 finney", "write an amount", id="unknown-unit"),
        pytest.param("0xzz", "write an amount", id="bad-hex"),
    ],
)
def test_parse_amount_refusals_name_the_setting(value: Any, fragment: str) -> None:
    with pytest.raises(ConfigError, match=r"clients\.ci\.rules\.max_value") as raised:
        parse_amount(value, "clients.ci.rules.max_value")
    assert fragment in str(raised.value)


@pytest.mark.parametrize(
    ("text", "selector"),
    [
        pytest.param("0xa9059cbb", TRANSFER, id="hex"),
        pytest.param("transfer(address,uint256)", TRANSFER, id="signature"),
        pytest.param("transfer(address, uint256)", TRANSFER, id="signature-with-space"),
        pytest.param("approve(address,uint256)", APPROVE, id="approve"),
    ],
)
def test_parse_selector(text: str, selector: bytes) -> None:
    assert parse_selector(text, "selectors[0]") == selector


@pytest.mark.parametrize("text", ["0xa9059c", "transfer", "a9059cbb", 42])
def test_parse_selector_refuses(text: Any) -> None:
    with pytest.raises(ConfigError, match="selectors\\[0\\]"):
        parse_selector(text, "selectors[0]")


# --- each transaction rule, allow and deny ----------------------------------------------------


@pytest.mark.parametrize(
    ("rules", "tx", "rule"),
    [
        pytest.param(Rules(), TX, None, id="no-rules"),
        pytest.param(Rules(chain_ids=frozenset({1, 10})), TX, None, id="chain-allowed"),
        pytest.param(Rules(chain_ids=frozenset({10})), TX, "chain_ids", id="chain-denied"),
        pytest.param(
            Rules(chain_ids=frozenset({1})),
            replace(LEGACY, chain_id=0),
            "chain_ids",
            id="pre-eip155-denied-by-chain-ids",
        ),
        pytest.param(Rules(to_allowlist=frozenset({TO.lower()})), TX, None, id="to-allowed"),
        pytest.param(
            Rules(to_allowlist=frozenset({OTHER})), TX, "to_allowlist", id="to-not-allowed"
        ),
        pytest.param(Rules(to_denylist=frozenset({OTHER})), TX, None, id="to-not-denied"),
        pytest.param(Rules(to_denylist=frozenset({TO.lower()})), TX, "to_denylist", id="to-denied"),
        pytest.param(
            Rules(to_allowlist=frozenset({OTHER})),
            replace(TX, to=None),
            None,
            id="allowlist-leaves-creation-to-its-rule",
        ),
        pytest.param(Rules(contract_creation=True), replace(TX, to=None), None, id="create-ok"),
        pytest.param(
            Rules(contract_creation=False),
            replace(TX, to=None),
            "contract_creation",
            id="create-denied",
        ),
        pytest.param(Rules(contract_creation=False), TX, None, id="call-ok-without-creation"),
        pytest.param(Rules(max_value=ETHER), TX, None, id="value-at-limit"),
        pytest.param(Rules(max_value=ETHER - 1), TX, "max_value", id="value-over"),
        pytest.param(Rules(max_gas=50_000), TX, None, id="gas-at-limit"),
        pytest.param(Rules(max_gas=49_999), TX, "max_gas", id="gas-over"),
        pytest.param(Rules(max_fee_per_gas=30 * GWEI), TX, None, id="fee-at-limit"),
        pytest.param(Rules(max_fee_per_gas=29 * GWEI), TX, "max_fee_per_gas", id="fee-over"),
        pytest.param(
            Rules(max_fee_per_gas=39 * GWEI), LEGACY, "max_fee_per_gas", id="legacy-gas-price"
        ),
        pytest.param(Rules(max_fee_per_gas=40 * GWEI), LEGACY, None, id="legacy-at-limit"),
        pytest.param(Rules(max_priority_fee_per_gas=2 * GWEI), TX, None, id="tip-at-limit"),
        pytest.param(
            Rules(max_priority_fee_per_gas=GWEI), TX, "max_priority_fee_per_gas", id="tip-over"
        ),
        pytest.param(Rules(max_priority_fee_per_gas=1), LEGACY, None, id="tip-not-in-legacy"),
        pytest.param(Rules(selectors=frozenset({TRANSFER})), TX, None, id="selector-allowed"),
        pytest.param(Rules(selectors=frozenset({APPROVE})), TX, "selectors", id="selector-denied"),
        pytest.param(
            Rules(selectors=frozenset({TRANSFER})),
            replace(TX, data=TRANSFER[:3]),
            "selectors",
            id="short-calldata-denied",
        ),
        pytest.param(
            Rules(selectors=frozenset({APPROVE})),
            replace(TX, data=b""),
            None,
            id="plain-transfer-calls-no-function",
        ),
        pytest.param(
            Rules(selectors=frozenset({APPROVE})),
            replace(TX, to=None),
            None,
            id="creation-initcode-is-no-selector",
        ),
    ],
)
def test_transaction_rules(rules: Rules, tx: UnsignedTx, rule: str | None) -> None:
    denial = transaction_denial([Scope("client ci", rules)], tx)

    if rule is None:
        assert denial is None
    else:
        assert denial is not None
        assert (denial.rule, denial.scope) == (rule, "client ci")
        assert denial.message.startswith(f"policy rule {rule} (client ci) refused: ")
        assert denial.to_error_object()["data"] == {"rule": rule, "scope": "client ci"}


def test_transaction_denial_messages_say_what_and_the_limit() -> None:
    denial = transaction_denial([Scope("defaults", Rules(max_value=ETHER // 2))], TX)
    assert denial is not None
    assert "value 1 ether (1000000000000000000 wei) is over the limit 0.5 ether" in denial.message


def test_every_scope_must_allow_and_the_first_refusal_is_named() -> None:
    scopes = [
        Scope("defaults", Rules(max_value=10 * ETHER)),
        Scope(f"key {TO}", Rules(max_gas=40_000)),
        Scope("client ci", Rules(max_value=0)),
    ]
    denial = transaction_denial(scopes, TX)
    assert denial is not None
    assert (denial.rule, denial.scope) == ("max_gas", f"key {TO}")
    assert transaction_denial(scopes[:1], TX) is None


@pytest.mark.parametrize(
    ("rules", "chain_id", "rule"),
    [
        pytest.param(Rules(), None, None, id="allowed"),
        pytest.param(Rules(message_signing=False), None, "message_signing", id="switched-off"),
        pytest.param(Rules(chain_ids=frozenset({1})), 1, None, id="typed-data-chain-ok"),
        pytest.param(Rules(chain_ids=frozenset({1})), 5, "chain_ids", id="typed-data-chain"),
        pytest.param(Rules(chain_ids=frozenset({1})), None, None, id="no-domain-chain"),
    ],
)
def test_message_rules(rules: Rules, chain_id: int | None, rule: str | None) -> None:
    denial = message_denial([Scope("client dapp", rules)], chain_id)
    assert (denial.rule if denial else None) == rule


@pytest.mark.parametrize(
    ("rules", "chain_id", "rule"),
    [
        pytest.param(Rules(), 0, None, id="allowed"),
        pytest.param(
            Rules(authorization_signing=False), 1, "authorization_signing", id="switched-off"
        ),
        pytest.param(Rules(chain_ids=frozenset({1})), 1, None, id="chain-ok"),
        pytest.param(Rules(chain_ids=frozenset({1})), 0, "chain_ids", id="any-chain-denied"),
    ],
)
def test_authorization_rules(rules: Rules, chain_id: int, rule: str | None) -> None:
    denial = authorization_denial([Scope("defaults", rules)], chain_id)
    assert (denial.rule if denial else None) == rule
    if denial is not None and chain_id == 0:
        assert "0 (valid on every chain)" in denial.message


# --- client scopes ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scope", "method", "rule"),
    [
        pytest.param(ClientScope("c"), "eth_sign", None, id="unrestricted"),
        pytest.param(ClientScope("c", read_only=True), "eth_call", None, id="ro-call"),
        pytest.param(ClientScope("c", read_only=True), "eth_getBalance", None, id="ro-get"),
        pytest.param(ClientScope("c", read_only=True), "eth_accounts", None, id="ro-accounts"),
        pytest.param(ClientScope("c", read_only=True), "net_version", None, id="ro-net"),
        pytest.param(
            ClientScope("c", read_only=True), "eth_sendTransaction", "read_only", id="ro-send"
        ),
        pytest.param(
            ClientScope("c", read_only=True), "eth_sendRawTransaction", "read_only", id="ro-raw"
        ),
        pytest.param(ClientScope("c", read_only=True), "personal_sign", "read_only", id="ro-ps"),
        pytest.param(ClientScope("c", read_only=True), "anvil_mine", "read_only", id="ro-anvil"),
        pytest.param(
            ClientScope("c", deny_methods=("eth_sign",)), "eth_sign", "deny_methods", id="deny"
        ),
        pytest.param(
            ClientScope("c", deny_methods=("eth_sign",)), "personal_sign", None, id="deny-exact"
        ),
        pytest.param(
            ClientScope("c", deny_methods=("eth_signTypedData*",)),
            "eth_signTypedData_v4",
            "deny_methods",
            id="deny-pattern",
        ),
        pytest.param(
            ClientScope("c", methods=("eth_sendTransaction", "eth_get*")),
            "eth_getCode",
            None,
            id="methods-pattern",
        ),
        pytest.param(
            ClientScope("c", methods=("eth_sendTransaction",)),
            "eth_sign",
            "methods",
            id="not-in-methods",
        ),
        pytest.param(
            ClientScope("c", methods=("eth_*",), deny_methods=("eth_sign",)),
            "eth_sign",
            "deny_methods",
            id="deny-wins",
        ),
    ],
)
def test_client_method_scope(scope: ClientScope, method: str, rule: str | None) -> None:
    denial = scope.method_denial(method)
    assert (denial.rule if denial else None) == rule
    if denial is not None:
        assert method in denial.message
        assert denial.scope == "client c"


def test_client_key_scope() -> None:
    scope = ClientScope("ci", keys=(TO.lower(),))
    assert key_denial(scope, TO) is None
    denial = key_denial(scope, OTHER)
    assert denial is not None and denial.rule == "keys"
    assert key_denial(ClientScope("any"), OTHER) is None


def test_policy_scopes_in_check_order() -> None:
    policy = Policy(
        Rules(max_gas=1),
        {TO.lower(): Rules(max_gas=2)},
        {"ci": ClientScope("ci", rules=Rules(max_gas=3))},
    )
    assert [s.label for s in policy.scopes("ci", TO)] == ["defaults", f"key {TO}", "client ci"]
    assert [s.label for s in policy.scopes("stranger", OTHER)] == ["defaults"]
    assert policy.client("stranger") == ClientScope("stranger")


# --- the policy file ----------------------------------------------------------------------

FULL_POLICY = {
    "defaults": {"chain_ids": [1, 10], "max_value": "5 ether", "contract_creation": False},
    "keys": {"alias/treasury": {"daily_value_budget": "20 ether", "message_signing": False}},
    "clients": {
        "ci": {
            "keys": ["alias/treasury"],
            "deny_methods": ["eth_sign"],
            "rate_limit": {"per_second": 5, "burst": 10},
            "client_cert_names": ["ci.example.com"],
            "rules": {
                "contract_creation": True,
                "to_allowlist": [TO],
                "selectors": ["transfer(address,uint256)"],
                "max_fee_per_gas": "200 gwei",
                "max_priority_fee_per_gas": "5 gwei",
                "max_gas": 3_000_000,
                "authorization_signing": False,
            },
        },
        "reader": {"read_only": True},
    },
}


def test_parse_policy_reads_every_field() -> None:
    policy = parse_policy(FULL_POLICY)

    assert policy.defaults == Rules(
        chain_ids=frozenset({1, 10}), max_value=5 * ETHER, contract_creation=False
    )
    assert policy.keys["alias/treasury"].daily_value_budget == 20 * ETHER
    ci = policy.clients["ci"]
    assert ci.keys == ("alias/treasury",)
    assert ci.rate_limit == RateLimit(5.0, 10)
    assert ci.rules.selectors == {TRANSFER}
    assert ci.rules.to_allowlist == {TO.lower()}
    assert ci.rules.max_fee_per_gas == 200 * GWEI
    assert ci.rules.authorization_signing is False
    assert policy.clients["reader"].read_only is True
    assert policy.cert_clients() == {"ci.example.com": "ci"}


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        pytest.param({"rules": {}}, "has unknown entries rules", id="top-level-typo"),
        pytest.param(
            {"defaults": {"max_vaule": 1}}, "defaults has unknown entries max_vaule", id="rule"
        ),
        pytest.param({"defaults": {"chain_ids": ["one"]}}, "defaults.chain_ids", id="chain-ids"),
        pytest.param({"defaults": {"to_denylist": ["0x12"]}}, "is not a 0x address", id="addr"),
        pytest.param({"defaults": {"max_gas": "lots"}}, "defaults.max_gas", id="gas"),
        pytest.param({"defaults": {"message_signing": "no"}}, "true or false", id="bool"),
        pytest.param({"clients": {"x": {"limits": 1}}}, "clients.x has unknown", id="client"),
        pytest.param({"clients": {"bad name": {}}}, "not a valid client name", id="name"),
        pytest.param(
            {"clients": {"x": {"rate_limit": {"per_second": 0}}}}, "per_second", id="rate"
        ),
        pytest.param(
            {"clients": {"x": {"rate_limit": {"per_second": 1, "burst": 0}}}}, "burst", id="burst"
        ),
        pytest.param({"clients": {"x": {"methods": "eth_*"}}}, "list of strings", id="methods"),
        pytest.param(
            {"clients": {"a": {"client_cert_names": ["n"]}, "b": {"client_cert_names": ["n"]}}},
            "mapped to both a and b",
            id="cert-name-twice",
        ),
        pytest.param({"keys": []}, "keys must be a mapping", id="keys-list"),
    ],
)
def test_parse_policy_errors_name_the_entry(change: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_policy(change, "policy file p.yaml")
    assert fragment in str(raised.value)
    assert "p.yaml" in str(raised.value)


def test_parse_rules_defaults_are_permissive() -> None:
    assert parse_rules(None, "defaults") == Rules()


def test_bind_resolves_key_references_to_addresses() -> None:
    names = {"alias/treasury": TO, TO.lower(): TO}
    policy = parse_policy(FULL_POLICY).bind(lambda ref: names.get(ref))

    assert set(policy.keys) == {TO.lower()}
    assert policy.clients["ci"].keys == (TO.lower(),)
    assert policy.clients["reader"].keys is None


def test_bind_refuses_a_key_that_is_not_loaded() -> None:
    with pytest.raises(ConfigError, match=r"keys\.alias/treasury names the key 'alias/treasury'"):
        parse_policy(FULL_POLICY).bind(lambda ref: None)


def test_load_policy_empty_path_is_no_rules(tmp_path: Path) -> None:
    assert load_policy("") == Policy()
    with pytest.raises(ConfigError, match="cannot be read"):
        load_policy(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("defaults: [")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_policy(str(bad))


POLICY_EXAMPLES = sorted((ROOT / "config" / "auth").glob("policy-*.yaml"))


def test_policy_examples_exist() -> None:
    assert len(POLICY_EXAMPLES) >= 2


@pytest.mark.parametrize("path", POLICY_EXAMPLES, ids=lambda p: p.name)
def test_policy_example_loads(path: Path) -> None:
    policy = load_policy(str(path))
    raw = yaml.safe_load(path.read_text())
    assert set(policy.clients) == set(raw.get("clients", {}))
    assert policy != Policy()


def test_api_keys_example_loads() -> None:
    from signer_proxy.access.auth import load_api_keys

    keys = load_api_keys(str(ROOT / "config" / "auth" / "api-keys.yaml"))
    assert set(keys) == {"payouts", "monitoring"}
    assert len(keys["monitoring"]) == 2


def test_selector_of_transfer_is_keccak_of_its_signature() -> None:
    assert keccak256(b"transfer(address,uint256)")[:4] == TRANSFER
