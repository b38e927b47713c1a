"""Three `signer-proxy serve` replicas sharing tracked transactions through redis-server: the
replica that watches an address is SIGKILLed and the node drops the pool, another replica takes
the watch over (its lease runs out) and rebroadcasts the same bytes, and every acknowledged
transaction ends mined, each nonce with the one hash that was acknowledged for it, answered by
any surviving replica."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import redis as redis_sync

from tests.conftest import Anvil, KeyFactory, KmsEmulator, rpc_call, start_anvil, stop
from tests.integration.test_replicas import replicas_running, start_replicas

SINK = "0x000000000000000000000000000000000000dEaD"


def call(url: str, method: str, params: Any) -> Any:
    response = rpc_call(url, method, params)
    assert "error" not in response, response
    return response["result"]


def wait_for(check: Any, within: float, between: Any = None) -> Any:
    deadline = time.monotonic() + within
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, "condition not met in time"
        if between is not None:
            between()
        time.sleep(0.1)  # pacing between looks, not an assertion


async def test_a_killed_watcher_is_replaced_and_every_acknowledged_tx_is_mined(
    kms: KmsEmulator, make_key: KeyFactory, redis_url: str
) -> None:
    anvil: Anvil = start_anvil("--no-mining")
    try:
        key = make_key()
        anvil.fund(key.address)
        extra = ("--tracking-interval", "0.2", "--nonce-lease-seconds", "2")
        replicas = await start_replicas(anvil, [kms.url] * 3, redis_url, [key], *extra)
        with replicas_running(replicas):
            sent = [
                call(replicas[i % 3].url, "eth_sendTransaction",
                     [{"from": key.address, "to": SINK, "value": hex(i + 1)}])
                for i in range(6)
            ]  # fmt: skip
            store = redis_sync.Redis.from_url(redis_url)
            lease = f"signer-proxy:track:{{31337:{key.address.lower()}}}:lease"
            owner = wait_for(lambda: store.get(lease), 10).decode()
            pid = int(owner.split("-")[-2])
            (victim,) = [r for r in replicas if r.proxy.process.pid == pid]
            victim.proxy.process.send_signal(signal.SIGKILL)
            assert victim.proxy.process.wait(10) == -signal.SIGKILL
            survivors = [r for r in replicas if r is not victim]
            # The node forgets them too (a restart, a provider's drop): only a watcher that
            # took over can get them mined, by sending the same bytes again.
            call(anvil.url, "anvil_dropAllTransactions", [])
            assert call(anvil.url, "txpool_status", []) == {"pending": "0x0", "queued": "0x0"}

            def taken_over() -> bool:
                now = store.get(lease)
                return now is not None and now.decode() != owner

            wait_for(taken_over, 15)

            def all_mined() -> list[dict[str, Any]] | None:
                statuses = [
                    call(survivors[i % 2].url, "signer_getTransactionStatus", [h])
                    for i, h in enumerate(sent)
                ]
                if None in statuses:
                    return None
                return statuses if all(s["state"] == "mined" for s in statuses) else None

            try:
                statuses = wait_for(all_mined, 30, lambda: call(anvil.url, "evm_mine", []))
            except AssertionError:
                for r in survivors:
                    print("LOG", r.url, "".join(r.log)[-3000:])
                print(
                    "STATUS",
                    [call(survivors[0].url, "signer_getTransactionStatus", [h]) for h in sent],
                )
                raise
            store.close()
        for tx_hash, status in zip(sent, statuses, strict=True):
            assert status["hashes"] == [tx_hash] and status["currentHash"] == tx_hash
        nonces = sorted(int(call(anvil.url, "eth_getTransactionByHash", [h])["nonce"], 16)
                        for h in sent)  # fmt: skip
        assert nonces == list(range(6))
        assert call(anvil.url, "eth_getTransactionCount", [key.address, "latest"]) == "0x6"
    finally:
        stop(anvil.process)
    await asyncio.sleep(0)
