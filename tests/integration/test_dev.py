"""`signer-proxy dev` as a user runs it: a subprocess, driven by web3.py, cast and SIGINT."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import ROOT, Anvil, free_port, run_cli, stop, tool

pytestmark = pytest.mark.integration

RECIPIENT = "0x000000000000000000000000000000000000dEaD"
READY_SECONDS_LIMIT = 5.0  # the bar for start-up to ready on this machine
ACCOUNT_LINE = re.compile(r"^\s+(alias/dev-\d+)\s+(0x[0-9a-fA-F]{40})\s+([\d.]+) ETH$")


@dataclass
class DevProcess:
    """A running `signer-proxy dev` and what its banner said."""

    process: subprocess.Popen[str]
    banner: str
    ready_seconds: float  # from spawning the process to the last banner line
    accounts: list[tuple[str, str, str]]  # (alias, address, balance in ETH)
    stderr_lines: list[str] = field(default_factory=list)

    def url(self, label: str) -> str:
        match = re.search(rf"^  {label}\s+.*?(https?://127\.0\.0\.1:\d+)", self.banner, re.M)
        assert match, f"no {label} URL in the banner:\n{self.banner}"
        return match.group(1)

    @property
    def proxy_url(self) -> str:
        return self.url("Proxy")

    @property
    def chain_url(self) -> str:
        return self.url("Node")

    @property
    def kms_url(self) -> str:
        return self.url("KMS emulator")

    @property
    def addresses(self) -> list[str]:
        return [address for _, address, _ in self.accounts]

    def interrupt(self, timeout: float = 15) -> int:
        """Ctrl-C, as a user would; the exit status."""
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=timeout)


def _pump(pipe: object, lines: queue.Queue[str | None]) -> None:
    for line in pipe:  # type: ignore[attr-defined]
        lines.put(line)
    lines.put(None)


def start_dev(*args: str, timeout: float = 30) -> DevProcess:
    """`signer-proxy dev ARGS`, returned once its banner is complete."""
    spawned = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "signer_proxy", "dev", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    out: queue.Queue[str | None] = queue.Queue()
    err: queue.Queue[str | None] = queue.Queue()
    for pipe, lines in ((process.stdout, out), (process.stderr, err)):
        threading.Thread(target=_pump, args=(pipe, lines), daemon=True).start()
    banner: list[str] = []
    deadline = spawned + timeout
    while True:
        try:
            line = out.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            line = None
        if line is None:
            stop(process)
            errors = "".join(iter_queue(err))
            raise AssertionError(f"signer-proxy dev did not get ready:\n{''.join(banner)}{errors}")
        banner.append(line)
        if "Ctrl-C stops everything" in line:
            break
    ready = time.monotonic() - spawned
    text = "".join(banner)
    accounts = [m.groups() for m in map(ACCOUNT_LINE.match, banner) if m]
    dev = DevProcess(process, text, ready, accounts)  # type: ignore[arg-type]
    threading.Thread(target=_collect, args=(err, dev.stderr_lines), daemon=True).start()
    return dev


def iter_queue(lines: queue.Queue[str | None]) -> Iterator[str]:
    while True:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            return
        if line is None:
            return
        yield line


def _collect(lines: queue.Queue[str | None], into: list[str]) -> None:
    while (line := lines.get()) is not None:
        into.append(line)


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def is_listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def dev() -> Iterator[DevProcess]:
    """One `signer-proxy dev --keys 2` shared by the tests that only send through it."""
    running = start_dev("--port", str(free_port()), "--keys", "2")
    yield running
    assert running.interrupt() == 0
    stop(running.process)


def test_dev_banner_lists_funded_kms_accounts_and_client_commands(dev: DevProcess) -> None:
    assert [alias for alias, _, _ in dev.accounts] == ["alias/dev-0", "alias/dev-1"]
    assert all(balance == "1000" for _, _, balance in dev.accounts)
    first = dev.addresses[0]
    assert f"cast send --unlocked --from {first} --rpc-url {dev.proxy_url}" in dev.banner
    assert f'type: "http", url: "{dev.proxy_url}", accounts: "remote"' in dev.banner  # Hardhat
    assert f'JsonRpcProvider("{dev.proxy_url}").getSigner("{first}")' in dev.banner  # ethers
    assert f'Web3(Web3.HTTPProvider("{dev.proxy_url}"))' in dev.banner
    assert "chain id 1337" in dev.banner


def test_dev_web3py_over_http_sends_a_kms_signed_transaction(dev: DevProcess) -> None:
    from web3 import Web3

    w3 = Web3(Web3.HTTPProvider(dev.proxy_url))
    assert w3.eth.chain_id == 1337
    assert w3.eth.accounts == dev.addresses
    assert w3.eth.get_balance(dev.addresses[1]) == 1000 * 10**18
    before = w3.eth.block_number
    tx_hash = w3.eth.send_transaction({"from": dev.addresses[1], "to": RECIPIENT, "value": 7})
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)
    assert receipt["status"] == 1
    assert receipt["from"] == dev.addresses[1]
    assert receipt["blockNumber"] == before + 1  # a block per transaction
    assert w3.eth.get_transaction(tx_hash)["type"] == 2


def test_dev_proxy_websocket_signs_and_relays_the_dev_chains_subscription(
    dev: DevProcess,
) -> None:
    from web3 import AsyncWeb3, WebSocketProvider

    async def scenario() -> tuple[dict[str, object], dict[str, object]]:
        async with AsyncWeb3(WebSocketProvider("ws" + dev.proxy_url[4:])) as w3:
            assert await w3.eth.accounts == dev.addresses  # answered by the proxy
            subscription = await w3.eth.subscribe("newHeads")  # relayed to the dev chain
            tx_hash = await w3.eth.send_transaction(
                {"from": dev.addresses[-1], "to": RECIPIENT, "value": 3}
            )
            async with asyncio.timeout(30):
                async for message in w3.socket.process_subscriptions():
                    assert message["subscription"] == subscription
                    head = dict(message["result"])
                    break
            receipt = dict(await w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30))
            return head, receipt

    head, receipt = asyncio.run(scenario())
    assert receipt["from"] == dev.addresses[-1]
    assert head["number"] == receipt["blockNumber"]


def test_dev_web3py_over_websocket_sees_the_new_block_and_receipt(dev: DevProcess) -> None:
    from web3 import AsyncWeb3, Web3, WebSocketProvider

    ws_url = "ws" + dev.chain_url.removeprefix("http")
    proxy = Web3(Web3.HTTPProvider(dev.proxy_url))

    async def scenario() -> tuple[dict[str, object], dict[str, object], str]:
        async with AsyncWeb3(WebSocketProvider(ws_url)) as w3:
            assert await w3.eth.chain_id == 1337
            await w3.eth.subscribe("newHeads")
            loop = asyncio.get_running_loop()
            tx_hash = await loop.run_in_executor(
                None,
                lambda: proxy.eth.send_transaction(
                    {"from": dev.addresses[0], "to": RECIPIENT, "value": 1}
                ),
            )
            async with asyncio.timeout(30):
                async for message in w3.socket.process_subscriptions():
                    head = dict(message["result"])
                    break
            receipt = dict(await w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30))
            return head, receipt, tx_hash.to_0x_hex()

    head, receipt, _ = asyncio.run(scenario())
    assert head["number"] == receipt["blockNumber"]
    assert head["hash"] == receipt["blockHash"]
    assert receipt["from"] == dev.addresses[0]
    assert receipt["status"] == 1


def test_dev_cast_send_unlocked_mines(dev: DevProcess) -> None:
    result = subprocess.run(
        [tool("cast"), "send", "--unlocked", "--from", dev.addresses[0],
         "--rpc-url", dev.proxy_url, RECIPIENT, "--value", "1", "--json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert '"status":"0x1"' in result.stdout.replace(" ", "")
    assert dev.addresses[0].lower() in result.stdout.lower()


def test_dev_ethers_json_rpc_signer_sends_through_it(dev: DevProcess) -> None:
    node = shutil.which("node")
    assert node is not None, "node is required (make test installs ethers with npm)"
    modules = ROOT / ".tools" / "node_modules"
    result = subprocess.run(
        [node, str(ROOT / "tests" / "fixtures" / "ethers_client.cjs"), dev.proxy_url, RECIPIENT],
        capture_output=True, text=True, timeout=60, env={**os.environ, "NODE_PATH": str(modules)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["accounts"] == dev.addresses
    assert out["status"] == 1  # ethers parsed the dev chain's receipt
    assert out["signedFrom"] == dev.addresses[0]


def test_dev_sigint_exits_0_frees_every_port_and_starts_within_the_limit() -> None:
    port, chain_port = free_port(), free_port()
    running = start_dev("--port", str(port), "--chain-port", str(chain_port), "--keys", "1")
    try:
        ports = [port_of(running.proxy_url), port_of(running.chain_url), port_of(running.kms_url)]
        assert ports[:2] == [port, chain_port]
        assert all(is_listening(p) for p in ports)
        assert running.ready_seconds < READY_SECONDS_LIMIT, running.ready_seconds
        assert running.interrupt() == 0
        assert not any(is_listening(p) for p in ports)
    finally:
        stop(running.process)
    assert "Traceback" not in "".join(running.stderr_lines)


def test_dev_upstream_anvil_is_funded_with_anvil_set_balance(anvil: Anvil) -> None:
    from web3 import Web3

    running = start_dev("--port", str(free_port()), "--keys", "1", "--upstream", anvil.url)
    try:
        assert "via anvil_setBalance" in running.banner
        assert "chain id 31337" in running.banner
        address = running.addresses[0]
        assert int(anvil.call("eth_getBalance", [address, "latest"]), 16) == 1000 * 10**18
        w3 = Web3(Web3.HTTPProvider(running.proxy_url))
        tx_hash = w3.eth.send_transaction({"from": address, "to": RECIPIENT, "value": 1})
        w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)
        mined = anvil.call("eth_getTransactionByHash", [tx_hash.to_0x_hex()])
        assert mined["from"].lower() == address.lower()
        assert running.interrupt() == 0
    finally:
        stop(running.process)


def test_dev_state_dir_keeps_addresses_across_a_restart_and_never_prints_keys(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    first = start_dev("--port", str(free_port()), "--keys", "2", "--state-dir", str(state))
    try:
        assert f"kept in {state}" in first.banner
        assert first.interrupt() == 0
    finally:
        stop(first.process)
    state_file = state / "kms-keys.json"
    assert stat.S_IMODE(state_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(state.stat().st_mode) == 0o700

    second = start_dev("--port", str(free_port()), "--keys", "3", "--state-dir", str(state))
    try:
        assert second.addresses[:2] == first.addresses
        assert second.addresses[2] not in first.addresses
        assert second.interrupt() == 0
    finally:
        stop(second.process)
    assert state_file.read_text().count("BEGIN PRIVATE KEY") == 3
    printed = first.banner + second.banner + "".join(first.stderr_lines + second.stderr_lines)
    assert "PRIVATE KEY" not in printed


def test_dev_refuses_a_busy_port_with_exit_2_and_a_fix() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "signer_proxy", "dev", "--port", str(port), "--keys", "1"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "choose another --port" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["--keys", "0"], "--keys must be from 1 to 100", id="keys"),
        pytest.param(["--log-level", "loud"], "--log-level must be debug", id="log-level"),
        pytest.param(["--upstream", "ftp://127.0.0.1"], "--upstream must be an http", id="url"),
    ],
)
def test_dev_refuses_bad_flags_with_exit_2(args: list[str], message: str) -> None:
    result = run_cli("dev", "--port", "0", *args)
    assert result.returncode == 2
    assert f"signer-proxy: error: {message}" in result.stderr
    assert result.stdout == ""
