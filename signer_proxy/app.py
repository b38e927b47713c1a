"""create_app(settings): wire the layers together and own their lifecycles."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import AsyncExitStack
from typing import Any

import aiohttp
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
from signer_proxy.keys.aws_clients import KmsClients, client_config, default_region
from signer_proxy.keys.aws_kms import KmsCalls
from signer_proxy.keys.keyring import KeyRing, describe_failures
from signer_proxy.keys.loading import KeyLoad, load_keys
from signer_proxy.keys.sources import from_settings
from signer_proxy.methods.accounts import AccountMethods
from signer_proxy.methods.authorizations import AuthorizationMethods
from signer_proxy.methods.messages import MessageMethods
from signer_proxy.methods.transactions import TransactionMethods
from signer_proxy.metrics import METRICS, Metrics
from signer_proxy.nonces import MemoryNonceManager, NonceManager
from signer_proxy.router import Handler, Router
from signer_proxy.shutdown import IN_FLIGHT, InFlight
from signer_proxy.transactions import ChainFacts, pending_nonce
from signer_proxy.transport.admin import add_admin_routes, read_admin_token
from signer_proxy.transport.http import MAX_BATCH, MAX_BODY, ROUTER, add_routes
from signer_proxy.transport.ops import add_ops_routes, request_context
from signer_proxy.upstream import FailoverUpstream, HttpUpstream, Upstream

log = logging.getLogger(__name__)

SETTINGS = web.AppKey("settings", Settings)
# The keys in service: `app[KEYRING].current()` is the registry now; reloads replace it.
KEYRING = web.AppKey("keyring", KeyRing)

__all__ = ["KEYRING", "SETTINGS", "create_app", "transport"]

# What a reload re-reads from the configuration; any other change needs a restart.
RELOADABLE = (
    "kms_keys",
    "kms_discover_tags",
    "kms_discover_alias_prefixes",
    "keystores",
    "keystore_password_file",
    "kms_load_concurrency",
)


def kms_client(settings: Settings) -> Any:
    """One aioboto3 KMS client for --aws-region (an async context manager)."""
    import aioboto3

    return aioboto3.Session().client(
        "kms",
        region_name=default_region(settings),
        endpoint_url=settings.aws_endpoint_url or None,
        config=client_config(settings),
    )


def key_loader(
    settings: Settings, clients: KmsClients, reload_settings: Callable[[], Settings] | None
) -> Callable[[KeyLoad | None, bool], Any]:
    """Loads the keys the configuration names now: at startup `settings`, on a reload what
    `reload_settings` reads (flags, environment and the file again); ConfigError if it fails."""

    async def load(previous: KeyLoad | None, strict: bool) -> KeyLoad:
        current = settings if previous is None or reload_settings is None else reload_settings()
        sources = from_settings(current)
        if previous is not None and sources.empty:  # an emptied file is likelier a mistake
            raise ConfigError(
                "the configuration names no keys now (no kms_keys, discovery or keystores); "
                "keeping the keys in service"
            )
        ignored = [
            name
            for name in dataclasses.asdict(current)
            if name not in RELOADABLE and getattr(current, name) != getattr(settings, name)
        ]
        if ignored:
            log.warning("reload: %s changed; only a restart applies that", ", ".join(ignored))
        return await load_keys(
            sources,
            clients,
            previous,
            concurrency=current.kms_load_concurrency,
            strict=strict,
        )

    return load


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
    registry: KeyRegistry | Callable[[], KeyRegistry],
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
        return registry() if callable(registry) else registry

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
    keys: Callable[[], KeyRegistry],
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

    repairer = GapRepairer(
        nonces, keys, upstream, facts, settings.gas_margin, settings.request_deadline
    )
    background(stack, repairer.run(max(0.1, settings.nonce_lease_seconds / 4)))
    return nonces  # type: ignore[no-any-return]


def create_app(
    settings: Settings,
    *,
    signers: Sequence[Signer] | None = None,
    reload_settings: Callable[[], Settings] | None = None,
) -> web.Application:
    """The aiohttp application; keys load at startup unless `signers` are given (tests).

    A reload (SIGHUP, POST /admin/keys/reload) reads the key settings from
    `reload_settings` (default: `settings` again, which still re-runs discovery, re-resolves
    aliases and re-reads keystores)."""
    app = web.Application(client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[MAX_BATCH] = settings.max_batch
    app[MAX_BODY] = settings.max_body_bytes
    metrics = app[METRICS] = Metrics()
    in_flight = app[IN_FLIGHT] = InFlight()
    checks = app[READINESS_CHECKS] = [shutdown_check(lambda: in_flight.draining)]
    metrics.in_flight.set_function(lambda: in_flight.count)
    keyring = app[KEYRING] = KeyRing(
        metrics.signer, observe=metrics.observe_key_load, count_reload=metrics.count_reload
    )
    metrics.keys_loaded.set_function(lambda: len(keyring.current()))
    app.middlewares.append(request_context)

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
            node = make_upstream(settings, session)
            if isinstance(node, FailoverUpstream):
                background(stack, node.watch(settings.upstream_health_interval))
            upstream = metrics.upstream(node)
            if signers is None:
                calls = KmsCalls(
                    settings.kms_max_in_flight,
                    settings.kms_timeout,
                    settings.kms_backoff_base,
                    settings.kms_backoff_max,
                )
                clients = await stack.enter_async_context(KmsClients(settings, calls))
                await keyring.start(
                    key_loader(settings, clients, reload_settings),
                    strict=not settings.allow_key_failures,
                )
            else:
                keyring.use(signers)
            facts = ChainFacts(upstream)
            nonces = None
            if settings.nonce_store:
                redis_nonces = await start_redis_nonces(
                    stack, keyring.current, upstream, facts, settings
                )
                checks.append(ReadinessCheck("redis", redis_check(redis_nonces)))
                nonces = redis_nonces
            app[ROUTER] = build_router(keyring.current, upstream, facts, settings, metrics, nonces)
            checks.extend(
                [
                    keys_check(keyring.current, lambda: describe_failures(keyring.last)),
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
    if settings.admin_token_file:
        add_admin_routes(app, read_admin_token(settings.admin_token_file), keyring)
    return app
