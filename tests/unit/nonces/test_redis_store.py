"""redis_nonces.RedisNonceManager against a real redis-server, with a scripted node (pending
count and eth_sendRawTransaction) at the manager's own seams. Several manager instances, each
with its own Redis connection pool, stand for several replicas."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio import Redis

from signer_proxy.deadline import deadline_scope
from signer_proxy.errors import NodeRejected, NonceLeaseExpired, NonceStoreUnavailable
from signer_proxy.nonces.redis_store import RedisNonceManager, connect
from tests.conftest import free_port
from tests.unit.nonces.next_nonce_contract import (
    next_nonce_counts_our_transactions_the_node_forgot,
    next_nonce_follows_reserve,
)

ALICE = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
BOB = "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359"


class FakeNode:
    """The node as the manager sees it: pending counts, and the raw txs resent to it."""

    def __init__(self, **counts: int) -> None:
        self.counts = {ALICE.lower(): counts.get("alice", 0), BOB.lower(): counts.get("bob", 0)}
        self.mined = {ALICE.lower(): 0, BOB.lower(): 0}
        self.asked = 0
        self.resent: list[bytes] = []
        self.refuse_with: str | None = None

    async def pending_count(self, address: str) -> int:
        self.asked += 1
        await asyncio.sleep(0)
        return self.counts[address.lower()]

    async def mined_count(self, address: str) -> int:
        return self.mined[address.lower()]

    async def send_raw(self, raw: bytes) -> None:
        self.resent.append(raw)
        if self.refuse_with is not None:
            raise NodeRejected(-32000, self.refuse_with)

    def set(self, address: str, count: int) -> None:
        self.counts[address.lower()] = count


ManagerFactory = Callable[..., RedisNonceManager]


@pytest.fixture
async def managers(redis_url: str) -> AsyncIterator[ManagerFactory]:
    """`managers(node, lease_seconds=30, chain_id=31337)`: a new replica's manager."""
    clients: list[Redis] = []

    def make(
        node: FakeNode, lease_seconds: float = 30.0, chain_id: int = 31337, mined: bool = False
    ) -> RedisNonceManager:
        client = connect(redis_url)
        clients.append(client)

        async def chain() -> int:
            return chain_id

        return RedisNonceManager(
            client,
            node.pending_count,
            node.send_raw,
            chain,
            lease_seconds,
            redis_url,
            mined_count=node.mined_count if mined else None,
        )

    yield make
    for client in clients:
        await client.aclose()


async def test_reserve_concurrent_from_three_replicas_distinct_consecutive(
    managers: ManagerFactory,
) -> None:
    node = FakeNode(alice=7)
    replicas = [managers(node) for _ in range(3)]

    leases = await asyncio.gather(*(replicas[i % 3].reserve(ALICE) for i in range(300)))

    assert sorted(lease.nonce for lease in leases) == list(range(7, 307))
    # A cold burst asks the node about once per replica (a few more when replicas race on the
    # first read), never once per reservation.
    assert node.asked <= 9


async def test_burst_runs_on_the_counter_while_leases_are_out(managers: ManagerFactory) -> None:
    node = FakeNode(alice=3)
    first, second = managers(node), managers(node)
    held = await first.reserve(ALICE)
    node.set(ALICE, 0)  # the node has seen nothing yet

    assert (held.nonce, (await second.reserve(ALICE)).nonce) == (3, 4)


async def test_release_hands_the_nonce_out_again_lowest_first(managers: ManagerFactory) -> None:
    node = FakeNode()
    one, other = managers(node), managers(node)
    leases = [await one.reserve(ALICE) for _ in range(4)]  # 0, 1, 2, 3

    await leases[2].release()
    await leases[1].release()

    again = [(await other.reserve(ALICE)).nonce for _ in range(3)]
    assert again == [1, 2, 4]


async def test_a_lease_is_released_even_when_the_request_deadline_is_spent(
    managers: ManagerFactory,
) -> None:
    # The request failed at its deadline (KMS stalled until then): the release still reaches
    # Redis, or the nonce would be held from everyone until the lease ran out.
    manager = managers(FakeNode())
    lease = await manager.reserve(ALICE)
    with deadline_scope(0.0):
        await lease.release()
    assert (await manager.reserve(ALICE)).nonce == lease.nonce


async def test_commit_keeps_the_nonce_used(managers: ManagerFactory) -> None:
    manager = managers(FakeNode())
    held = await manager.reserve(ALICE)
    used = await manager.reserve(ALICE)
    await used.record(b"\x02raw-1")
    await used.commit()
    await used.release()  # settled once: a late release changes nothing

    assert (held.nonce, used.nonce) == (0, 1)
    assert (await manager.reserve(ALICE)).nonce == 2


async def test_idle_address_follows_the_node_both_ways(managers: ManagerFactory) -> None:
    node = FakeNode(alice=5)
    manager = managers(node)
    lease = await manager.reserve(ALICE)
    await lease.commit()  # committed without a recorded tx (eth_signTransaction)

    node.set(ALICE, 9)  # sent around the proxy
    lease = await manager.reserve(ALICE)
    assert lease.nonce == 9
    await lease.commit()

    node.set(ALICE, 9)  # the node never got 9 (the caller never broadcast it)
    assert (await manager.reserve(ALICE)).nonce == 9


