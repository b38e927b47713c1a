"""Nonces shared by several replicas through Redis: atomic Lua scripts, leases that expire,
and the raw transaction kept per nonce so an ambiguous or interrupted send is repaired by
resending the very same bytes, never by signing the nonce again.

Per chain and address (one Redis hash slot, so it also works on a cluster):

    next      the lowest nonce never handed out (floored to the node's pending count)
    leases    nonce -> token of the replica request holding it
    expiry    nonce -> when that lease runs out (ms, Redis clock): a dead replica's lease ends
    released  nonces the node refused outright or that were found missing: handed out first,
              lowest first
    raw       nonce -> "recorded-at-ms:raw tx hex", written (under a live lease) before any
              byte goes to the node, kept after the send until the node's *mined* count
              passes the nonce (a node's pool can forget: a restart, a provider's drop)
    orphans   nonces whose lease ran out, until the next sync looks at them

A *sync* reads the node's pending count P and looks at every nonce in [P, next): leased ones
are left alone; one with a raw tx that nobody has touched for a lease period is resent as it
is; an orphan without one (its replica died between reserve and send) is a hole, put in
`released` for the next send; and when nothing at all is leased, every nonce the node lacks
that holds no raw tx is a hole too. Released nonces at the top fold back into `next`, so an
idle address re-syncs to the node as the in-process manager does, while a busy one never
steps back under nonces that are out (a lagging node cannot make it hand one out twice).
See docs/design.md, "Nonces across replicas".
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio import Redis
from redis.exceptions import RedisError

from signer_proxy.deadline import bounded
from signer_proxy.errors import (
    NodeRejected,
    NonceLeaseExpired,
    NonceStoreUnavailable,
    SignerProxyError,
    UpstreamTimeout,
)
from signer_proxy.nonces.base import Lease, PendingCount
from signer_proxy.nonces.redis_scripts import Pipelined, SharedRedis
from signer_proxy.upstream.base import redact_url
from signer_proxy.upstream.node_errors import SendOutcome, classify_send_error

log = logging.getLogger(__name__)

SendRaw = Callable[[bytes], Awaitable[None]]
ChainId = Callable[[], Awaitable[int]]

# One Redis command may take this long (also bounded by the request deadline).
REDIS_TIMEOUT = 5.0
# Settling a lease may take this long even when the request's deadline is spent: the request
# failed near its deadline (KMS stalled until then), and a lease left unsettled keeps its
# nonce from everyone until --nonce-lease-seconds, leaving a gap the next sends wait behind.
SETTLE_GRACE = 0.5
# A sync looks at most this many nonces above the node's pending count.
SCAN_LIMIT = 1024
# Reservation retries when the state vanished between sync and reserve (e.g. FLUSHDB).
RESERVE_TRIES = 3

_PRELUDE = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function fmt(n) return string.format('%d', n) end
-- drop the leases that ran out; their nonces become holes (or resends) at the next sync
local function reap(now)
  local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
  for _, m in ipairs(expired) do
    redis.call('HDEL', KEYS[2], m)
    redis.call('SADD', KEYS[6], m)
  end
  if #expired > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now) end
  return #expired
end
"""

# ARGV: token, lease ms, synced ('1' right after a sync). Returns the nonce, or -1: sync first.
_RESERVE = (
    _PRELUDE
    + """
local now = now_ms()
local reaped = reap(now)
local nxt = redis.call('GET', KEYS[1])
if not nxt then return -1 end
if ARGV[3] ~= '1' and (reaped > 0 or redis.call('HLEN', KEYS[2]) == 0) then return -1 end
nxt = tonumber(nxt)
local n = nil
while true do
  local low = redis.call('ZPOPMIN', KEYS[4])
  if #low == 0 then break end
  local c = tonumber(low[2])
  if c < nxt and redis.call('HEXISTS', KEYS[2], low[1]) == 0
     and redis.call('HEXISTS', KEYS[5], low[1]) == 0 then
    n = c
    break
  end
end
if not n then
  n = nxt
  redis.call('SET', KEYS[1], fmt(nxt + 1))
end
redis.call('HSET', KEYS[2], fmt(n), ARGV[1])
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[2]), fmt(n))
return n
"""
)

