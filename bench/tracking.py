"""The tracker's cost with many transactions pending: CPU per tracked transaction for one
watch round, and Redis round trips, with N records of one address (default 1,000).

    .venv/bin/python -m bench.tracking [N]

The node is a small fake at the Upstream seam (it answers "still pending" for every hash):
what is measured is the tracker's own work (decide, store, encode), not anvil's. Redis is a
real redis-server started on a free loopback port.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from signer_proxy.access.gate import SigningGate
from signer_proxy.chain.fill import ChainFacts
from signer_proxy.eth.ecdsa import Signature
from signer_proxy.eth.tx_encoding import UnsignedTx, sign_with
from signer_proxy.keys import KeyRegistry
from signer_proxy.nonces.redis_store import connect
from signer_proxy.tracking.store import MemoryTrackStore, RedisTrackStore
from signer_proxy.tracking.tracker import Tracker
from tests.conftest import start_redis_server, stop

ADDRESS = "0x" + "11" * 20


class PendingNode:
    """Every transaction known and pending; block 1; nothing mined."""

    display_url = "fake"

    async def call(self, method: str, params: Any) -> Any:
        return {
            "eth_blockNumber": "0x1",
            "eth_getTransactionCount": "0x0",
            "eth_chainId": "0x1",
        }.get(method, {"hash": params[0] if params else None})

    async def forward(self, body: bytes) -> bytes:
        raise NotImplementedError


async def measure(store: Any, n: int) -> dict[str, float]:
    node = PendingNode()
    registry = KeyRegistry([])
    tracker = Tracker(store, node, ChainFacts(node), lambda: registry, SigningGate())
    sig = Signature(r=1, s=2, y_parity=0)
    started = time.process_time()
    for nonce in range(n):
        tx = UnsignedTx(
            type=2, chain_id=1, nonce=nonce, gas=21000, to=ADDRESS, value=1, data=b"",
            max_fee_per_gas=10**10, max_priority_fee_per_gas=10**9,
        )  # fmt: skip
        await tracker.track_send(sign_with(tx, sig), tx, ADDRESS, "bench")  # as a send does
    track_cpu = time.process_time() - started
    trips_before = getattr(store, "round_trips", 0)
    started = time.process_time()
    await tracker.watch(1, ADDRESS.lower())  # first round: records the block seen
    first_cpu = time.process_time() - started
    trips_first = getattr(store, "round_trips", 0) - trips_before
    started = time.process_time()
    await tracker.watch(1, ADDRESS.lower())  # a steady round: nothing changed
    round_cpu = time.process_time() - started
    trips_round = getattr(store, "round_trips", 0) - trips_before - trips_first
    return {
        "track_us_per_tx": round(track_cpu / n * 1e6, 1),
        "first_round_us_per_tx": round(first_cpu / n * 1e6, 1),
        "steady_round_us_per_tx": round(round_cpu / n * 1e6, 1),
        "redis_round_trips_per_track": round(trips_before / n, 2),
        "redis_round_trips_first_round": trips_first,
        "redis_round_trips_steady_round": trips_round,
    }


async def main(n: int) -> None:
    results = {"pending": n, "memory": await measure(MemoryTrackStore(), n)}
    server = start_redis_server()
    try:
        redis = connect(server.url)
        results["redis"] = await measure(RedisTrackStore(redis), n)
        await redis.aclose()
    finally:
        stop(server.process)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000))
