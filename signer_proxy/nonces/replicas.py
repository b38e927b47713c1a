"""Nonces shared by replicas: the Redis nonce manager from the settings, its readiness check,
and gap repair in the background (--nonce-store)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from functools import partial
from typing import TYPE_CHECKING, Any

from signer_proxy.chain.fill import ChainFacts, mined_nonce, pending_nonce
from signer_proxy.config import Settings
from signer_proxy.errors import ConfigError, SignerProxyError
from signer_proxy.eth.hexdata import to_data
from signer_proxy.eth.tx_encoding import SignedTx
from signer_proxy.keys import KeyRegistry
from signer_proxy.nonces.base import NonceManager
from signer_proxy.ops.background import background
from signer_proxy.upstream.base import Upstream, redact_url

if TYPE_CHECKING:
    from signer_proxy.nonces.gap_repair import Witness

log = logging.getLogger(__name__)


def redis_nonces(redis: Any, upstream: Upstream, facts: ChainFacts, settings: Settings) -> Any:
    """A RedisNonceManager for --nonce-store, reading and resending through `upstream`."""
    from signer_proxy.nonces.redis_store import RedisNonceManager

    async def send_raw(raw: bytes) -> None:
        await upstream.call("eth_sendRawTransaction", [to_data(raw)])

    return RedisNonceManager(
        redis,
        partial(pending_nonce, upstream),
        send_raw,
        facts.chain_id,
        settings.nonce_lease_seconds,
        display_url=settings.nonce_store,
        mined_count=partial(mined_nonce, upstream),
    )


def redis_check(redis: Any, url: str) -> Callable[[], Awaitable[str]]:
    """Readiness: the shared nonce store answers."""
    from signer_proxy.nonces.redis_store import ping

    async def check() -> str:
        await ping(redis, url)  # NonceStoreUnavailable says what is wrong
        return f"nonce store {redact_url(url)} answers"

    return check


async def connect_nonce_store(stack: AsyncExitStack, settings: Settings) -> Any:
    """The Redis client of --nonce-store, answering (else ConfigError: refuse to start); every
    chain's nonces, the tracker and the budgets share it."""
    from signer_proxy.nonces.redis_store import connect, ping

    redis = connect(settings.nonce_store)
    stack.push_async_callback(redis.aclose)
    try:
        await ping(redis, settings.nonce_store)
    except SignerProxyError as exc:
        raise ConfigError(exc.message) from None
    log.info("nonces shared through %s", redact_url(settings.nonce_store))
    return redis


def start_redis_nonces(
    stack: AsyncExitStack,
    redis: Any,
    keys: Callable[[], KeyRegistry],
    upstream: Upstream,
    facts: ChainFacts,
    settings: Settings,
    track: Callable[[SignedTx, int, str, str], Awaitable[None]] | None = None,
    witness: Witness | None = None,
) -> NonceManager:
    """One chain's nonces in Redis (its keys carry the chain id), with gap repair running."""
    from signer_proxy.nonces.gap_repair import GapRepairer

    nonces = redis_nonces(redis, upstream, facts, settings)
    repairer = GapRepairer(
        nonces,
        keys,
        upstream,
        facts,
        settings.gas_margin,
        settings.request_deadline,
        track,
        witness,
    )
    background(stack, repairer.run(max(0.1, settings.nonce_lease_seconds / 4)))
    manager: NonceManager = nonces
    return manager
