"""create_app(settings): wire the layers together and own their lifecycles."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import AsyncExitStack
from typing import Any

from aiohttp import web

from signer_proxy import transport
from signer_proxy.blobs import SidecarForm
from signer_proxy.config import Settings, upstream_urls
from signer_proxy.errors import ConfigError, SignerProxyError
from signer_proxy.health import (
    READINESS_CHECKS,
    ReadinessCheck,
    chain_id_check,
    keys_check,
    shutdown_check,
    upstream_check,
)
from signer_proxy.hexdata import to_data
from signer_proxy.keys import KeyRegistry, Signer
from signer_proxy.keys.aws_kms import KmsCalls, load_signers
from signer_proxy.keys.kms_sign import LeanKmsClient
from signer_proxy.methods.accounts import AccountMethods
from signer_proxy.methods.authorizations import AuthorizationMethods
from signer_proxy.methods.messages import MessageMethods
from signer_proxy.methods.transactions import TransactionMethods
from signer_proxy.metrics import METRICS, Metrics
from signer_proxy.nonces import MemoryNonceManager, NonceManager
from signer_proxy.router import Handler, Router
from signer_proxy.shutdown import IN_FLIGHT, InFlight
from signer_proxy.transactions import ChainFacts, pending_nonce
from signer_proxy.transport.http import MAX_BATCH, MAX_BODY, ROUTER, add_routes
from signer_proxy.transport.ops import add_ops_routes, request_context
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


def make_upstream(settings: Settings) -> HttpUpstream | FailoverUpstream:
    """The node client: one URL, or several with failover (FailoverUpstream); `aclose` it."""
    urls = upstream_urls(settings.upstream)
    nodes = [
        HttpUpstream(
            url, settings.upstream_timeout, connect_timeout=settings.upstream_connect_timeout
        )
        for url in urls
    ]
    return nodes[0] if len(nodes) == 1 else FailoverUpstream(nodes)


def redis_nonces(redis: Any, upstream: Upstream, facts: ChainFacts, settings: Settings) -> Any:
    """A RedisNonceManager for --nonce-store, reading and resending through `upstream`."""
    from signer_proxy.redis_nonces import RedisNonceManager

    async def pending_count(address: str) -> int:
        return await pending_nonce(upstream, address)

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
    metrics: Metrics | None = None,
    nonces: NonceManager | None = None,
) -> Router:
    """The method table: local methods by name, everything else to the node."""

    async def pending_count(address: str) -> int:
        return await pending_nonce(upstream, address)

    def current() -> KeyRegistry:
        return registry

    accounts = AccountMethods(current)
    nonces = nonces or MemoryNonceManager(pending_count)
    txs = TransactionMethods(
        current,
        upstream,
        metrics.nonces(nonces) if metrics else nonces,
        facts,
        settings.gas_margin,
        allow_pre_eip155=settings.allow_pre_eip155,
        sidecar_form=SidecarForm(settings.blob_sidecar),
    )
    messages = MessageMethods(current, facts)
    authorizations = AuthorizationMethods(current, upstream, facts)
    methods: dict[str, Handler] = {
        "eth_accounts": accounts.eth_accounts,
        "eth_requestAccounts": accounts.eth_requestAccounts,
        "eth_sendTransaction": txs.eth_sendTransaction,
        "eth_signTransaction": txs.eth_signTransaction,
        "personal_sign": messages.personal_sign,
        "eth_sign": messages.eth_sign,
        "eth_signTypedData": messages.eth_signTypedData,
        "eth_signTypedData_v3": messages.eth_signTypedData_v3,
        "eth_signTypedData_v4": messages.eth_signTypedData_v4,
        # An extension of this proxy's own (docs/methods.md): a key signs an EIP-7702
        # authorization.
        "signer_signAuthorization": authorizations.signer_signAuthorization,
    }
    return Router(
        methods,
        upstream,
        observer=metrics.observe_reply if metrics else None,
        deadline=settings.request_deadline,
    )


def redis_check(nonces: Any) -> Callable[[], Awaitable[str]]:
    """Readiness: the shared nonce store answers."""

    async def check() -> str:
        await nonces.ping()  # NonceStoreUnavailable says what is wrong
        return f"nonce store {nonces.display_url} answers"

    return check


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
    metrics = app[METRICS] = Metrics()
    in_flight = app[IN_FLIGHT] = InFlight()
    checks = app[READINESS_CHECKS] = [shutdown_check(lambda: in_flight.draining)]
    metrics.in_flight.set_function(lambda: in_flight.count)
    metrics.keys_loaded.set_function(lambda: len(app[REGISTRY]) if REGISTRY in app else 0)
    app.middlewares.append(request_context)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            node = make_upstream(settings)
            stack.push_async_callback(node.aclose)
            if isinstance(node, FailoverUpstream):
                background(stack, node.watch(settings.upstream_health_interval))
            upstream = metrics.upstream(node)
            if signers is None:
                client = await stack.enter_async_context(kms_client(settings))
                region = client.meta.region_name
                calls = KmsCalls(
                    settings.kms_max_in_flight,
                    settings.kms_timeout,
                    settings.kms_backoff_base,
                    settings.kms_backoff_max,
                )
                sign_client = None
                if settings.kms_sign_client == "lean":
                    sign_client = await LeanKmsClient.from_default_chain(
                        region, settings.aws_endpoint_url, settings.kms_timeout
                    )
                    stack.push_async_callback(sign_client.aclose)
                loaded: Sequence[Signer] = await load_signers(
                    client, settings.kms_keys, region, calls, sign_client
                )
            else:
                loaded = signers
            registry = KeyRegistry(metrics.signer(s) for s in loaded)
            app[REGISTRY] = registry
            facts = ChainFacts(upstream)
            nonces = None
            if settings.nonce_store:
                redis_nonces = await start_redis_nonces(stack, registry, upstream, facts, settings)
                checks.append(ReadinessCheck("redis", redis_check(redis_nonces)))
                nonces = redis_nonces
            app[ROUTER] = build_router(registry, upstream, facts, settings, metrics, nonces)
            checks.extend(
                [
                    keys_check(lambda: app.get(REGISTRY)),
                    upstream_check(upstream, facts),
                    chain_id_check(facts),
                ]
            )
            try:
                chain_id = await facts.chain_id()
                log.info("upstream %s: chain id %d", upstream.display_url, chain_id)
            except SignerProxyError as exc:
                log.warning("upstream %s not answering yet: %s", upstream.display_url, exc.message)
            yield

    app.cleanup_ctx.append(lifecycle)
    add_routes(app)
    add_ops_routes(app, metrics=not settings.metrics_listen)
    return app
