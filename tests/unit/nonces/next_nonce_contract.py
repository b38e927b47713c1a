"""What every NonceManager's next_nonce promises, run against each (memory, Redis)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from signer_proxy.nonces.base import Lease, NonceManager

ALICE = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"


class SettableNode(Protocol):
    def set(self, address: str, count: int) -> None: ...


async def next_nonce_follows_reserve(
    reserver: NonceManager, asker: NonceManager, node: SettableNode
) -> tuple[Lease, Lease]:
    """With the node at 5: the node's count while nothing is out; with 5 and 6 leased and
    unseen by the node, 7, asked twice (nothing reserved); 6's neighbour 5 released, 5, and
    reserve agrees. Returns the two leases left out (6, then 5)."""
    assert await asker.next_nonce(ALICE) == 5
    first, second = await reserver.reserve(ALICE), await reserver.reserve(ALICE)
    assert (first.nonce, second.nonce) == (5, 6)
    node.set(ALICE, 0)  # the node has seen neither yet
    assert await asker.next_nonce(ALICE) == 7
    assert await asker.next_nonce(ALICE) == 7
    await first.release()
    assert await asker.next_nonce(ALICE) == 5
    third = await asker.reserve(ALICE)
    assert third.nonce == 5
    return second, third


async def next_nonce_counts_our_transactions_the_node_forgot(
    manager: NonceManager, node: SettableNode, idle: Callable[[], None]
) -> None:
    """Three of our sends recorded, then the node forgets its pool (count back to 0):
    reserve resends them and hands out 3, so next_nonce says 3, not the node's 0 (found by
    review: an EIP-7702 authorization signed for 0 is invalid once ours are mined again)."""
    for raw in (b"tx-0", b"tx-1", b"tx-2"):
        lease = await manager.reserve(ALICE)
        await lease.record(raw)
        await lease.commit()
    node.set(ALICE, 0)
    idle()  # long enough that reserve asks the node again
    predicted = await manager.next_nonce(ALICE)
    assert predicted == (await manager.reserve(ALICE)).nonce == 3
