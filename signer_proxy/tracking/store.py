"""Where tracked transactions live: the `TrackStore` seam, in this process or in Redis.

With `--nonce-store redis://…` the records live in the same Redis as the nonces, so any
replica answers signer_getTransactionStatus for any of them and a replica that dies loses
nothing; one replica at a time watches each (chain, address), holding a lease it renews every
round (a dead watcher's lease runs out and another replica takes the address over).

Redis keys (the per-address ones share one hash slot, `{chain:address}`):

    signer-proxy:track:{C:A}:pending     hash  nonce -> record (JSON), while not final
    signer-proxy:track:{C:A}:lease       the replica watching the address (expires)
    signer-proxy:track:{C:A}:lock        held while a replacement is signed and sent
    signer-proxy:track:{C:A}:spent:DAY   extra fees allowed by bumps that UTC day (wei)
    signer-proxy:track:hash:H            "C:A:nonce" while pending; the final record (JSON),
                                         kept FINAL_TTL seconds, once final
    signer-proxy:track:watched           set of "C:A" with pending records
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any, Protocol

from redis.exceptions import RedisError

from signer_proxy.errors import NonceStoreUnavailable
from signer_proxy.nonces.redis_scripts import SharedRedis
from signer_proxy.tracking.state import Tracked

# How long a final record answers signer_getTransactionStatus.
FINAL_TTL = 7 * 24 * 3600
# Final records the in-process store keeps (oldest forgotten first).
MEMORY_FINAL_LIMIT = 100_000
# Pending records of one address kept parsed between watch rounds (above: parsed each round).
PARSED_LIMIT = 10_000
# How long a replacement may hold an address's lock (sign through KMS and send).
LOCK_SECONDS = 30.0

Address = tuple[int, str]


class TrackStore(Protocol):
    async def save(self, record: Tracked) -> None:
        """Insert or update `record` (indexed by each of its hashes)."""
        ...

    async def find(self, tx_hash: str) -> Tracked | None: ...

    async def pending(self, chain_id: int, address: str) -> list[Tracked]:
        """The address's records not final yet, lowest nonce first."""
        ...

    async def at_nonce(self, chain_id: int, address: str, nonce: int) -> Tracked | None:
        """The record of that nonce if it is not final yet."""
        ...

    async def before_track(
        self, tx_hash: str, chain_id: int, address: str, nonce: int
    ) -> tuple[Tracked | None, Tracked | None]:
        """(find(tx_hash), at_nonce(...)) at once: what tracking a new send asks first."""
        ...

    async def before_track_many(
        self, items: list[tuple[str, int, str, int]]
    ) -> list[tuple[Tracked | None, Tracked | None]]:
        """before_track for each (tx_hash, chain_id, address, nonce), in one go."""
        ...

    async def save_many(self, records: list[Tracked]) -> None:
        """save() each record, in one go."""
        ...

    async def add_new(self, records: list[Tracked]) -> list[bool]:
        """Store each pending record whose hash is unknown and whose nonce holds no record
        yet (a new send: the usual case), in one go; which of them were stored."""
        ...

    async def watched(self) -> list[Address]:
        """Every (chain id, address) with a record not final yet."""
        ...

    async def lease(self, chain_id: int, address: str, owner: str, seconds: float) -> bool:
        """Take or renew the watch over an address; False while another owner holds it."""
        ...

    async def spend(self, chain_id: int, address: str, day: str, amount: int, limit: int) -> bool:
        """Add `amount` to the day's extra fees if the total stays within `limit`."""
        ...

    async def spent(self, chain_id: int, address: str, day: str) -> int: ...

    def lock(self, chain_id: int, address: str) -> contextlib.AbstractAsyncContextManager[None]:
        """Held while a replacement for the address is made: one at a time, across replicas."""
        ...


def _addr(chain_id: int, address: str) -> str:
    return f"{chain_id}:{address.lower()}"


