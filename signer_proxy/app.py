"""create_app(settings): wire the layers together and own their lifecycles."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Coroutine, Sequence
from contextlib import AsyncExitStack
from typing import Any

import aiohttp
from aiohttp import web

from signer_proxy import transport
from signer_proxy.config import Settings, upstream_urls
from signer_proxy.errors import ConfigError, SignerProxyError
from signer_proxy.hexdata import parse_quantity, to_data
from signer_proxy.keys import KeyRegistry, Signer
from signer_proxy.keys.aws_kms import KmsCalls, load_signers
from signer_proxy.methods.accounts import AccountMethods
from signer_proxy.methods.transactions import TransactionMethods
from signer_proxy.nonces import MemoryNonceManager, NonceManager
from signer_proxy.router import Handler, Router
from signer_proxy.transactions import ChainFacts
from signer_proxy.transport.http import MAX_BATCH, MAX_BODY, ROUTER, add_routes
from signer_proxy.upstream import FailoverUpstream, HttpUpstream, Upstream

log = logging.getLogger(__name__)

SETTINGS = web.AppKey("settings", Settings)
REGISTRY = web.AppKey("registry", KeyRegistry)

__all__ = ["REGISTRY", "SETTINGS", "create_app", "transport"]


def kms_client(settings: Settings) -> Any:
    """One aioboto3 KMS client for the whole process (an async context manager)."""
    import aioboto3
    from botocore.config import Config

    session = aioboto3.Session()
    region = settings.aws_region or session.region_name
    if not region:
        raise ConfigError("no AWS Region: set --aws-region (or AWS_REGION)")
    return session.client(
        "kms",
        region_name=region,
        endpoint_url=settings.aws_endpoint_url or None,
        config=Config(
            connect_timeout=settings.kms_timeout,
            read_timeout=settings.kms_timeout,
            # One attempt per call: KmsCalls retries, with backoff inside the request deadline.
            retries={"total_max_attempts": 1, "mode": "standard"},
            max_pool_connections=128,
        ),
    )


def make_upstream(
    settings: Settings, session: aiohttp.ClientSession
) -> HttpUpstream | FailoverUpstream:
    """The node client: one URL, or several with failover (FailoverUpstream)."""
    urls = upstream_urls(settings.upstream)
    nodes = [HttpUpstream(url, session, settings.upstream_timeout) for url in urls]
    return nodes[0] if len(nodes) == 1 else FailoverUpstream(nodes)


def redis_nonces(redis: Any, upstream: Upstream, facts: ChainFacts, settings: Settings) -> Any:
    """A RedisNonceManager for --nonce-store, reading and resending through `upstream`."""
    from signer_proxy.redis_nonces import RedisNonceManager

    async def pending_count(address: str) -> int:
        result = await upstream.call("eth_getTransactionCount", [address, "pending"])
        return parse_quantity(result, "the node's pending transaction count")

    async def send_raw(raw: bytes) -> None:
        await upstream.call("eth_sendRawTransaction", [to_data(raw)])

    return RedisNonceManager(
        redis,
        pending_count,
        send_raw,
        facts.chain_id,
        settings.nonce_lease_seconds,
        display_url=settings.nonce_store,
    )


def build_router(
    registry: KeyRegistry,
    upstream: Upstream,
    facts: ChainFacts,
    settings: Settings,
    nonces: NonceManager | None = None,
) -> Router:
    """The method table: local methods by name, everything else to the node."""

    async def pending_count(address: str) -> int:
        result = await upstream.call("eth_getTransactionCount", [address, "pending"])
        return parse_quantity(result, "the node's pending transaction count")

    def current() -> KeyRegistry:
        return registry

    accounts = AccountMethods(current)
    txs = TransactionMethods(
        current, upstream, nonces or MemoryNonceManager(pending_count), facts, settings.gas_margin
    )
    methods: dict[str, Handler] = {
        "eth_accounts": accounts.eth_accounts,
        "eth_requestAccounts": accounts.eth_requestAccounts,
        "eth_sendTransaction": txs.eth_sendTransaction,
        "eth_signTransaction": txs.eth_signTransaction,
    }
    return Router(methods, upstream, settings.request_deadline)


def background(stack: AsyncExitStack, job: Coroutine[Any, Any, None]) -> None:
    """Run `job` as a task until the app stops."""
    task = asyncio.create_task(job)

    async def stop() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    stack.push_async_callback(stop)


async def start_redis_nonces(
    stack: AsyncExitStack,
    registry: KeyRegistry,
    upstream: Upstream,
    facts: ChainFacts,
    settings: Settings,
) -> NonceManager:
    """Connect to --nonce-store (refusing to start if it does not answer), start gap repair."""
    from signer_proxy.gap_repair import GapRepairer
    from signer_proxy.redis_nonces import connect

    redis = connect(settings.nonce_store)
    stack.push_async_callback(redis.aclose)
    nonces = redis_nonces(redis, upstream, facts, settings)
    try:
        await nonces.ping()
    except SignerProxyError as exc:
        raise ConfigError(exc.message) from None
    log.info("nonces shared through %s", nonces.display_url)

    def current() -> KeyRegistry:
        return registry

    repairer = GapRepairer(
        nonces, current, upstream, facts, settings.gas_margin, settings.request_deadline
    )
    background(stack, repairer.run(max(0.1, settings.nonce_lease_seconds / 4)))
    return nonces  # type: ignore[no-any-return]


def create_app(settings: Settings, *, signers: Sequence[Signer] | None = None) -> web.Application:
    """The aiohttp application; KMS keys load at startup unless `signers` are given (tests)."""
    app = web.Application(client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[MAX_BATCH] = settings.max_batch
    app[MAX_BODY] = settings.max_body_bytes

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            session = await stack.enter_async_context(
                aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=256, ttl_dns_cache=300),
                    timeout=aiohttp.ClientTimeout(
                        total=settings.upstream_timeout,
                        sock_connect=settings.upstream_connect_timeout,
                    ),
                )
            )
            upstream = make_upstream(settings, session)
            if isinstance(upstream, FailoverUpstream):
                background(stack, upstream.watch(settings.upstream_health_interval))
            if signers is None:
                client = await stack.enter_async_context(kms_client(settings))
                region = client.meta.region_name
                calls = KmsCalls(
                    settings.kms_max_in_flight,
                    settings.kms_timeout,
                    settings.kms_backoff_base,
                    settings.kms_backoff_max,
                )
                loaded: Sequence[Signer] = await load_signers(
                    client, settings.kms_keys, region, calls
                )
            else:
                loaded = signers
            registry = KeyRegistry(loaded)
            app[REGISTRY] = registry
            facts = ChainFacts(upstream)
            nonces = None
            if settings.nonce_store:
                nonces = await start_redis_nonces(stack, registry, upstream, facts, settings)
            app[ROUTER] = build_router(registry, upstream, facts, settings, nonces)
            try:
                chain_id = await facts.chain_id()
                log.info("upstream %s: chain id %d", upstream.display_url, chain_id)
            except SignerProxyError as exc:
                log.warning("upstream %s not answering yet: %s", upstream.display_url, exc.message)
            yield

    app.cleanup_ctx.append(lifecycle)
    add_routes(app)
    return app
