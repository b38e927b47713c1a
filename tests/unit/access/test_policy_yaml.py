"""access/policy.py's YAML: unquoted 0x-hex (addresses, selectors) stays text."""

from __future__ import annotations

from pathlib import Path

from signer_proxy.access.policy import load_policy

ADDRESS = "0x00000000000000000000000000000000000000aB"
TOKEN = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"


def test_unquoted_addresses_and_selectors_are_read_as_written(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(
        f"""
defaults:
  max_value: 0x10
keys:
  {ADDRESS}:
    max_gas: 100000
clients:
  app:
    rules:
      to_allowlist: [{TOKEN}]
      selectors: [0xa9059cbb]
      max_fee_per_gas: 30 gwei
"""
    )
    policy = load_policy(str(path))
    assert set(policy.keys) == {ADDRESS}  # not 171, and not padded back by guesswork
    assert policy.defaults.max_value == 16  # amounts still take 0x text
    rules = policy.clients["app"].rules
    assert rules.to_allowlist == frozenset({TOKEN.lower()})
    assert rules.selectors == frozenset({bytes.fromhex("a9059cbb")})
    assert rules.max_fee_per_gas == 30 * 10**9


def test_decimal_integers_and_booleans_are_still_yaml_scalars(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("defaults:\n  max_gas: 21000\n  contract_creation: false\n")
    policy = load_policy(str(path))
    assert policy.defaults.max_gas == 21000
    assert policy.defaults.contract_creation is False