class MemoryTrackStore:
    """Records in this process (one replica; a restart forgets them)."""

    def __init__(self) -> None:
        self._pending: dict[str, dict[int, Tracked]] = {}
        self._by_hash: dict[str, tuple[str, int]] = {}
        self._final: OrderedDict[str, Tracked] = OrderedDict()
        self._spent: dict[tuple[str, str], int] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def save(self, record: Tracked) -> None:
        key = _addr(record.chain_id, record.address)
        if record.final:
            record = record.kept()
            self._pending.get(key, {}).pop(record.nonce, None)
            if not self._pending.get(key, True):
                del self._pending[key]
            for h in record.hashes:
                self._by_hash.pop(h.lower(), None)
                self._final[h.lower()] = record
                self._final.move_to_end(h.lower())
            while len(self._final) > MEMORY_FINAL_LIMIT:
                self._final.popitem(last=False)
            return
        self._pending.setdefault(key, {})[record.nonce] = record
        for h in record.hashes:
            self._by_hash[h.lower()] = (key, record.nonce)

    async def find(self, tx_hash: str) -> Tracked | None:
        where = self._by_hash.get(tx_hash.lower())
        if where is not None:
            return self._pending.get(where[0], {}).get(where[1])
        return self._final.get(tx_hash.lower())

    async def pending(self, chain_id: int, address: str) -> list[Tracked]:
        records = self._pending.get(_addr(chain_id, address), {})
        return [records[n] for n in sorted(records)]

    async def at_nonce(self, chain_id: int, address: str, nonce: int) -> Tracked | None:
        return self._pending.get(_addr(chain_id, address), {}).get(nonce)

    async def before_track(
        self, tx_hash: str, chain_id: int, address: str, nonce: int
    ) -> tuple[Tracked | None, Tracked | None]:
        return await self.find(tx_hash), await self.at_nonce(chain_id, address, nonce)

    async def before_track_many(
        self, items: list[tuple[str, int, str, int]]
    ) -> list[tuple[Tracked | None, Tracked | None]]:
        return [await self.before_track(*item) for item in items]

    async def save_many(self, records: list[Tracked]) -> None:
        for record in records:
            await self.save(record)

    async def add_new(self, records: list[Tracked]) -> list[bool]:
        stored = []
        for record in records:
            h = record.current.lower()
            key = _addr(record.chain_id, record.address)
            new = (
                h not in self._by_hash
                and h not in self._final
                and record.nonce not in self._pending.get(key, {})
            )
            if new:
                await self.save(record)
            stored.append(new)
        return stored

    async def watched(self) -> list[Address]:
        out = []
        for key in self._pending:
            chain, _, address = key.partition(":")
            out.append((int(chain), address))
        return out

    async def lease(self, chain_id: int, address: str, owner: str, seconds: float) -> bool:
        return True  # one process: its watcher is the only one

    async def spend(self, chain_id: int, address: str, day: str, amount: int, limit: int) -> bool:
        key = (_addr(chain_id, address), day)
        total = self._spent.get(key, 0) + amount
        if total > limit:
            return False
        self._spent[key] = total
        return True

    async def spent(self, chain_id: int, address: str, day: str) -> int:
        return self._spent.get((_addr(chain_id, address), day), 0)

    @contextlib.asynccontextmanager
    async def lock(self, chain_id: int, address: str) -> AsyncIterator[None]:
        async with self._locks.setdefault(_addr(chain_id, address), asyncio.Lock()):
            yield


