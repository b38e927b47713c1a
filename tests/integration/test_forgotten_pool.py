"""A node that forgets its pool (a restart, a provider's drop; here anvil_dropAllTransactions)
while acknowledged transactions wait in it, and a new send arrives: the forgotten ones are
sent again as the same bytes and every acknowledged hash is mined, none displaced by the new
send. In one process (the in-memory nonce manager, with and without the tracker); across
replicas the Redis nonce store does the same (tests/integration/test_tracking_replicas.py).
"""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import Anvil, KeyFactory, KmsEmulator, ProxyFactory, proxy_settings

pytestmark = pytest.mark.integration

SINK = "0x000000000000000000000000000000000000dEaD"


@pytest.mark.parametrize("track", [False, True], ids=["nonces-only", "with-tracker"])
async def test_a_forgotten_pool_is_sent_again_before_a_new_send_takes_its_nonces(
    start_proxy: ProxyFactory,
    paused: Anvil,
    kms: KmsEmulator,
    make_key: KeyFactory,
    track: bool,
) -> None:
    key = make_key()
    paused.fund(key.address)
    settings = proxy_settings(
        paused.url, kms.url, key.arn, track_transactions=track, tracking_interval=30.0
    )
    proxy = await start_proxy(settings)
    send = [{"from": key.address, "to": SINK, "value": "0x1"}]
    first = [await proxy.result("eth_sendTransaction", send) for _ in range(3)]
    paused.call("anvil_dropAllTransactions")
    assert paused.call("txpool_status") == {"pending": "0x0", "queued": "0x0"}
    await asyncio.sleep(1.1)  # the address rests: the next send re-reads the node

    later = await proxy.result("eth_sendTransaction", send)

    paused.call("evm_mine")
    for nonce, tx_hash in enumerate([*first, later]):
        receipt = paused.call("eth_getTransactionReceipt", [tx_hash])
        assert receipt is not None and receipt["status"] == "0x1", (nonce, tx_hash)
        tx = paused.call("eth_getTransactionByHash", [tx_hash])
        assert int(tx["nonce"], 16) == nonce
