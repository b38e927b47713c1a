"""Real client libraries pointed at the proxy, as the README tells users to."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from signer_proxy.dev.kms_emulator import KmsEmulator
from tests.conftest import ROOT, Anvil, KeyFactory, serving

pytestmark = pytest.mark.integration

NODE_MODULES = ROOT / ".tools" / "node_modules"
RECIPIENT = "0x000000000000000000000000000000000000dEaD"


def test_ethers_json_rpc_signer_sends_and_signs_through_the_proxy(
    anvil: Anvil, kms: KmsEmulator, make_key: KeyFactory
) -> None:
    node = shutil.which("node")
    assert node is not None, "node is required (make test installs ethers with npm)"
    assert (NODE_MODULES / "ethers").is_dir(), "ethers missing: run `make test`"
    key = make_key()
    anvil.fund(key.address)
    with serving(anvil, kms, key.arn) as proxy:
        result = subprocess.run(
            [node, str(ROOT / "tests" / "fixtures" / "ethers_client.cjs"), proxy.url, RECIPIENT],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "NODE_PATH": str(NODE_MODULES)},
        )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["accounts"] == [key.address]
    assert out["from"] == key.address
    assert out["status"] == 1
    assert out["signedFrom"] == key.address
    assert out["signedType"] == 2
    mined = anvil.call("eth_getTransactionByHash", [out["hash"]])
    assert mined["from"].lower() == key.address.lower()


def test_web3py_send_transaction_through_the_proxy(
    anvil: Anvil, kms: KmsEmulator, make_key: KeyFactory
) -> None:
    from web3 import Web3

    key = make_key()
    anvil.fund(key.address)
    with serving(anvil, kms, key.alias or key.arn) as proxy:
        w3 = Web3(Web3.HTTPProvider(proxy.url))
        assert w3.eth.accounts == [key.address]
        tx_hash = w3.eth.send_transaction({"from": w3.eth.accounts[0], "to": RECIPIENT, "value": 1})
        receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)
    assert receipt["status"] == 1
    assert receipt["from"] == key.address
