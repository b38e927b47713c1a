"""Real client libraries pointed at the proxy, as the README tells users to."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

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


def test_ethers_json_rpc_signer_signs_messages_and_typed_data_through_the_proxy(
    anvil: Anvil, kms: KmsEmulator, make_key: KeyFactory
) -> None:
    node = shutil.which("node")
    assert node is not None, "node is required (make test installs ethers with npm)"
    key = make_key()
    with serving(anvil, kms, key.arn) as proxy:
        result = subprocess.run(
            [node, str(ROOT / "tests" / "fixtures" / "ethers_messages.cjs"), proxy.url],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "NODE_PATH": str(NODE_MODULES)},
        )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["address"] == key.address
    # ethers recovers each signature to the KMS address: personal_sign of text and of bytes,
    # eth_signTypedData_v4 with an array of structs.
    assert (out["text"], out["bytes"], out["typed"]) == (key.address,) * 3
    assert all(v in (27, 28) for v in out["vs"])


def test_web3py_sign_and_sign_typed_data_through_the_proxy(
    anvil: Anvil, kms: KmsEmulator, make_key: KeyFactory
) -> None:
    from eth_account import Account
    from eth_account.messages import encode_defunct, encode_typed_data
    from web3 import Web3

    from tests.unit.eth.test_messages import MAIL

    key = make_key()
    typed = {**MAIL, "domain": {**MAIL["domain"], "chainId": 31337}}
    with serving(anvil, kms, key.arn) as proxy:
        w3 = Web3(Web3.HTTPProvider(proxy.url))
        signature = w3.eth.sign(key.address, text="web3.py says hi")
        typed_signature = w3.eth.sign_typed_data(key.address, typed)
    assert Account.recover_message(encode_defunct(text="web3.py says hi"), signature=signature) == (
        key.address
    )
    assert (
        Account.recover_message(encode_typed_data(full_message=typed), signature=typed_signature)
        == key.address
    )


def ws_url(http_url: str) -> str:
    return "ws" + http_url.removeprefix("http")


def test_ethers_websocket_provider_gets_blocks_and_sends_through_the_proxy(
    anvil: Anvil, kms: KmsEmulator, make_key: KeyFactory
) -> None:
    node = shutil.which("node")
    assert node is not None, "node is required (make test installs ethers with npm)"
    key = make_key()
    anvil.fund(key.address)
    with serving(anvil, kms, key.arn) as proxy:
        result = subprocess.run(
            [node, str(ROOT / "tests" / "fixtures" / "ethers_ws_client.cjs"), ws_url(proxy.url),
             RECIPIENT],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "NODE_PATH": str(NODE_MODULES)},
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["accounts"] == [key.address]
    assert out["from"] == key.address
    assert out["status"] == 1
    assert out["blocks"] and all(b >= 1 for b in out["blocks"])  # block events arrived
    mined = anvil.call("eth_getTransactionByHash", [out["hash"]])
    assert mined["from"].lower() == key.address.lower()


async def test_web3py_websocket_provider_subscribes_and_sends_through_the_proxy(
    anvil: Anvil, kms: KmsEmulator, make_key: KeyFactory
) -> None:
    from web3 import AsyncWeb3, WebSocketProvider

    key = make_key()
    anvil.fund(key.address)
    with serving(anvil, kms, key.alias or key.arn) as proxy:
        async with AsyncWeb3(WebSocketProvider(ws_url(proxy.url))) as w3:
            assert await w3.eth.accounts == [key.address]
            subscription = await w3.eth.subscribe("newHeads")
            tx_hash = await w3.eth.send_transaction(
                {"from": key.address, "to": RECIPIENT, "value": 1}
            )
            async for message in w3.socket.process_subscriptions():
                assert message["subscription"] == subscription
                header = message["result"]
                break
            receipt = await w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)
            assert await w3.eth.unsubscribe(subscription) is True
    assert receipt["status"] == 1
    assert receipt["from"] == key.address
    assert header["number"] == receipt["blockNumber"]


def test_forge_script_broadcasts_through_the_proxy(
    anvil: Anvil, kms: KmsEmulator, make_key: KeyFactory, tmp_path: Path
) -> None:
    """`forge script --broadcast --unlocked --sender KEY`, as Foundry users deploy: forge
    simulates the script against the node through the proxy, then sends each transaction with
    eth_sendTransaction (its own nonce, gas and fees filled in) for the proxy to sign."""
    forge, solcjs = NODE_MODULES / ".bin" / "forge", NODE_MODULES / ".bin" / "solcjs"
    assert forge.exists() and solcjs.exists(), "forge or solcjs missing: run `make test`"
    project = tmp_path / "forge"
    shutil.copytree(ROOT / "tests" / "fixtures" / "forge", project)
    key = make_key()
    anvil.fund(key.address)
    with serving(anvil, kms, key.arn) as proxy:
        result = subprocess.run(
            [str(forge), "script", "script/Deploy.s.sol:Deploy", "--root", str(project),
             "--rpc-url", proxy.url, "--broadcast", "--unlocked", "--sender", key.address,
             "--use", str(ROOT / "tests" / "fixtures" / "forge" / "solc"), "--offline"],
            capture_output=True, text=True, timeout=120, cwd=project,
            env={**os.environ, "SOLCJS": str(solcjs), "FOUNDRY_DISABLE_NIGHTLY_WARNING": "1"},
        )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "ONCHAIN EXECUTION COMPLETE & SUCCESSFUL" in result.stdout
    run = json.loads(
        (project / "broadcast" / "Deploy.s.sol" / "31337" / "run-latest.json").read_text()
    )
    receipts = run["receipts"]
    assert [r["status"] for r in receipts] == ["0x1"] * 3
    mined = [anvil.call("eth_getTransactionByHash", [r["transactionHash"]]) for r in receipts]
    assert [(tx["from"].lower(), int(tx["nonce"], 16)) for tx in mined] == [
        (key.address.lower(), nonce) for nonce in range(3)
    ]
    counter = receipts[0]["contractAddress"]
    number = anvil.call("eth_call", [{"to": counter, "data": "0x8381f58a"}, "latest"])  # number()
    assert int(number, 16) == 1
