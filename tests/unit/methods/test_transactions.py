"""methods.transactions: the send path's word to the client against what the nonce store does
with the recorded bytes (a real redis-server; the node scripted at the Upstream seam)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from signer_proxy.chain.fill import ChainFacts
from signer_proxy.errors import UpstreamTimeout, UpstreamUnavailable
from signer_proxy.eth.hexdata import to_data
from signer_proxy.jsonrpc import CallContext
from signer_proxy.keys import KeyRegistry
from signer_proxy.keys.local import LocalKeySigner
from signer_proxy.methods.transactions import TransactionMethods
from signer_proxy.nonces.redis_store import RedisNonceManager, connect
from tests.unit.tx_support import PRIVATE_KEY, TO, FakeNode

LEASE = 0.3


class BusyNode(FakeNode):
    """Every connection to the node stays busy: eth_sendRawTransaction waits `wait` seconds,
    then fails unwritten (UpstreamUnavailable, "nothing was delivered"). Bytes the nonce
    store resends on its own (`send_raw`) get through."""

    def __init__(self, wait: float) -> None:
        super().__init__(eth_getTransactionCount="0x0")
        self.wait = wait
        self.resent: list[bytes] = []

    async def call(self, method: str, params: Any) -> Any:
        if method == "eth_sendRawTransaction":
            self.calls.append((method, params))
            await asyncio.sleep(self.wait)
            raise UpstreamUnavailable("all 256 connections stayed busy until the deadline")
        return await super().call(method, params)

    async def pending_count(self, address: str) -> int:
        return 0

    async def send_raw(self, raw: bytes) -> None:
        self.resent.append(raw)


async def test_a_send_whose_lease_ran_out_is_never_reported_as_not_sent(redis_url: str) -> None:
    """The node is busy for longer than --nonce-lease-seconds while a sync (gap repair, or
    another replica) reaps the lease: the recorded bytes stay with the nonce store, which
    sends them. The client must hear "may still be mined" with the hash, not "nothing was
    sent, retry" (a retry would be a second payment). Found by review."""
    node = BusyNode(wait=LEASE * 2)
    redis = connect(redis_url)
    try:

        async def chain_id() -> int:
            return 1

        nonces = RedisNonceManager(redis, node.pending_count, node.send_raw, chain_id, LEASE)
        signer = LocalKeySigner(PRIVATE_KEY)
        registry = KeyRegistry([signer])
        methods = TransactionMethods(lambda: registry, node, nonces, ChainFacts(node), 1.2)
        request = [{"from": signer.address, "to": TO, "value": "0x1", "gas": "0x5208"}]

        send = asyncio.create_task(methods.eth_sendTransaction(request, CallContext()))
        await asyncio.sleep(LEASE * 1.5)
        await nonces.sync(signer.address)  # a gap repair round while the send waits
        with pytest.raises(UpstreamTimeout, match="may still be mined") as info:
            await send
        await asyncio.sleep(LEASE)
        await nonces.sync(signer.address)  # the next round

        attempted = [p[0] for m, p in node.calls if m == "eth_sendRawTransaction"]
        assert len(attempted) == 1
        assert attempted[0] in [to_data(raw) for raw in node.resent]  # the store sent them
        assert info.value.data["nonce"] == "0x0"
        assert info.value.data["txHash"] in info.value.message
        # And the nonce is not handed out again under those bytes.
        assert (await nonces.reserve(signer.address)).nonce == 1
    finally:
        await redis.aclose()