async def test_next_nonce_is_what_the_next_reservation_gets_and_reserves_nothing(
    managers: ManagerFactory,
) -> None:
    """Across replicas: the node's count until a lease is out, then the shared counter (a
    send of another replica still in flight counts), or the lowest released nonce under it;
    a lease that ran out sends it back to the node's count, as reserve would sync."""
    node = FakeNode(alice=5)
    one, other = managers(node, lease_seconds=0.3), managers(node, lease_seconds=0.3)
    second, _ = await next_nonce_follows_reserve(one, other, node)
    await second.commit()
    await asyncio.sleep(0.4)  # nonce 5's lease runs out
    node.set(ALICE, 6)
    assert await other.next_nonce(ALICE) == 6


async def test_addresses_and_chains_do_not_share_state(managers: ManagerFactory) -> None:
    node = FakeNode(alice=1, bob=40)
    mainnet, testnet = managers(node, chain_id=1), managers(node, chain_id=5)
    held = [await mainnet.reserve(ALICE), await mainnet.reserve(BOB), await testnet.reserve(ALICE)]

    assert [lease.nonce for lease in held] == [1, 40, 1]


async def test_expired_lease_of_a_dead_replica_is_reissued(managers: ManagerFactory) -> None:
    node = FakeNode()
    dead, alive = managers(node, lease_seconds=0.2), managers(node, lease_seconds=0.2)
    await dead.reserve(ALICE)  # 0: the replica dies before recording or sending
    sent = await alive.reserve(ALICE)  # 1
    await sent.record(b"\x02raw-1")
    await sent.commit()
    await asyncio.sleep(0.3)

    result = await alive.sync(ALICE)

    assert result.holes == (0,) and result.released == (0,)
    # 1 sits behind the hole: the node may have dropped it, so the same bytes go again.
    assert node.resent == [b"\x02raw-1"]
    assert (await alive.reserve(ALICE)).nonce == 0  # the hole goes to the next send
    assert (await alive.reserve(ALICE)).nonce == 2


async def test_recording_after_the_lease_ran_out_is_refused(managers: ManagerFactory) -> None:
    node = FakeNode()
    slow, other = managers(node, lease_seconds=0.2), managers(node, lease_seconds=0.2)
    lease = await slow.reserve(ALICE)
    await other.reserve(ALICE)  # keeps the address busy
    await asyncio.sleep(0.3)
    await other.sync(ALICE)
    reissued = await other.reserve(ALICE)

    with pytest.raises(NonceLeaseExpired, match="nothing was sent"):
        await lease.record(b"\x02late")
    await reissued.record(b"\x02on-time")  # the new holder still owns it
    assert reissued.nonce == lease.nonce == 0


async def test_orphaned_raw_tx_is_resent_never_reissued(managers: ManagerFactory) -> None:
    node = FakeNode()
    dead, alive = managers(node, lease_seconds=0.2), managers(node, lease_seconds=0.2)
    lease = await dead.reserve(ALICE)
    await lease.record(b"\x02signed-by-the-dead-replica")  # then killed before the send
    await asyncio.sleep(0.3)

    result = await alive.sync(ALICE)

    assert result.resent == (0,) and result.holes == ()
    assert node.resent == [b"\x02signed-by-the-dead-replica"]
    assert (await alive.reserve(ALICE)).nonce == 1  # 0 is not signed a second time


async def test_resent_raw_tx_refused_outright_frees_its_nonce(managers: ManagerFactory) -> None:
    node = FakeNode()
    manager = managers(node, lease_seconds=0.2)
    lease = await manager.reserve(ALICE)
    await lease.record(b"\x02underfunded")
    await asyncio.sleep(0.3)
    node.refuse_with = "insufficient funds for gas * price + value"

    await manager.sync(ALICE)

    assert node.resent == [b"\x02underfunded"]
    assert (await manager.reserve(ALICE)).nonce == 0


async def test_raw_tx_the_node_has_is_forgotten_not_resent(managers: ManagerFactory) -> None:
    node = FakeNode()
    manager = managers(node, lease_seconds=0.2)
    lease = await manager.reserve(ALICE)
    await lease.record(b"\x02mined")
    await lease.commit()
    node.set(ALICE, 1)  # the node has it
    await asyncio.sleep(0.3)

    result = await manager.sync(ALICE)

    assert result.resent == () and node.resent == []


async def test_commit_as_taken_forgets_the_refused_raw_tx(managers: ManagerFactory) -> None:
    """ "nonce too low" / "replacement underpriced": never resend those bytes later (the
    request moved on to a new nonce: a late resend would execute it twice)."""
    node = FakeNode()
    manager = managers(node, lease_seconds=0.2)
    busy = await manager.reserve(ALICE)  # 0, so the address is not idle at the sync
    refused = await manager.reserve(ALICE)  # 1
    await refused.record(b"\x02refused")
    await refused.commit(sent=False)
    await busy.record(b"\x02zero")
    await busy.commit()
    await asyncio.sleep(0.3)

    await manager.sync(ALICE)

    assert b"\x02refused" not in node.resent
    assert node.resent == [b"\x02zero"]