# Reserve's choice, read only. Returns the nonce, or -1 where reserve would sync with the node
# first (no state, no live lease, or a lease that ran out).
_PEEK = (
    _PRELUDE
    + """
local now = now_ms()
local nxt = redis.call('GET', KEYS[1])
if not nxt then return -1 end
if redis.call('ZCOUNT', KEYS[3], '-inf', now) > 0 or redis.call('HLEN', KEYS[2]) == 0 then
  return -1
end
nxt = tonumber(nxt)
for _, m in ipairs(redis.call('ZRANGE', KEYS[4], 0, -1)) do
  local c = tonumber(m)
  if c < nxt and redis.call('HEXISTS', KEYS[2], m) == 0
     and redis.call('HEXISTS', KEYS[5], m) == 0 then
    return c
  end
end
return nxt
"""
)

# ARGV: the node's pending count. What a sync then reserve would hand out, read only: the
# first nonce from the node's count up that holds no recorded transaction (the sync resends
# those and keeps the counter above them).
_PEEK_FROM = """
local n = tonumber(ARGV[1])
while redis.call('HEXISTS', KEYS[5], string.format('%d', n)) == 1 do n = n + 1 end
return n
"""

# ARGV: nonce, raw hex. The kept transaction of a nonce becomes its replacement (its recorded
# time stays: it was sent before). Nothing when none is kept (mined, or never ours).
_REPLACE = """
local kept = redis.call('HGET', KEYS[5], ARGV[1])
if not kept then return 0 end
redis.call('HSET', KEYS[5], ARGV[1], string.match(kept, '^(%d+):') .. ':' .. ARGV[2])
return 1
"""

# ARGV: pending count, lease ms, scan limit, mined count.
# Returns {new holes..., '|', nonce, raw, nonce, raw, ..., '|', released nonces...}.
_SYNC = (
    _PRELUDE
    + """
local now = now_ms()
reap(now)
local pending = tonumber(ARGV[1])
local grace = tonumber(ARGV[2])
local nxt = tonumber(redis.call('GET', KEYS[1]) or '-1')
if nxt < pending then nxt = pending end
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', '(' .. fmt(pending))
-- a recorded transaction is kept until it is mined: a node that lost its pool (pending
-- count back under it) gets the very same bytes again below, never a filler in its place
local mined = tonumber(ARGV[4])
for _, m in ipairs(redis.call('HKEYS', KEYS[5])) do
  if tonumber(m) < mined then redis.call('HDEL', KEYS[5], m) end
end
local idle = redis.call('HLEN', KEYS[2]) == 0
local holes = {}
local resend = {}
local function free(m)
  return redis.call('HEXISTS', KEYS[2], m) == 0 and not redis.call('ZSCORE', KEYS[4], m)
end
local function hole(n, m)
  redis.call('ZADD', KEYS[4], n, m)
  table.insert(holes, m)
end
-- nonces whose lease ran out: a hole unless their transaction was recorded (resent below)
for _, m in ipairs(redis.call('SMEMBERS', KEYS[6])) do
  local n = tonumber(m)
  if n >= pending and n < nxt and free(m) and redis.call('HEXISTS', KEYS[5], m) == 0 then
    hole(n, m)
  end
end
redis.call('DEL', KEYS[6])
local top = math.min(nxt, pending + tonumber(ARGV[3]))
for n = pending, top - 1 do
  local m = fmt(n)
  if free(m) then
    local raw = redis.call('HGET', KEYS[5], m)
    if raw then
      -- recorded at least a lease ago and settled or orphaned: the node should have it
      if now - tonumber(string.match(raw, '^(%d+):')) >= grace then
        table.insert(resend, m)
        table.insert(resend, raw)
      end
    elseif idle then
      -- nothing in flight and the node lacks it: the node is the truth, re-issue
      hole(n, m)
    end
  end
end
-- released nonces at the top are simply not handed out yet: fold them back into next
while nxt > pending do
  local m = fmt(nxt - 1)
  if redis.call('ZSCORE', KEYS[4], m) and redis.call('HEXISTS', KEYS[2], m) == 0 then
    redis.call('ZREM', KEYS[4], m)
    nxt = nxt - 1
  else
    break
  end
end
redis.call('SET', KEYS[1], fmt(nxt))
local out = {}
for _, m in ipairs(holes) do
  if redis.call('ZSCORE', KEYS[4], m) then table.insert(out, m) end
end
table.insert(out, '|')
for _, v in ipairs(resend) do table.insert(out, v) end
table.insert(out, '|')
-- every nonce waiting in released (each one a gap below next), for gap filling
for _, m in ipairs(redis.call('ZRANGE', KEYS[4], 0, 99)) do table.insert(out, m) end
return out
"""
)

