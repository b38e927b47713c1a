"""The headline: `signer-proxy serve` as a real process, `cast send --unlocked` through it."""

from __future__ import annotations

import json
import subprocess

import pytest
from eth_account import Account

from signer_proxy.dev.kms_emulator import KmsEmulator
from tests.conftest import (
    REGION,
    Anvil,
    KeyFactory,
    rpc_call,
    run_cli,
    serving,
    start_proxy_process,
    stop,
    tool,
)

pytestmark = pytest.mark.integration


def test_cast_send_unlocked_is_mined_from_the_kms_address(
    anvil: Anvil, kms: KmsEmulator, make_key: KeyFactory
) -> None:
    key = make_key()
    anvil.fund(key.address)
    with serving(anvil, kms, key.alias or key.arn) as proxy:
        assert rpc_call(proxy.url, "eth_accounts")["result"] == [key.address]
        sent = subprocess.run(
            [tool("cast"), "send", "--unlocked", "--from", key.address, "--rpc-url", proxy.url,
             "0x000000000000000000000000000000000000dEaD", "--value", "1", "--json"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    tx_hash = json.loads(sent.stdout)["transactionHash"]
    receipt = anvil.call("eth_getTransactionReceipt", [tx_hash])
    assert receipt["status"] == "0x1"
    raw = anvil.call("eth_getRawTransactionByHash", [tx_hash])
    assert Account.recover_transaction(raw) == key.address
    assert anvil.call("eth_getTransactionByHash", [tx_hash])["from"] == key.address.lower()


def test_environment_variables_configure_serve(
    anvil: Anvil, kms: KmsEmulator, make_key: KeyFactory
) -> None:
    key = make_key()
    proxy = start_proxy_process(
        env={
            "SIGNER_PROXY_UPSTREAM": anvil.url,
            "SIGNER_PROXY_AWS_REGION": REGION,
            "SIGNER_PROXY_AWS_ENDPOINT_URL": kms.url,
            "SIGNER_PROXY_KMS_KEYS": key.arn,
        }
    )
    try:
        assert rpc_call(proxy.url, "eth_accounts")["result"] == [key.address]
    finally:
        stop(proxy.process)


def test_serve_without_upstream_exits_with_a_clear_message() -> None:
    result = run_cli("serve", "--kms-key", "alias/x", env={"SIGNER_PROXY_UPSTREAM": ""})
    assert result.returncode == 2
    assert "--upstream" in result.stderr