_LEASE = """
local owner = redis.call('GET', KEYS[1])
if owner and owner ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_SPEND = """
local total = tonumber(redis.call('GET', KEYS[1]) or '0') + tonumber(ARGV[1])
if total > tonumber(ARGV[2]) then return 0 end
redis.call('SET', KEYS[1], string.format('%d', total), 'EX', 172800)
return 1
"""

PREFIX = "signer-proxy:track:"

# KEYS: the watched set, then per record its pending hash and its hash index key.
# ARGV: the index TTL, then per record: nonce, record JSON, pointer, "C:A".
# Stores a record only if its hash is unknown and its nonce holds none; 1/0 per record.
_ADD_NEW = """
local out = {}
for i = 0, (#KEYS - 1) / 2 - 1 do
  local pending, index = KEYS[2 + 2 * i], KEYS[3 + 2 * i]
  local nonce, text, pointer, addr = ARGV[2 + 4 * i], ARGV[3 + 4 * i], ARGV[4 + 4 * i],
    ARGV[5 + 4 * i]
  if redis.call('EXISTS', index) == 1 or redis.call('HEXISTS', pending, nonce) == 1 then
    table.insert(out, 0)
  else
    redis.call('HSET', pending, nonce, text)
    redis.call('SET', index, pointer, 'EX', tonumber(ARGV[1]))
    redis.call('SADD', KEYS[1], addr)
    table.insert(out, 1)
  end
end
return out
"""


# KEYS: the watched set, the address's pending hash. ARGV: "C:A".
# Unwatches the address only if it still has no pending record: a send may have stored one
# since the round read none (an SREM of its own would drop that record from every round).
_UNWATCH = """
if redis.call('HLEN', KEYS[2]) == 0 then
  return redis.call('SREM', KEYS[1], ARGV[1])
end
return 0
"""


class RedisTrackStore:
    """Records in Redis, shared by every replica (see the module docstring for the keys).
    `round_trips` counts the commands (or pipelines) sent, for the benchmark."""

    def __init__(self, redis: SharedRedis, display_url: str = "redis") -> None:
        self._redis = redis
        self.display_url = display_url
        self._lease = redis.register_script(_LEASE)
        self._unlock = redis.register_script(_UNLOCK)
        self._spend = redis.register_script(_SPEND)
        self._add_new = redis.register_script(_ADD_NEW)
        self._unwatch = redis.register_script(_UNWATCH)
        self.round_trips = 0
        self._tokens = 0
        # Per address watched: each pending record's JSON -> the record (see pending()).
        self._parsed: dict[str, dict[bytes, Tracked]] = {}

    def _key(self, chain_id: int, address: str, part: str) -> str:
        return f"{PREFIX}{{{_addr(chain_id, address)}}}:{part}"

    async def _do(self, coro: Any) -> Any:
        self.round_trips += 1
        try:
            return await coro
        except RedisError as exc:
            raise NonceStoreUnavailable(
                f"the tracking store at {self.display_url} failed ({type(exc).__name__}); "
                "check that Redis is up"
            ) from None

    async def save(self, record: Tracked) -> None:
        await self.save_many([record])

    async def save_many(self, records: list[Tracked]) -> None:
        """One pipeline: per address one HDEL for its final records and one SADD, per record
        its JSON once (a watch round finalizing many records sends a few commands each)."""
        commands: list[tuple[Any, ...]] = []
        finished: dict[str, list[str]] = {}
        watched: set[str] = set()
        for record in records:
            addr = _addr(record.chain_id, record.address)
            pending = f"{PREFIX}{{{addr}}}:pending"
            text = record.to_json(raw=not record.final)  # a final one is kept without them
            if record.final:
                finished.setdefault(pending, []).append(str(record.nonce))
                for h in record.hashes:
                    commands.append(("SET", PREFIX + "hash:" + h.lower(), text, "EX", FINAL_TTL))
            else:
                commands.append(("HSET", pending, record.nonce, text))
                pointer = f"{addr}:{record.nonce}"
                for h in record.hashes:
                    commands.append(("SET", PREFIX + "hash:" + h.lower(), pointer, "EX", FINAL_TTL))
                watched.add(addr)
        for pending, nonces in finished.items():
            commands.append(("HDEL", pending, *nonces))
        if watched:
            commands.append(("SADD", PREFIX + "watched", *watched))
        await self._do(self._redis.many(commands))

    async def add_new(self, records: list[Tracked]) -> list[bool]:
        """One script call for the whole group (the keys span slots: a single Redis, or
        one with replicas, as the nonce store's Redis is used; not Redis Cluster)."""
        keys = [PREFIX + "watched"]
        args: list[Any] = [FINAL_TTL]
        texts = []
        for r in records:
            keys += [
                self._key(r.chain_id, r.address, "pending"),
                PREFIX + "hash:" + r.current.lower(),
            ]
            addr = _addr(r.chain_id, r.address)
            texts.append(r.to_json())
            args += [str(r.nonce), texts[-1], f"{addr}:{r.nonce}", addr]
        replies = await self._do(self._add_new(keys=keys, args=args))
        added = [int(x) == 1 for x in replies]
        for i, (r, text, new) in enumerate(zip(records, texts, added, strict=True)):
            # An address this process watches reads it back next round: parsed already.
            parsed = self._parsed.get(keys[1 + 2 * i]) if new else None
            if parsed is not None and len(parsed) < PARSED_LIMIT:
                parsed[text.encode()] = r
        return added

    async def find(self, tx_hash: str) -> Tracked | None:
        for _ in range(3):
            found = await self._do(self._redis.get(PREFIX + "hash:" + tx_hash.lower()))
            if found is None:
                return None
            text = found.decode() if isinstance(found, bytes) else str(found)
            if text.startswith("{"):
                return Tracked.from_json(text)
            chain, address, nonce = text.split(":")
            record = await self._do(
                self._redis.hget(self._key(int(chain), address, "pending"), nonce)
            )
            if record is not None:
                return Tracked.from_json(record)
            # final meanwhile: the index now holds the final record
        return None

    async def pending(self, chain_id: int, address: str) -> list[Tracked]:
        key = self._key(chain_id, address, "pending")
        (values,) = await self._do(self._redis.many([("HVALS", key)]))
        # A record waiting in the pool reads the same round after round: parsed once (its
        # JSON as the key; records are immutable), not once a round.
        known = self._parsed.get(key, {})
        parsed = {v: known.get(v) or Tracked.from_json(v) for v in values}
        if parsed and len(parsed) <= PARSED_LIMIT:
            self._parsed[key] = parsed
        else:
            self._parsed.pop(key, None)
        records = sorted(parsed.values(), key=lambda r: r.nonce)
        if not records:
            await self._do(
                self._unwatch(keys=[PREFIX + "watched", key], args=[_addr(chain_id, address)])
            )
        return records

    async def at_nonce(self, chain_id: int, address: str, nonce: int) -> Tracked | None:
        key = self._key(chain_id, address, "pending")
        found = await self._do(self._redis.hget(key, str(nonce)))
        return None if found is None else Tracked.from_json(found)

    async def before_track(
        self, tx_hash: str, chain_id: int, address: str, nonce: int
    ) -> tuple[Tracked | None, Tracked | None]:
        """One round trip in the usual case (a hash never seen): the hash's index entry and
        the nonce's record in one pipeline; find() only when the hash is known."""
        return (await self.before_track_many([(tx_hash, chain_id, address, nonce)]))[0]

    async def before_track_many(
        self, items: list[tuple[str, int, str, int]]
    ) -> list[tuple[Tracked | None, Tracked | None]]:
        pipe = self._redis.pipeline(transaction=False)
        for tx_hash, chain_id, address, nonce in items:
            pipe.exists(PREFIX + "hash:" + tx_hash.lower())
            pipe.hget(self._key(chain_id, address, "pending"), str(nonce))
        replies = await self._do(pipe.execute())
        out: list[tuple[Tracked | None, Tracked | None]] = []
        for i, (tx_hash, *_) in enumerate(items):
            known, earlier = replies[2 * i], replies[2 * i + 1]
            found = await self.find(tx_hash) if known else None
            out.append((found, None if earlier is None else Tracked.from_json(earlier)))
        return out

    async def watched(self) -> list[Address]:
        members = await self._do(self._redis.smembers(PREFIX + "watched"))
        out = []
        for m in members:
            chain, _, address = (m.decode() if isinstance(m, bytes) else m).partition(":")
            out.append((int(chain), address))
        return sorted(out)

    async def lease(self, chain_id: int, address: str, owner: str, seconds: float) -> bool:
        key = self._key(chain_id, address, "lease")
        return bool(await self._do(self._lease(keys=[key], args=[owner, int(seconds * 1000)])))

    async def spend(self, chain_id: int, address: str, day: str, amount: int, limit: int) -> bool:
        key = self._key(chain_id, address, f"spent:{day}")
        return bool(await self._do(self._spend(keys=[key], args=[amount, limit])))

    async def spent(self, chain_id: int, address: str, day: str) -> int:
        value = await self._do(self._redis.get(self._key(chain_id, address, f"spent:{day}")))
        return int(value or 0)

    @contextlib.asynccontextmanager
    async def lock(self, chain_id: int, address: str) -> AsyncIterator[None]:
        key = self._key(chain_id, address, "lock")
        self._tokens += 1
        token = f"{os.getpid()}-{id(self)}-{self._tokens}"
        for _ in range(int(LOCK_SECONDS / 0.05)):
            if await self._do(self._redis.set(key, token, nx=True, px=int(LOCK_SECONDS * 1000))):
                break
            await asyncio.sleep(0.05)
        else:
            raise NonceStoreUnavailable(
                f"another replica has been replacing a transaction of {address} for "
                f"{LOCK_SECONDS:.0f} s; try again"
            )
        try:
            yield
        finally:
            await self._do(self._unlock(keys=[key], args=[token]))
