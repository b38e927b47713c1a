"""`signer-proxy dev --chains 2` as a user runs it: two embedded chains behind one proxy, each
on its own path, each transaction mined on the chain whose URL it was sent to."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import ROOT, free_port, rpc_call, run_cli, stop, tool
from tests.integration.test_dev import RECIPIENT, DevProcess, is_listening, port_of, start_dev

pytestmark = pytest.mark.integration

CHAIN_LINE = re.compile(
    r"^    (dev\d)\s+chain id (\d+)\s+(http://127\.0\.0\.1:\d+/chain/dev\d)\s+"
    r"\(its node: (http://127\.0\.0\.1:\d+)\)$",
    re.M,
)


def rpc(url: str, method: str, params: list[Any]) -> Any:
    body = rpc_call(url, method, params)
    assert "result" in body, body
    return body["result"]


def chains_of(dev: DevProcess) -> list[tuple[str, int, str, str]]:
    """(name, chain id, URL through the proxy, the chain's own node) per banner line."""
    return [(n, int(i), url, node) for n, i, url, node in CHAIN_LINE.findall(dev.banner)]


@pytest.fixture(scope="module")
def dev2() -> Iterator[DevProcess]:
    running = start_dev("--port", str(free_port()), "--keys", "1", "--chains", "2",
                        "--chain-id", "31337")  # fmt: skip
    yield running
    stop(running.process)


def test_dev_chains_banner_lists_each_chain_with_its_url_and_cast_command(
    dev2: DevProcess,
) -> None:
    proxy = dev2.proxy_url
    chains = chains_of(dev2)
    assert [(n, i, url) for n, i, url, _ in chains] == [
        ("dev1", 31337, f"{proxy}/chain/dev1"),
        ("dev2", 31338, f"{proxy}/chain/dev2"),
    ]
    first = dev2.addresses[0]
    for _, _, url, _ in chains:
        assert f"cast send --unlocked --from {first} --rpc-url {url} {RECIPIENT}" in dev2.banner
        assert f'{{ type: "http", url: "{url}", accounts: "remote" }}' in dev2.banner  # Hardhat
    assert dev2.accounts and all(balance == "1000" for _, _, balance in dev2.accounts)


def test_dev_chains_each_path_answers_its_own_chain_id_and_slash_is_the_first(
    dev2: DevProcess,
) -> None:
    (_, _, url1, _), (_, _, url2, _) = chains_of(dev2)
    assert int(rpc(url1, "eth_chainId", []), 16) == 31337
    assert int(rpc(url2, "eth_chainId", []), 16) == 31338
    assert int(rpc(f"{dev2.proxy_url}/chain/31338", "eth_chainId", []), 16) == 31338
    assert int(rpc(dev2.proxy_url, "eth_chainId", []), 16) == 31337  # dev1 is the default


def test_dev_chains_cast_send_on_each_chain_is_mined_on_that_chain_only(
    dev2: DevProcess,
) -> None:
    address = dev2.addresses[0]
    chains = chains_of(dev2)
    hashes = {}
    for name, chain_id, url, node in chains:
        # the key is funded on every chain, through each chain's own node
        assert int(rpc(node, "eth_getBalance", [address, "latest"]), 16) >= 10**18
        result = subprocess.run(
            [tool("cast"), "send", "--unlocked", "--from", address, "--rpc-url", url,
             RECIPIENT, "--value", "1", "--json"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        receipt = json.loads(result.stdout)
        assert receipt["status"] == "0x1"
        mined = rpc(node, "eth_getTransactionByHash", [receipt["transactionHash"]])
        assert mined is not None, f"not on {name}'s node"
        assert int(mined["chainId"], 16) == chain_id
        assert mined["from"].lower() == address.lower()
        hashes[name] = receipt["transactionHash"]
    # neither transaction reached the other chain
    (name1, _, _, node1), (name2, _, _, node2) = chains
    assert rpc(node2, "eth_getTransactionByHash", [hashes[name1]]) is None
    assert rpc(node1, "eth_getTransactionByHash", [hashes[name2]]) is None


def test_dev_chains_ethers_and_viem_as_the_readme_shows_them_send_on_each_chain(
    dev2: DevProcess,
) -> None:
    node_js = shutil.which("node")
    assert node_js is not None, "node is required (make test installs ethers and viem with npm)"
    modules = ROOT / ".tools" / "node_modules"
    for _, chain_id, url, node in chains_of(dev2):
        result = subprocess.run(
            [node_js, str(ROOT / "tests" / "fixtures" / "chains_clients.cjs"), url, RECIPIENT],
            capture_output=True, text=True, timeout=60,
            env={**os.environ, "NODE_PATH": str(modules)},
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        out = json.loads(result.stdout)
        assert out["ethersChainId"] == out["viemChainId"] == chain_id
        assert out["ethersStatus"] == 1 and out["viemStatus"] == "success"
        assert out["from"] == dev2.addresses[0]
        for tx_hash in (out["ethersHash"], out["viemHash"]):
            mined = rpc(node, "eth_getTransactionByHash", [tx_hash])
            assert int(mined["chainId"], 16) == chain_id  # on this chain's own node


def test_dev_chains_websocket_on_a_chains_path_signs_and_subscribes_on_that_chain(
    dev2: DevProcess,
) -> None:
    from web3 import AsyncWeb3, WebSocketProvider

    _, chain_id, url, node = chains_of(dev2)[1]  # dev2: not the default chain

    async def scenario() -> tuple[int, dict[str, object], str]:
        async with AsyncWeb3(WebSocketProvider("ws" + url[4:])) as w3:
            seen_id = await w3.eth.chain_id
            subscription = await w3.eth.subscribe("newHeads")  # relayed to dev2's node
            tx_hash = await w3.eth.send_transaction(
                {"from": dev2.addresses[0], "to": RECIPIENT, "value": 5}
            )
            async with asyncio.timeout(30):
                async for message in w3.socket.process_subscriptions():
                    assert message["subscription"] == subscription
                    head = dict(message["result"])
                    break
            await w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)
            return seen_id, head, tx_hash.to_0x_hex()

    seen_id, head, tx_hash = asyncio.run(scenario())
    assert seen_id == chain_id
    mined = rpc(node, "eth_getTransactionByHash", [tx_hash])
    assert int(mined["chainId"], 16) == chain_id
    assert head["number"] == int(mined["blockNumber"], 16)  # the head came from dev2's node


def test_dev_chains_sigint_exits_0_and_frees_every_chains_port(dev2: DevProcess) -> None:
    ports = [port_of(dev2.proxy_url), port_of(dev2.kms_url)]
    ports += [port_of(node) for _, _, _, node in chains_of(dev2)]
    assert all(is_listening(p) for p in ports)
    assert dev2.interrupt() == 0
    assert not any(is_listening(p) for p in ports)
    assert "Traceback" not in "".join(dev2.stderr_lines)


def test_dev_chains_refuses_more_than_four_and_upstream_with_exit_2() -> None:
    result = run_cli("dev", "--port", "0", "--chains", "5")
    assert result.returncode == 2
    assert "signer-proxy: error: --chains must be from 1 to 4, got 5" in result.stderr
    result = run_cli("dev", "--port", "0", "--chains", "2", "--upstream", "http://127.0.0.1:1")
    assert result.returncode == 2
    assert "--chains runs several embedded chains; it has no use with --upstream" in result.stderr
