"""The tracker's cost with many transactions pending: CPU per tracked transaction (sends
tracked one at a time, and 16 at once as concurrent sends are), per transaction of a watch
round (the first, a steady one, and the one that finds them all mined: in a block body, and
by a receipt each), and Redis round trips, with N records of one address (default 1,000).

    .venv/bin/python -m bench.tracking [N]

The node is a small fake at the Upstream seam that answers batches as JSON bytes, as a node
does ("still pending" for every hash, then "mined" with a receipt): what is measured is the
tracker's own work (decide, store, encode, decode), not anvil's. Redis is a real
redis-server started on a free loopback port.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import uvloop

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
    """Every transaction known and pending at block 1 (in the pool below `pooled`), until
    `mined` is set: then every one mined in block 2 (its body lists `hashes`; a receipt like
    a node's, logs empty)."""

    display_url = "fake"

    def __init__(self) -> None:
        self.mined = 0
        self.pooled = 0  # the pending count: transactions below it are in the pool
        self.hashes: list[str] = []
        self.bodies = True  # False: a node that serves no block bodies (receipts are asked)

    async def call(self, method: str, params: Any) -> Any:
        if method == "eth_getTransactionReceipt":
            tx_hash = params[0]
            return {
                "transactionHash": tx_hash, "blockNumber": "0x2", "blockHash": "0x" + "22" * 32,
                "status": "0x1", "gasUsed": "0x5208", "cumulativeGasUsed": "0x5208",
                "effectiveGasPrice": "0x3b9aca00", "from": ADDRESS, "to": ADDRESS,
                "transactionIndex": "0x0", "logs": [], "logsBloom": "0x" + "00" * 256,
                "type": "0x2", "contractAddress": None,
            }  # fmt: skip
        if method == "eth_getTransactionCount":
            return hex(self.pooled if params[1] == "pending" else self.mined)
        if method == "eth_getBlockByNumber":
            if not self.bodies:
                return None
            number = int(params[0], 16)
            return {"number": params[0], "transactions": self.hashes if number == 2 else []}
        return {
            "eth_blockNumber": hex(1 + bool(self.mined)),
            "eth_chainId": "0x1",
        }.get(method, {"hash": params[0] if params else None})

    async def forward(self, body: bytes) -> bytes:
        answers = []
        for call in json.loads(body):
            result = await self.call(call["method"], call["params"])
            answers.append({"jsonrpc": "2.0", "id": call["id"], "result": result})
        return json.dumps(answers).encode()


async def measure(store: Any, n: int, bodies: bool = True) -> dict[str, float]:
    """`bodies`: the mined round finds them in block 2's body; otherwise the node serves no
    bodies and a receipt is asked for each."""
    node = PendingNode()
    node.pooled = n
    registry = KeyRegistry([])
    tracker = Tracker(store, node, ChainFacts(node), lambda: registry, SigningGate())
    sig = Signature(r=1, s=2, y_parity=0)
    sends = []
    for nonce in range(n):
        tx = UnsignedTx(
            type=2, chain_id=1, nonce=nonce, gas=21000, to=ADDRESS, value=1, data=b"",
            max_fee_per_gas=10**10, max_priority_fee_per_gas=10**9,
        )  # fmt: skip
        sends.append((sign_with(tx, sig), tx))
    node.hashes = ["0x" + signed.hash.hex() for signed, _ in sends]
    half = n // 2
    started = time.process_time()
    for signed, tx in sends[:half]:
        await tracker.track_send(signed, tx, ADDRESS, "bench")  # as one send at a time does
    track_cpu = time.process_time() - started
    started = time.process_time()
    for at in range(half, n, 16):  # as 16 concurrent sends do (their records stored together)
        await asyncio.gather(
            *(
                tracker.track_send(signed, tx, ADDRESS, "bench")
                for signed, tx in sends[at : at + 16]
            )
        )
    group_cpu = time.process_time() - started
    trips_before = getattr(store, "round_trips", 0)
    started = time.process_time()
    await tracker.watch(1, ADDRESS.lower())  # first round: records the block seen
    first_cpu = time.process_time() - started
    trips_first = getattr(store, "round_trips", 0) - trips_before
    started = time.process_time()
    await tracker.watch(1, ADDRESS.lower())  # a steady round: nothing changed
    round_cpu = time.process_time() - started
    trips_round = getattr(store, "round_trips", 0) - trips_before - trips_first
    node.mined, node.bodies = n, bodies
    started = time.process_time()
    await tracker.watch(1, ADDRESS.lower())  # every one mined: each finalized
    mined_cpu = time.process_time() - started
    trips_mined = getattr(store, "round_trips", 0) - trips_before - trips_first - trips_round
    assert not await store.pending(1, ADDRESS), "the mined round left records pending"
    return {
        "track_us_per_tx": round(track_cpu / half * 1e6, 1),
        "track_16_at_once_us_per_tx": round(group_cpu / (n - half) * 1e6, 1),
        "first_round_us_per_tx": round(first_cpu / n * 1e6, 1),
        "steady_round_us_per_tx": round(round_cpu / n * 1e6, 1),
        "mined_round_us_per_tx": round(mined_cpu / n * 1e6, 1),
        "redis_round_trips_per_track": round(trips_before / n, 2),
        "redis_round_trips_first_round": trips_first,
        "redis_round_trips_steady_round": trips_round,
        "redis_round_trips_mined_round": trips_mined,
    }


async def main(n: int) -> None:
    results: dict[str, Any] = {"pending": n, "memory": await measure(MemoryTrackStore(), n)}
    receipts = await measure(MemoryTrackStore(), n, bodies=False)
    results["memory"]["mined_round_by_receipts_us_per_tx"] = receipts["mined_round_us_per_tx"]
    server = start_redis_server()
    try:
        redis = connect(server.url)
        results["redis"] = await measure(RedisTrackStore(redis), n)
        await redis.flushdb()
        receipts = await measure(RedisTrackStore(redis), n, bodies=False)
        results["redis"]["mined_round_by_receipts_us_per_tx"] = receipts["mined_round_us_per_tx"]
        await redis.aclose()
    finally:
        stop(server.process)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000))