# ARGV: nonce, token, raw hex, lease ms. 1 if recorded under a live lease, else 0.
_RECORD = (
    _PRELUDE
    + """
local now = now_ms()
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then return 0 end
local expires = redis.call('ZSCORE', KEYS[3], ARGV[1])
if not expires or tonumber(expires) <= now then return 0 end
redis.call('HSET', KEYS[5], ARGV[1], fmt(now) .. ':' .. ARGV[3])
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[4]), ARGV[1])
return 1
"""
)

# ARGV: nonce, token, how: 'commit' (used; keep its raw tx), 'taken' (used by something
# else: forget the refused raw tx) or 'release' (unused: hand it out again).
_SETTLE = """
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
if ARGV[3] ~= 'commit' then redis.call('HDEL', KEYS[5], ARGV[1]) end
if ARGV[3] == 'release' then redis.call('ZADD', KEYS[4], tonumber(ARGV[1]), ARGV[1]) end
return 1
"""

# ARGV: nonce, token, lease ms. Lease a nonce that is still released (gap filling).
_CLAIM = (
    _PRELUDE
    + """
local now = now_ms()
if not redis.call('ZSCORE', KEYS[4], ARGV[1]) then return 0 end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return 0 end
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[3]), ARGV[1])
return 1
"""
)

# ARGV: nonce, the stored value. The node refused a resent raw outright: free the nonce.
_FORGET = """
if redis.call('HGET', KEYS[5], ARGV[1]) ~= ARGV[2] then return 0 end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return 0 end
redis.call('HDEL', KEYS[5], ARGV[1])
redis.call('ZADD', KEYS[4], tonumber(ARGV[1]), ARGV[1])
return 1
"""


@dataclass(frozen=True, slots=True)
class SyncResult:
    """What one sync found: new holes (now released for reuse), raw txs resent, and every
    nonce waiting in `released` (gaps until a send or a filler takes them)."""

    holes: tuple[int, ...]
    resent: tuple[int, ...]
    released: tuple[int, ...] = ()


def connect(url: str) -> SharedRedis:
    """A redis-py asyncio client for --nonce-store (connects lazily) whose Lua scripts run over
    one pipelined connection of ours (nonces/redis_scripts.py: ~5x less CPU per script)."""
    client = cast(
        SharedRedis,  # from_url is typed as returning the base class; it makes `cls`
        SharedRedis.from_url(
            url,
            socket_timeout=REDIS_TIMEOUT,
            socket_connect_timeout=REDIS_TIMEOUT,
            health_check_interval=30,
        ),
    )
    client.pipelined = Pipelined.from_url(url, REDIS_TIMEOUT)
    return client


async def ping(redis: Redis, display_url: str) -> None:
    """Raise NonceStoreUnavailable unless Redis answers."""
    try:
        async with asyncio.timeout(REDIS_TIMEOUT):
            await redis.ping()
    except (RedisError, OSError, TimeoutError) as exc:
        raise NonceStoreUnavailable(
            f"the nonce store at {redact_url(display_url)} does not answer "
            f"({type(exc).__name__}); check that Redis is running and that --nonce-store points "
            "at it"
        ) from exc


