"""The headline: `signer-proxy serve` as a real process, `cast send --unlocked` through it."""

from __future__ import annotations

import json
import subprocess

import pytest
from eth_account import Account

from tests.conftest import (
    REGION,
    Anvil,
    KeyFactory,
    rpc_call,
    run_cli,
    start_proxy_process,
    stop,
    tool,
)

pytestmark = pytest.mark.integration


def test_cast_send_unlocked_is_mined_from_the_kms_address(
    anvil: Anvil, kms: object, make_key: KeyFactory
) -> None:
    key = make_key()
    anvil.fund(key.address)
    proxy = start_proxy_process(
        "--upstream",
        anvil.url,
        "--aws-region",
        REGION,
        "--aws-endpoint-url",
        kms.url,  # type: ignore[attr-defined]
        "--kms-key",
        key.alias or "",
    )
    try:
        accounts = rpc_call(proxy.url, "eth_accounts")["result"]
        assert accounts == [key.address]
        sent = subprocess.run(
            [
                tool("cast"),
                "send",
                "--unlocked",
                "--from",
                key.address,
                "--rpc-url",
                proxy.url,
                "0x000000000000000000000000000000000000dEaD",
                "--value",
                "1",
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert sent.returncode == 0, sent.stderr
        tx_hash = json.loads(sent.stdout)["transactionHash"]
        receipt = anvil.call("eth_getTransactionReceipt", [tx_hash])
        assert receipt["status"] == "0x1"
        tx = anvil.call("eth_getTransactionByHash", [receipt["transactionHash"]])
        raw = anvil.call("eth_getRawTransactionByHash", [receipt["transactionHash"]])
        assert Account.recover_transaction(raw) == key.address
        assert tx["from"].lower() == key.address.lower()
    finally:
        stop(proxy.process)
    assert proxy.process.returncode == 0


def test_environment_variables_configure_serve(
    anvil: Anvil, kms: object, make_key: KeyFactory
) -> None:
    key = make_key()
    proxy = start_proxy_process(
        env={
            "SIGNER_PROXY_UPSTREAM": anvil.url,
            "SIGNER_PROXY_AWS_REGION": REGION,
            "SIGNER_PROXY_AWS_ENDPOINT_URL": kms.url,  # type: ignore[attr-defined]
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
