"""nonces.MemoryNonceManager against a scripted pending count (the node's, per address)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from signer_proxy.nonces.base import Lease
from signer_proxy.nonces.memory import MemoryNonceManager
from tests.unit.nonces.next_nonce_contract import (
    next_nonce_counts_our_transactions_the_node_forgot,
    next_nonce_follows_reserve,
)

ALICE = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
BOB = "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359"


class FakeNode:
    """eth_getTransactionCount(address, "pending"): a settable count, and who asked."""

    def __init__(self, **counts: int) -> None:
        self.counts = {ALICE.lower(): counts.get("alice", 0), BOB.lower(): counts.get("bob", 0)}
        self.asked: list[str] = []

    async def pending_count(self, address: str) -> int:
        self.asked.append(address)
        await asyncio.sleep(0)  # let other reservations interleave, as real I/O would
        return self.counts[address.lower()]

    def set(self, address: str, count: int) -> None:
        self.counts[address.lower()] = count


async def test_reserve_100_concurrent_get_distinct_consecutive_nonces() -> None:
    node = FakeNode(alice=7)
    nonces = MemoryNonceManager(node.pending_count)

    leases = await asyncio.gather(*(nonces.reserve(ALICE) for _ in range(100)))

    assert sorted(lease.nonce for lease in leases) == list(range(7, 107))
    assert len(node.asked) == 1  # the burst runs on the counter, not on the lagging node


async def test_reserve_burst_ignores_a_lagging_node_while_leases_are_out() -> None:
    node = FakeNode(alice=3)
    nonces = MemoryNonceManager(node.pending_count)
    first = await nonces.reserve(ALICE)
    node.set(ALICE, 0)  # the node has not seen anything yet

    second = await nonces.reserve(ALICE)

    assert (first.nonce, second.nonce) == (3, 4)


async def test_release_hands_the_nonce_out_again_before_new_ones() -> None:
    nonces = MemoryNonceManager(FakeNode(alice=0).pending_count)
    leases = [await nonces.reserve(ALICE) for _ in range(4)]  # 0, 1, 2, 3

    await leases[2].release()
    await leases[1].release()

    again = [(await nonces.reserve(ALICE)).nonce for _ in range(3)]
    assert again == [1, 2, 4]  # lowest released first, then the counter


async def test_commit_does_not_hand_the_nonce_out_again() -> None:
    nonces = MemoryNonceManager(FakeNode(alice=0).pending_count)
    held = await nonces.reserve(ALICE)  # keeps the address busy
    used = await nonces.reserve(ALICE)

    await used.commit()

    assert (held.nonce, used.nonce) == (0, 1)
    assert (await nonces.reserve(ALICE)).nonce == 2


async def test_lease_is_settled_once_release_after_commit_is_ignored() -> None:
    nonces = MemoryNonceManager(FakeNode(alice=0).pending_count)
    held = await nonces.reserve(ALICE)
    used = await nonces.reserve(ALICE)

    await used.commit()
    await used.release()  # e.g. an error handler running after the send succeeded

    assert held.nonce == 0
    assert (await nonces.reserve(ALICE)).nonce == 2


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def idle_nonces(node: FakeNode, clock: Clock) -> MemoryNonceManager:
    return MemoryNonceManager(node.pending_count, idle_trust_seconds=1.0, clock=clock)


async def sent(lease: Lease) -> None:
    """What eth_sendTransaction does with a lease once the node took the transaction."""
    await lease.record(b"the signed transaction")
    await lease.commit()


async def test_reserve_when_idle_rereads_the_pending_count() -> None:
    node, clock = FakeNode(alice=5), Clock()
    nonces = idle_nonces(node, clock)
    lease = await nonces.reserve(ALICE)
    await lease.commit()
    node.set(ALICE, 9)  # sent around the proxy, or our own tx plus others
    clock.now += 1.0

    assert (await nonces.reserve(ALICE)).nonce == 9
    assert len(node.asked) == 2


async def test_reserve_when_idle_can_step_back_to_a_dropped_transaction() -> None:
    node, clock = FakeNode(alice=5), Clock()
    nonces = idle_nonces(node, clock)
    lease = await nonces.reserve(ALICE)
    await lease.commit()  # nonce 5 was sent ... and then the node dropped it
    clock.now += 1.0

    assert (await nonces.reserve(ALICE)).nonce == 5


async def test_release_of_every_lease_is_forgotten_once_idle() -> None:
    node, clock = FakeNode(alice=0), Clock()
    nonces = idle_nonces(node, clock)
    a, b = await nonces.reserve(ALICE), await nonces.reserve(ALICE)
    await b.release()
    await a.release()
    node.set(ALICE, 4)
    clock.now += 1.0

    assert (await nonces.reserve(ALICE)).nonce == 4  # the node's count, not a stale release


async def test_sends_one_after_another_keep_the_counter_without_asking_the_node() -> None:
    node, clock = FakeNode(alice=5), Clock()
    nonces = idle_nonces(node, clock)
    used = []
    for _ in range(20):  # one client, one send at a time: idle between each
        lease = await nonces.reserve(ALICE)
        used.append(lease.nonce)
        await lease.record(b"the signed transaction")
        await lease.commit()
        clock.now += 1 / 32  # (exact in binary)
    node.set(ALICE, 25)

    assert used == list(range(5, 25))
    assert len(node.asked) == 1  # 0.625 s: still within the trust window
    clock.now += 0.375  # the last read is now 1 s old
    assert (await nonces.reserve(ALICE)).nonce == 25
    assert len(node.asked) == 2


async def test_release_while_idle_is_handed_out_again_within_the_trust_window() -> None:
    node, clock = FakeNode(alice=0), Clock()
    nonces = idle_nonces(node, clock)
    await sent(await nonces.reserve(ALICE))
    refused = await nonces.reserve(ALICE)
    await refused.release()  # the node refused nonce 1 outright: it is free
    clock.now += 0.5

    assert [(await nonces.reserve(ALICE)).nonce for _ in range(2)] == [1, 2]
    assert len(node.asked) == 1


async def test_resync_restarts_the_trust_window() -> None:
    node, clock = FakeNode(alice=0), Clock()
    nonces = idle_nonces(node, clock)
    await sent(await nonces.reserve(ALICE))
    clock.now += 0.9
    node.set(ALICE, 7)  # "nonce too low": others used 1..6
    await nonces.resync(ALICE)
    clock.now += 0.9  # 1.8 s after the first read, 0.9 s after the resync

    assert (await nonces.reserve(ALICE)).nonce == 7
    assert len(node.asked) == 2


async def test_resync_moves_the_counter_up_to_the_nodes_count() -> None:
    node = FakeNode(alice=0)
    nonces = MemoryNonceManager(node.pending_count)
    held = await nonces.reserve(ALICE)  # 0, still out
    node.set(ALICE, 10)  # "nonce too low": others used 0..9

    await nonces.resync(ALICE)

    assert held.nonce == 0
    assert (await nonces.reserve(ALICE)).nonce == 10


async def test_resync_never_steps_under_leased_nonces() -> None:
    node = FakeNode(alice=0)
    nonces = MemoryNonceManager(node.pending_count)
    leases = [await nonces.reserve(ALICE) for _ in range(5)]  # 0..4 out
    node.set(ALICE, 2)  # the node has only seen two of them so far

    await nonces.resync(ALICE)

    assert (await nonces.reserve(ALICE)).nonce == 5
    assert [lease.nonce for lease in leases] == [0, 1, 2, 3, 4]


async def test_resync_drops_released_nonces_the_node_has_passed() -> None:
    node = FakeNode(alice=0)
    nonces = MemoryNonceManager(node.pending_count)
    leases = [await nonces.reserve(ALICE) for _ in range(6)]  # 0..5
    await leases[1].release()
    await leases[4].release()
    node.set(ALICE, 3)  # nonce 1 got used by someone else; 4 is still free

    await nonces.resync(ALICE)

    assert [(await nonces.reserve(ALICE)).nonce for _ in range(2)] == [4, 6]


async def test_resync_when_idle_takes_the_nodes_count_even_if_lower() -> None:
    node = FakeNode(alice=0)
    nonces = MemoryNonceManager(node.pending_count)
    for _ in range(3):
        await (await nonces.reserve(ALICE)).commit()  # each reserve saw the node at 0
    node.set(ALICE, 1)

    await nonces.resync(ALICE)

    assert (await nonces.reserve(ALICE)).nonce == 1


async def test_addresses_are_independent() -> None:
    node = FakeNode(alice=3, bob=100)
    nonces = MemoryNonceManager(node.pending_count)

    alice = await asyncio.gather(*(nonces.reserve(ALICE) for _ in range(3)))
    bob = await asyncio.gather(*(nonces.reserve(BOB) for _ in range(3)))
    await alice[0].release()

    assert sorted(lease.nonce for lease in alice) == [3, 4, 5]
    assert sorted(lease.nonce for lease in bob) == [100, 101, 102]
    assert (await nonces.reserve(BOB)).nonce == 103  # Alice's release is not Bob's
    assert (await nonces.reserve(ALICE)).nonce == 3


@pytest.mark.parametrize(
    "other_spelling",
    [pytest.param(ALICE.lower(), id="lower"), pytest.param("0x" + ALICE[2:].upper(), id="upper")],
)
async def test_addresses_are_case_insensitive(other_spelling: str) -> None:
    node = FakeNode(alice=0)
    nonces = MemoryNonceManager(node.pending_count)

    first = await nonces.reserve(ALICE)
    second = await nonces.reserve(other_spelling)

    assert (first.nonce, second.nonce) == (0, 1)
    assert len(node.asked) == 1


@pytest.mark.parametrize(
    "settle",
    [
        # eth_signTransaction: the caller has the bytes and may never send them.
        pytest.param(lambda lease: lease.commit(), id="signed-not-sent"),
        # A clash: the nonce is taken by a transaction sent around the proxy.
        pytest.param(lambda lease: lease.commit(sent=False), id="taken-by-another"),
    ],
)
async def test_a_nonce_used_but_not_sent_here_makes_the_next_idle_reserve_ask_the_node(
    settle: Any,
) -> None:
    node, clock = FakeNode(alice=3), Clock()
    nonces = idle_nonces(node, clock)
    lease = await nonces.reserve(ALICE)
    await settle(lease)
    clock.now += 0.1  # well within the trust window

    assert (await nonces.reserve(ALICE)).nonce == 3  # the node still says 3
    assert len(node.asked) == 2


class ForgetfulNode(FakeNode):
    """A node with a mined count too, that takes raw bytes sent again (or refuses them)."""

    def __init__(self, **counts: int) -> None:
        super().__init__(**counts)
        self.mined = {ALICE.lower(): 0, BOB.lower(): 0}
        self.resent: list[bytes] = []
        self.refuse: dict[bytes, str] = {}

    async def mined_count(self, address: str) -> int:
        return self.mined[address.lower()]

    async def send_raw(self, raw: bytes) -> None:
        self.resent.append(raw)
        if raw in self.refuse:
            from signer_proxy.errors import NodeRejected

            raise NodeRejected(-32000, self.refuse[raw])


def keeping(node: ForgetfulNode, clock: Clock) -> MemoryNonceManager:
    from signer_proxy.nonces.memory import Resender

    resender = Resender(node.mined_count, node.send_raw)
    return MemoryNonceManager(node.pending_count, 1.0, clock, resender)


async def send_bytes(nonces: MemoryNonceManager, raw: bytes) -> int:
    lease = await nonces.reserve(ALICE)
    await lease.record(raw)
    await lease.commit()
    return lease.nonce


async def test_a_forgotten_pool_gets_our_bytes_again_not_new_transactions() -> None:
    """Three of our transactions pooled, none mined; the node forgets its pool. The next
    reservation resends the same bytes, lowest first, and takes the nonce after them."""
    node, clock = ForgetfulNode(), Clock()
    nonces = keeping(node, clock)
    for i in range(3):
        assert await send_bytes(nonces, b"tx-%d" % i) == i
    node.set(ALICE, 0)  # pool forgotten: pending count back to the mined count (0)
    clock.now += 1.0

    assert (await nonces.reserve(ALICE)).nonce == 3
    assert node.resent == [b"tx-0", b"tx-1", b"tx-2"]


async def test_a_forgotten_transaction_refused_again_leaves_its_nonce_to_the_next_send() -> None:
    node, clock = ForgetfulNode(), Clock()
    nonces = keeping(node, clock)
    for i in range(3):
        await send_bytes(nonces, b"tx-%d" % i)
    node.refuse[b"tx-1"] = "insufficient funds for gas * price + value"
    node.set(ALICE, 0)
    clock.now += 1.0

    first, second = await nonces.reserve(ALICE), await nonces.reserve(ALICE)

    assert (first.nonce, second.nonce) == (1, 3)  # the hole first, then above ours
    assert node.resent == [b"tx-0", b"tx-1", b"tx-2"]


async def test_mined_transactions_are_let_go_and_nothing_is_resent_while_the_node_has_them() -> (
    None
):
    node, clock = ForgetfulNode(), Clock()
    nonces = keeping(node, clock)
    for i in range(2):
        await send_bytes(nonces, b"tx-%d" % i)
    node.set(ALICE, 2)  # pooled: nothing to do
    clock.now += 1.0
    assert (await nonces.reserve(ALICE)).nonce == 2
    assert node.resent == []
    node.mined[ALICE.lower()] = 2  # mined: forgotten from memory
    node.set(ALICE, 2)
    clock.now += 1.0
    await nonces.resync(ALICE)
    assert nonces._state(ALICE).sent == {}


async def test_without_a_resender_an_idle_address_still_follows_the_node_down() -> None:
    node, clock = FakeNode(alice=2), Clock()
    nonces = idle_nonces(node, clock)
    await sent(await nonces.reserve(ALICE))
    node.set(ALICE, 2)
    clock.now += 1.0
    assert (await nonces.reserve(ALICE)).nonce == 2


async def test_at_most_max_kept_are_kept_the_newest(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under sustained load nothing is idle, so nothing mined is let go: the oldest kept
    bytes make room (in O(1): a min() over thousands per send was measurable)."""
    from signer_proxy.nonces import memory

    monkeypatch.setattr(memory, "MAX_KEPT", 5)
    node, clock = ForgetfulNode(), Clock()
    nonces = keeping(node, clock)
    for i in range(8):
        await send_bytes(nonces, b"tx-%d" % i)
    assert nonces._state(ALICE).sent == {i: b"tx-%d" % i for i in range(3, 8)}


async def test_next_nonce_is_what_the_next_reservation_gets_and_reserves_nothing() -> None:
    """Fresh: the node's count. While leases are out: the counter (a send still in flight
    counts), or the lowest released nonce under it. Idle long enough: the node again."""
    node = FakeNode(alice=5)
    now = [0.0]
    nonces = MemoryNonceManager(node.pending_count, idle_trust_seconds=1.0, clock=lambda: now[0])
    for lease in await next_nonce_follows_reserve(nonces, nonces, node):  # then sent
        await lease.record(b"\x02raw")
        await lease.commit()
    node.set(ALICE, 9)  # sends around the proxy
    assert await nonces.next_nonce(ALICE) == 7  # idle, but the counter is still trusted
    now[0] += 2.0
    assert await nonces.next_nonce(ALICE) == 9  # idle long enough: the node's count
    assert await nonces.next_nonce(BOB) == 0


async def test_next_nonce_counts_our_transactions_the_node_forgot() -> None:
    node, clock = ForgetfulNode(), Clock()

    def idle() -> None:
        clock.now += 1.0

    await next_nonce_counts_our_transactions_the_node_forgot(keeping(node, clock), node, idle)