class _RedisLease:
    def __init__(self, manager: RedisNonceManager, keys: list[str], nonce: int, token: str):
        self._manager = manager
        self._keys = keys
        self._nonce = nonce
        self._token = token
        self._done = False
        self._settled = False

    @property
    def nonce(self) -> int:
        return self._nonce

    async def record(self, raw: bytes) -> None:
        recorded = await self._manager._run(
            "record",
            self._keys,
            [self._nonce, self._token, raw.hex(), self._manager.lease_ms],
        )
        if recorded != 1:
            self._done = True
            raise NonceLeaseExpired(
                f"the lease on nonce {self._nonce} ran out before the transaction was sent "
                "(signing took longer than --nonce-lease-seconds); nothing was sent: retry"
            )

    async def commit(self, *, sent: bool = True) -> None:
        await self._settle("commit" if sent else "taken")

    async def release(self) -> bool:
        return await self._settle("release")

    async def _settle(self, how: str) -> bool:
        """Whether the settle took effect (False: the lease was reaped, or Redis failed)."""
        if self._done:
            return self._settled
        self._done = True
        try:
            done = await self._manager._run(
                "settle", self._keys, [self._nonce, self._token, how], at_least=SETTLE_GRACE
            )
        except NonceStoreUnavailable as exc:
            # The lease runs out on its own; the next sync resends or re-issues the nonce.
            log.warning("nonce %d: could not settle its lease: %s", self._nonce, exc.message)
            return False
        self._settled = int(done) == 1
        if not self._settled:
            log.warning(
                "nonce %d: its lease had run out before it was settled (%s); a sync handles "
                "its recorded transaction, if any",
                self._nonce,
                how,
            )
        return self._settled