async def test_resync_raises_the_counter_but_never_under_leases(managers: ManagerFactory) -> None:
    node = FakeNode()
    manager = managers(node)
    leases = [await manager.reserve(ALICE) for _ in range(3)]  # 0, 1, 2 out

    node.set(ALICE, 10)  # "nonce too low": someone else used up to 9
    await manager.resync(ALICE)
    assert (await manager.reserve(ALICE)).nonce == 10

    node.set(ALICE, 0)  # a lagging node: the leases out still hold 0..2 and 10
    await manager.resync(ALICE)
    assert (await manager.reserve(ALICE)).nonce == 11
    assert [lease.nonce for lease in leases] == [0, 1, 2]


async def test_claim_takes_a_nonce_only_while_it_is_released(managers: ManagerFactory) -> None:
    manager = managers(FakeNode())
    first = await manager.reserve(ALICE)
    second = await manager.reserve(ALICE)
    await first.release()

    claimed = await manager.claim(ALICE, 0)
    assert claimed is not None and claimed.nonce == 0
    assert await manager.claim(ALICE, 0) is None  # held now
    assert await manager.claim(ALICE, second.nonce) is None  # never released


async def test_unreachable_redis_is_a_clear_error_without_the_password() -> None:
    url = f"redis://:s3cret@127.0.0.1:{free_port()}/0"
    client = connect(url)

    async def chain() -> int:
        return 1

    node = FakeNode()
    manager = RedisNonceManager(client, node.pending_count, node.send_raw, chain, 30, url)
    try:
        with pytest.raises(NonceStoreUnavailable) as info:
            await manager.reserve(ALICE)
        with pytest.raises(NonceStoreUnavailable):
            await manager.ping()
    finally:
        await client.aclose()

    assert info.value.code == -32050
    assert "--nonce-store" in info.value.message and "127.0.0.1" in info.value.message
    assert "s3cret" not in info.value.message


async def test_leases_survive_a_replica_that_restarts(managers: ManagerFactory) -> None:
    """State is in Redis, not in the process: a new manager continues where the old left."""
    node = FakeNode()
    before = managers(node)
    held = [await before.reserve(ALICE) for _ in range(3)]

    after = managers(node)

    assert (await after.reserve(ALICE)).nonce == 3
    assert len({lease.nonce for lease in held}) == 3


async def test_a_pool_the_node_forgot_gets_the_same_bytes_again_never_fillers(
    managers: ManagerFactory,
) -> None:
    """Sent transactions sit in the node's pool (pending count 3, none mined); the node then
    forgets its pool (a restart, a provider's drop). The recorded bytes are resent, lowest
    first, and no nonce becomes a hole (which gap repair would fill over them)."""
    node = FakeNode()
    manager = managers(node, lease_seconds=0.2, mined=True)
    for i in range(3):
        lease = await manager.reserve(ALICE)
        await lease.record(b"\x02sent-%d" % i)
        await lease.commit()
    node.set(ALICE, 3)
    await asyncio.sleep(0.3)
    assert (await manager.sync(ALICE)).resent == ()  # the node has them: nothing to do

    node.set(ALICE, 0)  # the pool is gone
    result = await manager.sync(ALICE)

    assert result.holes == () and result.resent == (0, 1, 2)
    assert node.resent == [b"\x02sent-0", b"\x02sent-1", b"\x02sent-2"]
    node.set(ALICE, 3)
    node.mined[ALICE.lower()] = 3  # mined: the recorded bytes are let go
    await manager.sync(ALICE)
    raw_key = (await manager._keys(ALICE))[4]
    assert await manager._redis.hlen(raw_key) == 0


async def test_next_nonce_counts_our_transactions_the_node_forgot(
    managers: ManagerFactory,
) -> None:
    node = FakeNode(alice=0)
    one, other = managers(node, mined=True), managers(node, mined=True)
    await next_nonce_counts_our_transactions_the_node_forgot(one, node, lambda: None)
    assert await other.next_nonce(ALICE) == 4  # and another replica agrees


async def test_a_release_after_the_lease_was_reaped_says_so_and_keeps_the_bytes(
    managers: ManagerFactory,
) -> None:
    """A release is a promise that the recorded bytes are forgotten; once a sync has reaped
    the lease it cannot keep it, and says so (the send path then reports "maybe sent")."""
    node = FakeNode(alice=0)
    one, other = managers(node, lease_seconds=0.05), managers(node, lease_seconds=0.05)
    lease = await one.reserve(ALICE)
    await lease.record(b"ours")
    await asyncio.sleep(0.1)
    await other.sync(ALICE)  # reaps the lease, and resends the recorded bytes
    assert node.resent == [b"ours"]
    assert await lease.release() is False
    assert (await other.reserve(ALICE)).nonce == 1  # 0 stays with its transaction
    fresh = await one.reserve(ALICE)
    assert await fresh.release() is True
