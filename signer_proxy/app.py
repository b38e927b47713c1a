"""create_app(settings): wire the layers together and own their lifecycles."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack
from typing import Any

import aiohttp
from aiohttp import web

from signer_proxy import transport
from signer_proxy.blobs import SidecarForm
from signer_proxy.config import Settings
from signer_proxy.errors import ConfigError, SignerProxyError
from signer_proxy.health import (
    READINESS_CHECKS,
    chain_id_check,
    keys_check,
    shutdown_check,
    upstream_check,
)
from signer_proxy.keys import KeyRegistry, Signer
from signer_proxy.keys.aws_kms import load_signers
from signer_proxy.methods.accounts import AccountMethods
from signer_proxy.methods.authorizations import AuthorizationMethods
from signer_proxy.methods.messages import MessageMethods
from signer_proxy.methods.transactions import TransactionMethods
from signer_proxy.metrics import METRICS, Metrics
from signer_proxy.nonces import MemoryNonceManager
from signer_proxy.router import Handler, Router
from signer_proxy.shutdown import IN_FLIGHT, InFlight
from signer_proxy.transactions import ChainFacts, pending_nonce
from signer_proxy.transport.http import MAX_BATCH, MAX_BODY, ROUTER, add_routes
from signer_proxy.transport.ops import add_ops_routes, request_context
from signer_proxy.transport.ws import setup_websocket
from signer_proxy.upstream import HttpUpstream, Upstream

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
            retries={"max_attempts": 3, "mode": "standard"},
            max_pool_connections=128,
        ),
    )


def build_router(
    registry: KeyRegistry,
    upstream: Upstream,
    facts: ChainFacts,
    settings: Settings,
    metrics: Metrics | None = None,
) -> Router:
    """The method table: local methods by name, everything else to the node."""

    async def pending_count(address: str) -> int:
        return await pending_nonce(upstream, address)

    def current() -> KeyRegistry:
        return registry

    accounts = AccountMethods(current)
    nonces = MemoryNonceManager(pending_count)
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
    return Router(methods, upstream, observer=metrics.observe_reply if metrics else None)


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
            session = await stack.enter_async_context(
                aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=256, ttl_dns_cache=300),
                    timeout=aiohttp.ClientTimeout(
                        total=settings.upstream_timeout,
                        sock_connect=settings.upstream_connect_timeout,
                    ),
                )
            )
            upstream = metrics.upstream(
                HttpUpstream(settings.upstream, session, settings.upstream_timeout)
            )
            if signers is None:
                client = await stack.enter_async_context(kms_client(settings))
                region = client.meta.region_name
                loaded: Sequence[Signer] = await load_signers(client, settings.kms_keys, region)
            else:
                loaded = signers
            registry = KeyRegistry(metrics.signer(s) for s in loaded)
            app[REGISTRY] = registry
            facts = ChainFacts(upstream)
            app[ROUTER] = build_router(registry, upstream, facts, settings, metrics)
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
    setup_websocket(app, settings)
    add_ops_routes(app, metrics=not settings.metrics_listen)
    return app
