"""Tracking on real anvil with automine off: stuck without a policy, bumped within it (and
ethers' wait() on the original hash), a dropped transaction rebroadcast as the same bytes,
signer_speedUpTransaction / signer_cancelTransaction over HTTP and WebSocket within the
client's scope. Blocks are mined by the tests; every wait is on a condition, with a bound."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from signer_proxy.app import TRACKER
from signer_proxy.ops.board import tracked_pending
from signer_proxy.ops.metrics import METRICS
from tests.auth_support import API_KEYS, write_api_keys_file, write_policy_file
from tests.conftest import (
    ROOT,
    Anvil,
    KeyFactory,
    KmsEmulator,
    ProxyFactory,
    proxy_settings,
)
from tests.integration.ws_front import RpcSocket

pytestmark = pytest.mark.integration

GWEI = 10**9
RECIPIENT = "0x000000000000000000000000000000000000dEaD"


def mine(anvil: Anvil, base_fee: int) -> None:
    """One block whose base fee is `base_fee`."""
    anvil.call("anvil_setNextBlockBaseFeePerGas", [hex(base_fee)])
    anvil.call("evm_mine")


async def until(
    check: Callable[[], Awaitable[Any]],
    within: float = 30.0,
    between: Callable[[], None] | None = None,
) -> Any:
    """`await check()` until it returns something truthy (after each miss `between()`, e.g.
    mine a block); fails after `within` seconds."""
    async with asyncio.timeout(within):
        while True:
            found = await check()
            if found:
                return found
            if between is not None:
                between()
            await asyncio.sleep(0.1)  # pacing, not an assertion: the tracker runs every 0.1 s


def low_fee_send(address: str, value: int = 1) -> dict[str, Any]:
    """A send whose fee cap (2 gwei) a 10 gwei base fee leaves behind."""
    return {
        "from": address, "to": RECIPIENT, "value": hex(value),
        "maxFeePerGas": hex(2 * GWEI), "maxPriorityFeePerGas": hex(GWEI // 10),
    }  # fmt: skip


async def test_without_the_policy_a_transaction_under_the_base_fee_is_reported_stuck(
    start_proxy: ProxyFactory, paused: Anvil, kms: KmsEmulator, make_key: KeyFactory
) -> None:
    key = make_key()
    paused.fund(key.address)
    proxy = await start_proxy(proxy_settings(paused.url, kms.url, key.arn, tracking_interval=0.1))
    tx_hash = await proxy.result("eth_sendTransaction", [low_fee_send(key.address)])
    assert (await proxy.result("signer_getTransactionStatus", [tx_hash]))["state"] == "pending"

    async def stuck() -> Any:
        status = await proxy.result("signer_getTransactionStatus", [tx_hash])
        return status if status["state"] == "stuck" else None

    status = await until(stuck, between=lambda: mine(paused, 10 * GWEI))
    assert "fee bumping is off" in status["reason"]
    assert status["hashes"] == [tx_hash] and status["bumps"] == 0
    metrics = proxy.client.app[METRICS]
    assert metrics.tracked_stuck_events.labels("default")._value.get() >= 1
    assert metrics.tracked_stuck.labels(key.address, "default")._value.get() == 1

    # The base fee falls back: the same bytes go back to the pool and are mined.
    async def mined() -> Any:
        status = await proxy.result("signer_getTransactionStatus", [tx_hash])
        return status if status["state"] == "mined" else None

    status = await until(mined, between=lambda: mine(paused, GWEI))
    assert status["currentHash"] == tx_hash and status["status"] == "0x1"
    assert status["rebroadcasts"] >= 1


async def test_with_the_policy_a_stuck_transaction_is_bumped_mined_and_found_by_its_hash(
    start_proxy: ProxyFactory,
    paused: Anvil,
    kms: KmsEmulator,
    make_key: KeyFactory,
    tmp_path: Path,
) -> None:
    key = make_key()
    paused.fund(key.address)
    policy = write_policy_file(
        tmp_path,
        {"fee_bumping": {"enabled": True, "after_blocks": 2, "max_fee_per_gas": "100 gwei"}},
    )
    audit = tmp_path / "audit.jsonl"
    proxy = await start_proxy(
        proxy_settings(
            paused.url,
            kms.url,
            key.arn,
            tracking_interval=0.1,
            policy_file=str(policy),
            audit_log=str(audit),
        )
    )
    original = await proxy.result("eth_sendTransaction", [low_fee_send(key.address)])
    node = shutil.which("node")
    assert node is not None, "node is required (make test installs ethers with npm)"
    ethers = await asyncio.create_subprocess_exec(
        node, str(ROOT / "tests" / "fixtures" / "ethers_wait_replaced.cjs"),
        str(proxy.client.make_url("/")), original,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "NODE_PATH": str(ROOT / ".tools" / "node_modules")},
    )  # fmt: skip
    try:
        assert ethers.stdout is not None
        line = await asyncio.wait_for(ethers.stdout.readline(), 30)
        assert line.strip() == b"ready", line
        mine(paused, 10 * GWEI)  # the fee cap is left behind: anvil evicts the transaction
        # A later send from the same address, with fees filled for the new base fee.
        later = await proxy.result(
            "eth_sendTransaction", [{"from": key.address, "to": RECIPIENT, "value": "0x2"}]
        )

        async def both_mined() -> Any:
            first = await proxy.result("signer_getTransactionStatus", [original])
            second = await proxy.result("signer_getTransactionStatus", [later])
            done = first["state"] != "pending" and second["state"] == "mined"
            return (first, second) if done and first["state"] not in ("dropped", "stuck") else None

        first, second = await until(both_mined, within=60, between=lambda: mine(paused, 10 * GWEI))
        out, err = await asyncio.wait_for(ethers.communicate(), 30)
    finally:
        if ethers.returncode is None:
            ethers.kill()
            await ethers.wait()
    assert ethers.returncode == 0, err.decode()

    # The client's hash resolves to the replacement that was mined.
    assert first["state"] == "replaced", first
    assert first["bumps"] >= 1 and first["hashes"][0] == original
    assert first["currentHash"] == first["hashes"][-1] != original
    assert first["status"] == "0x1"
    mined = await proxy.result("signer_getTransactionStatus", [first["currentHash"]])
    assert mined["state"] == "mined"
    replacement = paused.call("eth_getTransactionByHash", [first["currentHash"]])
    assert int(replacement["maxFeePerGas"], 16) <= 100 * GWEI  # within the ceiling
    assert int(replacement["maxFeePerGas"], 16) >= 10 * GWEI
    assert replacement["nonce"] == "0x0" and replacement["value"] == "0x1"
    # In order: the later send (nonce 1) in the same block or after.
    assert int(second["blockNumber"], 16) >= int(first["blockNumber"], 16)
    assert paused.call("eth_getTransactionByHash", [later])["nonce"] == "0x1"

    # ethers v6: wait() on the original hash ends with TRANSACTION_REPLACED, "repriced".
    result = json.loads(out.decode().strip().splitlines()[-1])
    assert result == {
        "outcome": "TRANSACTION_REPLACED", "reason": "repriced", "cancelled": False,
        "replacement": first["currentHash"], "status": 1,
    }  # fmt: skip

    # The replacement was signed through the gate and audited as a replacement.
    entries = [json.loads(line) for line in audit.read_text().splitlines()]
    bumps = [e for e in entries if e.get("replaces")]
    assert bumps and bumps[0]["replaces"] == original
    assert bumps[0]["replacement"] == "auto" and bumps[0]["outcome"] == "allowed"
    assert proxy.client.app[METRICS].tracked_bumps.labels("auto", "default")._value.get() >= 1


async def test_a_transaction_the_node_dropped_is_rebroadcast_byte_identical_and_mined(
    start_proxy: ProxyFactory, paused: Anvil, kms: KmsEmulator, make_key: KeyFactory
) -> None:
    key = make_key()
    paused.fund(key.address)
    proxy = await start_proxy(proxy_settings(paused.url, kms.url, key.arn, tracking_interval=0.1))
    tx_hash = await proxy.result(
        "eth_sendTransaction", [{"from": key.address, "to": RECIPIENT, "value": "0x1"}]
    )
    before = paused.call("eth_getTransactionByHash", [tx_hash])
    assert paused.call("anvil_dropTransaction", [tx_hash]) == tx_hash
    assert paused.call("eth_getTransactionByHash", [tx_hash]) is None

    async def rebroadcast() -> Any:
        status = await proxy.result("signer_getTransactionStatus", [tx_hash])
        return status if status["rebroadcasts"] >= 1 else None

    status = await until(rebroadcast)
    assert status["hashes"] == [tx_hash]  # the same hash: the same bytes, not a new signature
    again = paused.call("eth_getTransactionByHash", [tx_hash])
    assert {k: again[k] for k in ("r", "s", "input", "nonce")} == {
        k: before[k] for k in ("r", "s", "input", "nonce")
    }

    async def mined() -> Any:
        status = await proxy.result("signer_getTransactionStatus", [tx_hash])
        return status if status["state"] == "mined" else None

    status = await until(mined, between=lambda: paused.call("evm_mine"))
    assert status["currentHash"] == tx_hash
    assert proxy.client.app[METRICS].tracked_rebroadcasts.labels("default")._value.get() >= 1


async def test_a_mined_transaction_a_reorg_takes_out_is_rebroadcast_and_final_only_when_deep(
    start_proxy: ProxyFactory, paused: Anvil, kms: KmsEmulator, make_key: KeyFactory
) -> None:
    """--tracking-confirmations 3. Mined in block 1, the send is not final yet and cannot be
    replaced. anvil_reorg replaces that block with an empty one and forgets the transaction:
    the tracker sees the mined count fall back, rebroadcasts the same bytes, and after the
    next block the send is mined again, final three blocks later. The next send takes the
    next nonce."""
    key = make_key()
    paused.fund(key.address)
    settings = proxy_settings(
        paused.url, kms.url, key.arn, tracking_interval=0.1, tracking_confirmations=3
    )
    proxy = await start_proxy(settings)
    send = {"from": key.address, "to": RECIPIENT, "value": "0x1"}
    tx_hash = await proxy.result("eth_sendTransaction", [send])
    raw = paused.call("eth_getRawTransactionByHash", [tx_hash])
    paused.call("evm_mine")
    mined_at = int(paused.call("eth_getTransactionReceipt", [tx_hash])["blockNumber"], 16)

    async def status_is(state: str, final: bool) -> Any:
        status = await proxy.result("signer_getTransactionStatus", [tx_hash])
        return status if (status["state"], status["final"]) == (state, final) else None

    status = await until(lambda: status_is("mined", False))
    assert status["blockNumber"] == hex(mined_at)
    assert await tracked_pending(proxy.client.app[TRACKER])() == []  # the operator page's list
    refused = await proxy.call("signer_speedUpTransaction", [tx_hash])
    assert "waiting for its confirmations" in refused["error"]["message"], refused

    paused.call("anvil_reorg", [1, []])  # the block is replaced by an empty one
    assert paused.call("eth_getTransactionReceipt", [tx_hash]) is None
    assert paused.call("eth_getTransactionByHash", [tx_hash]) is None

    async def rebroadcast() -> Any:
        status = await proxy.result("signer_getTransactionStatus", [tx_hash])
        return status if status["rebroadcasts"] >= 1 else None

    status = await until(rebroadcast)
    assert (status["state"], status["final"], status["hashes"]) == ("pending", False, [tx_hash])
    assert paused.call("eth_getRawTransactionByHash", [tx_hash]) == raw  # the same bytes
    metrics = proxy.client.app[METRICS]
    assert metrics.tracked_reorged.labels("default")._value.get() == 1

    paused.call("evm_mine")
    again = int(paused.call("eth_getTransactionReceipt", [tx_hash])["blockNumber"], 16)
    status = await until(lambda: status_is("mined", False))
    assert status["blockNumber"] == hex(again)
    status = await until(lambda: status_is("mined", True), between=lambda: paused.call("evm_mine"))
    head = int(paused.call("eth_blockNumber"), 16)
    assert head - again >= 3
    assert status["status"] == "0x1" and status["rebroadcasts"] == 1

    next_hash = await proxy.result("eth_sendTransaction", [send])
    assert paused.call("eth_getTransactionByHash", [next_hash])["nonce"] == "0x1"


async def test_transactions_mined_together_are_found_in_the_block_and_their_status_asked(
    start_proxy: ProxyFactory, paused: Anvil, kms: KmsEmulator, make_key: KeyFactory
) -> None:
    """Three sends seen pending, then mined in one block: the round reads that block's body
    (not three receipts), and signer_getTransactionStatus asks the node for a receipt's status
    when first wanted: a send to a contract that reverts reads 0x0."""
    key = make_key()
    paused.fund(key.address)
    reverter = "0x" + "ee" * 20
    paused.call("anvil_setCode", [reverter, "0x60006000fd"])  # REVERT(0, 0)
    proxy = await start_proxy(proxy_settings(paused.url, kms.url, key.arn, tracking_interval=0.1))
    sends = [
        {"from": key.address, "to": RECIPIENT, "value": "0x1"},
        {"from": key.address, "to": RECIPIENT, "value": "0x2"},
        {"from": key.address, "to": reverter, "value": "0x0", "gas": hex(30_000)},
    ]
    hashes = [await proxy.result("eth_sendTransaction", [send]) for send in sends]
    metrics = proxy.client.app[METRICS]
    pending = metrics.tracked_pending.labels(key.address, "default")

    async def seen_pending() -> bool:
        return bool(pending._value.get() == 3)

    await until(seen_pending)
    paused.call("evm_mine")
    tracker = proxy.client.app[TRACKER]

    async def all_mined() -> bool:
        return await tracker.store.pending(31337, key.address) == []

    await until(all_mined)
    block = int(paused.call("eth_blockNumber"), 16)
    records = [await tracker.store.find(h) for h in hashes]
    assert [(r.state.value, r.block_number, r.status) for r in records if r] == [
        ("mined", block, None)
    ] * 3  # found in the body: no receipt asked yet

    statuses = [await proxy.result("signer_getTransactionStatus", [h]) for h in hashes]
    assert [(s["state"], s["blockNumber"], s["status"]) for s in statuses] == [
        ("mined", hex(block), "0x1"),
        ("mined", hex(block), "0x1"),
        ("mined", hex(block), "0x0"),
    ]
    assert [paused.call("eth_getTransactionReceipt", [h])["status"] for h in hashes] == [
        "0x1", "0x1", "0x0",
    ]  # fmt: skip
    kept = await tracker.store.find(hashes[2])
    assert kept is not None and kept.status == 0  # asked once, then stored


@pytest.fixture
async def scoped(
    start_proxy: ProxyFactory,
    paused: Anvil,
    kms: KmsEmulator,
    make_key: KeyFactory,
    tmp_path: Path,
) -> AsyncIterator[tuple[Any, str]]:
    """A proxy where client `ci` may use the key and client `dapp` may not."""
    key = make_key()
    paused.fund(key.address)
    policy = write_policy_file(
        tmp_path,
        {"clients": {"ci": {"keys": [key.address]}, "dapp": {"keys": []}}},
    )
    keys_file = write_api_keys_file(tmp_path)
    proxy = await start_proxy(
        proxy_settings(
            paused.url,
            kms.url,
            key.arn,
            tracking_interval=0.1,
            policy_file=str(policy),
            api_keys_file=str(keys_file),
            audit_log=str(tmp_path / "audit.jsonl"),
        )
    )
    yield proxy, key.address


def bearer(client: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {API_KEYS[client]}", "Content-Type": "application/json"}


async def http_call(proxy: Any, client: str, method: str, params: list[Any]) -> dict[str, Any]:
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    response = await proxy.client.post("/", data=json.dumps(body), headers=bearer(client))
    assert response.status == 200
    return dict(await response.json())


async def test_speed_up_and_cancel_over_http_and_websocket_within_the_client_scope(
    scoped: tuple[Any, str], paused: Anvil, tmp_path: Path
) -> None:
    proxy, address = scoped
    sent = await http_call(
        proxy, "ci", "eth_sendTransaction", [{"from": address, "to": RECIPIENT, "value": "0x5"}]
    )
    original = sent["result"]

    # A client whose scope lacks the key: refused everywhere, over both transports.
    for method in ("signer_speedUpTransaction", "signer_cancelTransaction",
                   "signer_getTransactionStatus"):  # fmt: skip
        refused = await http_call(proxy, "dapp", method, [original])
        assert refused["error"]["code"] == -32043, refused
        assert refused["error"]["data"]["rule"] == "keys"
    ws_dapp = RpcSocket(await proxy.client.ws_connect("/", headers=bearer("dapp")))
    try:
        refused = await ws_dapp.call("signer_cancelTransaction", [original])
        assert refused["error"]["code"] == -32043
    finally:
        await ws_dapp.close()

    # The key's client: speed up over HTTP, then cancel over WebSocket.
    sped = (await http_call(proxy, "ci", "signer_speedUpTransaction", [original]))["result"]
    assert sped["state"] == "pending" and sped["bumps"] == 1
    assert sped["hashes"][0] == original and sped["currentHash"] == sped["hashes"][1]
    faster = paused.call("eth_getTransactionByHash", [sped["currentHash"]])
    first = paused.call("eth_getTransactionByHash", [original])
    assert first is None  # replaced in the pool
    assert faster["value"] == "0x5" and faster["to"].lower() == RECIPIENT.lower()

    ws = RpcSocket(await proxy.client.ws_connect("/", headers=bearer("ci")))
    try:
        cancelled = await ws.result("signer_cancelTransaction", [original])
    finally:
        await ws.close()
    assert cancelled["bumps"] == 2 and len(cancelled["hashes"]) == 3
    cancel = paused.call("eth_getTransactionByHash", [cancelled["currentHash"]])
    assert cancel["to"].lower() == address.lower() and cancel["value"] == "0x0"
    assert cancel["input"] == "0x" and cancel["nonce"] == "0x0"
    assert int(cancel["maxFeePerGas"], 16) > int(faster["maxFeePerGas"], 16)

    paused.call("evm_mine")

    async def final() -> Any:
        status = (await http_call(proxy, "ci", "signer_getTransactionStatus", [original]))["result"]
        return status if status["state"] != "pending" else None

    status = await until(final)
    assert status["state"] == "replaced" and status["currentHash"] == cancelled["currentHash"]
    # Both replacements were audited as replacements of what they replaced.
    entries = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    replaced = [(e["method"], e["replaces"]) for e in entries if e.get("replaces")]
    assert replaced == [
        ("signer_speedUpTransaction", original),
        ("signer_cancelTransaction", sped["currentHash"]),
    ]
    again = await http_call(proxy, "ci", "signer_speedUpTransaction", [original])
    assert again["error"]["code"] == -32602 and "final" in again["error"]["message"]