class RedisNonceManager:
    """NonceManager over Redis: every replica pointed at the same Redis shares the state."""

    def __init__(
        self,
        redis: Redis,
        pending_count: PendingCount,
        send_raw: SendRaw,
        chain_id: ChainId,
        lease_seconds: float,
        display_url: str = "redis",
        mined_count: PendingCount | None = None,
    ) -> None:
        self._redis = redis
        self._pending_count = pending_count
        # The node's latest (mined) count: recorded transactions are kept until it passes
        # them. None: the pending count (a node without a pool to forget).
        self._mined_count = mined_count
        self._send_raw = send_raw
        self._chain_id = chain_id
        self.lease_ms = max(1, int(lease_seconds * 1000))
        self.display_url = redact_url(display_url)
        self._scripts = {
            name: redis.register_script(source)
            for name, source in (
                ("reserve", _RESERVE),
                ("peek", _PEEK),
                ("peek_from", _PEEK_FROM),
                ("replace", _REPLACE),
                ("sync", _SYNC),
                ("record", _RECORD),
                ("settle", _SETTLE),
                ("claim", _CLAIM),
                ("forget", _FORGET),
            )
        }
        self._syncing: dict[str, asyncio.Future[SyncResult]] = {}
        self._replica = os.urandom(6).hex()
        self._counter = 0

    async def _keys(self, address: str) -> list[str]:
        prefix = f"signer-proxy:nonce:{{{await self._chain_id()}:{address.lower()}}}:"
        parts = ("next", "leases", "expiry", "released", "raw", "orphans")
        return [prefix + part for part in parts]

    def _token(self) -> str:
        self._counter += 1
        return f"{self._replica}-{self._counter}"

    async def _run(
        self, script: str, keys: list[str], args: list[Any], at_least: float = 0.0
    ) -> Any:
        try:
            async with asyncio.timeout(max(at_least, bounded(REDIS_TIMEOUT))):
                return await self._scripts[script](keys=keys, args=args)
        except (RedisError, OSError, TimeoutError) as exc:
            raise NonceStoreUnavailable(
                f"the nonce store at {self.display_url} failed ({type(exc).__name__}); check "
                "that Redis is running and that --nonce-store points at it"
            ) from exc

    async def ping(self) -> None:
        """Raise NonceStoreUnavailable unless Redis answers."""
        await ping(self._redis, self.display_url)

    async def reserve(self, address: str) -> Lease:
        keys = await self._keys(address)
        token = self._token()
        synced = "0"
        for _ in range(RESERVE_TRIES):
            nonce = int(await self._run("reserve", keys, [token, self.lease_ms, synced]))
            if nonce >= 0:
                return _RedisLease(self, keys, nonce, token)
            await self._shared_sync(address)
            synced = "1"
        raise NonceStoreUnavailable(
            f"the nonce state for {address} in {self.display_url} kept vanishing; check that "
            "nothing else writes to signer-proxy:nonce:* keys"
        )

    async def next_nonce(self, address: str) -> int:
        keys = await self._keys(address)
        nonce = int(await self._run("peek", keys, []))
        if nonce >= 0:
            return nonce
        # Where reserve would sync first, the sync floors the counter to the node's count,
        # above our recorded transactions the node lacks.
        return int(await self._run("peek_from", keys, [await self._pending_count(address)]))

    async def _shared_sync(self, address: str) -> None:
        """One sync per address at a time in this process: a cold burst asks the node once."""
        key = address.lower()
        running = self._syncing.get(key)
        if running is None:
            running = asyncio.ensure_future(self.sync(address))
            self._syncing[key] = running
            running.add_done_callback(lambda _: self._syncing.pop(key, None))
        await asyncio.shield(running)

    async def resync(self, address: str) -> None:
        await self.sync(address)

    async def replaced(self, address: str, nonce: int, raw: bytes) -> None:
        await self._run("replace", await self._keys(address), [nonce, raw.hex()])

    async def sync(self, address: str) -> SyncResult:
        """Floor to the node's pending count; release holes; resend orphaned raw txs."""
        keys = await self._keys(address)
        if self._mined_count is None:
            pending = mined = await self._pending_count(address)
        else:
            pending, mined = await asyncio.gather(
                self._pending_count(address), self._mined_count(address)
            )
        reply = await self._run("sync", keys, [pending, self.lease_ms, SCAN_LIMIT, mined])
        items = [item.decode() if isinstance(item, bytes) else str(item) for item in reply]
        first = items.index("|")
        second = items.index("|", first + 1)
        holes = tuple(int(m) for m in items[:first])
        pairs = items[first + 1 : second]
        released = tuple(int(m) for m in items[second + 1 :])
        resent = []
        for nonce_text, stored in zip(pairs[0::2], pairs[1::2], strict=True):
            if await self._resend(address, keys, int(nonce_text), stored):
                resent.append(int(nonce_text))
        if holes:
            log.warning(
                "nonce gap for %s: nonce(s) %s held no lease and no transaction (a replica "
                "stopped between reserving and sending?); re-issued for the next send",
                address,
                ", ".join(map(str, holes)),
            )
        return SyncResult(holes, tuple(resent), released)

    async def _resend(self, address: str, keys: list[str], nonce: int, stored: str) -> bool:
        raw = bytes.fromhex(stored.partition(":")[2])
        try:
            await self._send_raw(raw)
        except NodeRejected as exc:
            outcome = classify_send_error(exc.message)
            if outcome is SendOutcome.ALREADY_KNOWN:
                return True
            if outcome is SendOutcome.REJECTED:
                await self._run("forget", keys, [nonce, stored])
                log.warning(
                    "nonce %d of %s: the stored transaction was refused on resend (%s); the "
                    "nonce is re-issued",
                    nonce,
                    address,
                    exc.message,
                )
            return False  # nonce taken or too high: the next sync looks again
        except (UpstreamTimeout, SignerProxyError) as exc:
            log.warning("nonce %d of %s: resend failed: %s", nonce, address, exc.message)
            return False
        log.warning(
            "nonce %d of %s: resent the stored transaction, which the node did not have",
            nonce,
            address,
        )
        return True

    async def claim(self, address: str, nonce: int) -> Lease | None:
        """A lease on `nonce` if it is still released (for filling a gap), else None."""
        keys = await self._keys(address)
        token = self._token()
        claimed = await self._run("claim", keys, [nonce, token, self.lease_ms])
        return _RedisLease(self, keys, nonce, token) if claimed == 1 else None
