"""create_app(settings): wire the layers together and own their lifecycles."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import AsyncExitStack
from functools import partial
from typing import Any

from aiohttp import web

from signer_proxy import transport
from signer_proxy.access.audit import FileAuditLog, open_audit_log
from signer_proxy.access.budgets import BudgetStore, MemoryBudgetStore, RedisBudgetStore
from signer_proxy.access.gate import GuardedSigner, SigningGate
from signer_proxy.access.key_names import KeyNames
from signer_proxy.access.policy import load_policy
from signer_proxy.access.ratelimit import RateLimiter
from signer_proxy.access.setup import build_authenticator, build_gate
from signer_proxy.chain.fill import ChainFacts, pending_nonce
from signer_proxy.config import Settings, upstream_urls
from signer_proxy.errors import ConfigError, SignerProxyError
from signer_proxy.eth.hexdata import to_data
from signer_proxy.eth.tx_encoding import SignedTx
from signer_proxy.keys import KeyRegistry, Signer
from signer_proxy.keys.aws_clients import KmsClients
from signer_proxy.keys.aws_kms import KmsCalls
from signer_proxy.keys.keyring import KeyRing, describe_failures
from signer_proxy.keys.loading import KeyLoad
from signer_proxy.keys.reload import key_loader
from signer_proxy.methods.table import method_table
from signer_proxy.nonces.base import NonceManager
from signer_proxy.nonces.memory import MemoryNonceManager
from signer_proxy.ops import tracing
from signer_proxy.ops.health import (
    READINESS_CHECKS,
    ReadinessCheck,
    chain_id_check,
    keys_check,
    shutdown_check,
    upstream_check,
)
from signer_proxy.ops.logs import quiet_malformed_requests
from signer_proxy.ops.metrics import METRICS, MeteredUpstream, Metrics
from signer_proxy.ops.recent import LatencyHistory, RecentDecisions, every_label, totals
from signer_proxy.ops.recursion_limit import restore_recursion_limit
from signer_proxy.ops.shutdown import IN_FLIGHT, InFlight
from signer_proxy.ops.status import Node, PendingSource, StatusBoard
from signer_proxy.ops.tls import SERVER_TLS, ServerTls, upstream_ssl
from signer_proxy.router import Router
from signer_proxy.tracking.tracker import Tracker
from signer_proxy.transport.admin import add_admin_routes, read_admin_token
from signer_proxy.transport.door import ACCESS, build_access
from signer_proxy.transport.fast_lane import FAST_LANE, FastLane
from signer_proxy.transport.http import (
    BODY_TIMEOUT,
    ENDPOINT,
    MAX_BATCH,
    MAX_BODY,
    ROUTER,
    RpcEndpoint,
    add_routes,
)
from signer_proxy.transport.operator import (
    STATUS_BOARD,
    add_operator_routes,
    configure_operator,
)
from signer_proxy.transport.ops import add_ops_routes, request_context
from signer_proxy.transport.ws import setup_websocket
from signer_proxy.upstream.base import Upstream, redact_url
from signer_proxy.upstream.credentials import HeaderSpec, upstream_auth
from signer_proxy.upstream.failover import FailoverUpstream
from signer_proxy.upstream.http import HttpUpstream

log = logging.getLogger(__name__)

SETTINGS = web.AppKey("settings", Settings)
# The keys in service: `app[KEYRING].current()` is the registry now; reloads replace it.
KEYRING = web.AppKey("keyring", KeyRing)
GATE = web.AppKey("gate", SigningGate)
# The transaction tracker (absent with --track-transactions false).
TRACKER = web.AppKey("tracker", Tracker)
# Daily value budgets; the replicas' Redis store replaces this before startup (budgets.py).
BUDGETS = web.AppKey("budgets", BudgetStore)

__all__ = ["KEYRING", "SETTINGS", "create_app", "transport"]


def make_upstream(settings: Settings) -> HttpUpstream | FailoverUpstream:
    """The node client: one URL, or several with failover (FailoverUpstream); `aclose` it."""
    urls = upstream_urls(settings.upstream)
    verify = upstream_ssl(settings.upstream_ca_file)  # True: the system's CAs
    nodes = [
        HttpUpstream(
            url,
            settings.upstream_timeout,
            connect_timeout=settings.upstream_connect_timeout,
            ssl_context=verify if isinstance(verify, ssl.SSLContext) else None,
            auth=upstream_auth(url, settings),
        )
        for url in urls
    ]
    return nodes[0] if len(nodes) == 1 else FailoverUpstream(nodes)


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
    )


def build_router(
    registry: KeyRegistry | Callable[[], KeyRegistry],
    upstream: Upstream,
    facts: ChainFacts,
    settings: Settings,
    metrics: Metrics | None = None,
    gate: SigningGate | None = None,
    nonces: NonceManager | None = None,
    tracker: Tracker | None = None,
) -> Router:
    """The router over methods/table.py's methods, everything else to the node; `gate` decides
    each client's methods and every signature (none: no policy, nothing audited)."""
    gate = gate or SigningGate()
    nonces = nonces or MemoryNonceManager(partial(pending_nonce, upstream))
    if metrics is not None:
        nonces = metrics.nonces(nonces)
    if tracing.TRACER is not None:
        nonces = tracing.TracedNonces(nonces)

    def current() -> KeyRegistry:
        return registry() if callable(registry) else registry

    methods = method_table(current, upstream, nonces, facts, settings, gate, tracker)
    return Router(
        methods,
        upstream,
        observer=metrics.observe_reply if metrics else None,
        deadline=settings.request_deadline,
        gate=gate.call_denial if gate else None,
    )


def latency_history(metrics: Metrics) -> LatencyHistory:
    """KMS signatures and node requests over the last minutes, from their histograms."""
    return LatencyHistory(
        {
            "kms_sign": lambda: totals(metrics.sign_duration, every_label),
            "node": lambda: totals(metrics.upstream_duration, every_label),
        }
    )


async def sample_every(history: LatencyHistory) -> None:
    while True:
        await asyncio.sleep(history.interval)
        history.sample()


def tracked_pending(tracker: Tracker, limit: int = 200) -> PendingSource:
    """The operator page's pending and stuck transactions, from the tracker's store."""

    async def pending() -> list[dict[str, Any]]:
        now = time.time()
        rows: list[dict[str, Any]] = []
        for chain_id, address in await tracker.store.watched():
            for record in await tracker.store.pending(chain_id, address):
                rows.append(
                    {
                        "address": record.address,
                        "nonce": record.nonce,
                        "state": str(record.state),
                        "hash": record.current,
                        "hashes": list(record.hashes),
                        "bumps": record.bumps,
                        "rebroadcasts": record.rebroadcasts,
                        "age_seconds": round(now - (record.first_sent_at or now), 1),
                        "reason": record.stuck_reason,
                    }
                )
                if len(rows) >= limit:
                    return rows
        return rows

    return pending


def status_nodes(node: HttpUpstream | FailoverUpstream) -> list[Node]:
    """Each configured node, reached on its own (not through failover or the metrics)."""
    nodes = node.nodes if isinstance(node, FailoverUpstream) else [node]
    return [Node(n.display_url, n) for n in nodes]


def signers_of(registry: KeyRegistry) -> list[Signer]:
    return [registry.get(address) for address in registry.addresses]


def traced(wrap: Callable[[Signer], Signer]) -> Callable[[Signer], Signer]:
    """`wrap` around a span for each signature (tracing on)."""
    return lambda signer: wrap(tracing.traced_signer(signer))


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
    track: Callable[[SignedTx, int, str, str], Awaitable[None]] | None = None,
) -> tuple[NonceManager, Any]:
    """Connect to --nonce-store (refusing to start if it does not answer), start gap repair;
    the manager and the Redis client (budgets share it)."""
    from signer_proxy.nonces.gap_repair import GapRepairer
    from signer_proxy.nonces.redis_store import connect

    redis = connect(settings.nonce_store)
    stack.push_async_callback(redis.aclose)
    nonces = redis_nonces(redis, upstream, facts, settings)
    try:
        await nonces.ping()
    except SignerProxyError as exc:
        raise ConfigError(exc.message) from None
    log.info("nonces shared through %s", nonces.display_url)

    repairer = GapRepairer(
        nonces, keys, upstream, facts, settings.gas_margin, settings.request_deadline, track
    )
    background(stack, repairer.run(max(0.1, settings.nonce_lease_seconds / 4)))
    return nonces, redis


def start_tracker(
    stack: AsyncExitStack,
    redis: Any,
    upstream: Upstream,
    facts: ChainFacts,
    keys: Callable[[], KeyRegistry],
    gate: SigningGate,
    metrics: Metrics,
    settings: Settings,
) -> Tracker:
    """The transaction tracker (in Redis with --nonce-store, else in memory), watching in the
    background: replacements are signed through `gate` with the guarded keys."""
    from signer_proxy.tracking.store import MemoryTrackStore, RedisTrackStore, TrackStore

    store: TrackStore = (
        MemoryTrackStore()
        if redis is None
        else RedisTrackStore(redis, redact_url(settings.nonce_store))
    )
    tracker = Tracker(
        store,
        upstream,
        facts,
        keys,
        gate,
        metrics,
        interval=settings.tracking_interval,
        lease_seconds=settings.nonce_lease_seconds,
    )
    background(stack, tracker.run())
    return tracker


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
    restore_recursion_limit()  # py_ecc raised it at import (ops/recursion_limit.py)
    for text in settings.upstream_headers:  # a ConfigError naming the header, not its value
        HeaderSpec.parse(text).resolve()
    app = web.Application(client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    # Who may sign what: read now, so that a bad file refuses the start before anything runs.
    policy = load_policy(settings.policy_file)
    authenticator = build_authenticator(settings, policy)
    limits = {name: c.rate_limit for name, c in policy.clients.items() if c.rate_limit}
    app[ACCESS] = build_access(
        authenticator, RateLimiter(limits), settings.allowed_hosts, settings.cors_origins
    )
    try:
        audit = open_audit_log(
            settings.audit_log, settings.audit_log_max_bytes, settings.audit_log_backups
        )
    except OSError as exc:
        raise ConfigError(
            f"--audit-log {settings.audit_log} cannot be opened for appending: {exc.strerror}"
        ) from None
    decisions = RecentDecisions(audit)  # the operator page shows the latest
    app[BUDGETS] = MemoryBudgetStore()
    if settings.tls_cert_file:
        app[SERVER_TLS] = ServerTls(
            settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file
        )
    app[MAX_BATCH] = settings.max_batch
    app[MAX_BODY] = settings.max_body_bytes
    metrics = app[METRICS] = Metrics()
    quiet_malformed_requests(metrics.malformed_requests.inc)
    in_flight = app[IN_FLIGHT] = InFlight()
    checks = app[READINESS_CHECKS] = [shutdown_check(lambda: in_flight.draining)]
    metrics.in_flight.set_function(lambda: in_flight.count)
    lane = app[FAST_LANE] = FastLane(
        in_flight, settings.max_body_bytes, app, settings.head_timeout, settings.body_timeout
    )
    app[BODY_TIMEOUT] = settings.body_timeout
    app.on_shutdown.append(lane.on_shutdown)
    names = KeyNames()  # the gate binds the policy with it, at startup and on every reload

    def after_load(loaded: KeyLoad) -> None:
        metrics.observe_key_load(loaded)
        names.learn(loaded.signers)
        gate = app.get(GATE)
        if gate is not None:  # a reload: the policy follows the keys (see KeyNames)
            gate.policy = policy.bind(names.resolve)

    # Every key signs only inside a gate approval (gate.GuardedSigner).
    keyring = app[KEYRING] = KeyRing(
        metrics.signer if tracing.TRACER is None else traced(metrics.signer),
        observe=after_load,
        count_reload=metrics.count_reload,
        guard=GuardedSigner,
    )
    metrics.keys_loaded.set_function(lambda: len(keyring.current()))
    app.middlewares.append(request_context)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            if isinstance(audit, FileAuditLog):
                stack.callback(audit.close)
            server_tls = app.get(SERVER_TLS)
            if server_tls is not None and settings.tls_reload_interval > 0:
                watcher = asyncio.create_task(server_tls.watch(settings.tls_reload_interval))
                stack.push_async_callback(_cancel, watcher)
            node = make_upstream(settings)
            stack.push_async_callback(node.aclose)
            if isinstance(node, FailoverUpstream):
                background(stack, node.watch(settings.upstream_health_interval))
            upstream: MeteredUpstream | tracing.TracedUpstream = metrics.upstream(node)
            if tracing.TRACER is not None:
                upstream = tracing.TracedUpstream(upstream)
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
            trackers: list[Tracker] = []  # gap repair starts first: it finds the tracker here

            async def track_filler(signed: SignedTx, chain_id: int, address: str, c: str) -> None:
                if trackers:
                    await trackers[0].track(signed, chain_id, address, c, "filler")

            if settings.nonce_store:
                # Gap repair signs its fillers itself (zero-value self-transfers that only
                # close nonce gaps): it gets the keys without the client gate.
                redis_nonces, redis = await start_redis_nonces(
                    stack, keyring.unguarded, upstream, facts, settings, track_filler
                )
                checks.append(ReadinessCheck("redis", redis_check(redis_nonces)))
                app[BUDGETS] = RedisBudgetStore(redis)  # daily budgets shared like the nonces
                nonces = redis_nonces
            gate = app[GATE] = build_gate(policy, names.resolve, app[BUDGETS], decisions, metrics)
            tracker = None
            if settings.track_transactions:
                tracker = app[TRACKER] = start_tracker(
                    stack, redis if settings.nonce_store else None, upstream, facts,
                    keyring.current, gate, metrics, settings,
                )  # fmt: skip
                trackers.append(tracker)
            app[ROUTER] = build_router(
                keyring.current, upstream, facts, settings, metrics, gate, nonces, tracker
            )
            app[ENDPOINT] = RpcEndpoint(app)
            if settings.operator_page:
                history = latency_history(metrics)
                background(stack, sample_every(history))
                app[STATUS_BOARD] = StatusBoard(
                    chain_name="default",
                    nodes=status_nodes(node),
                    signers=lambda: signers_of(keyring.current()),
                    decisions=decisions,
                    latency=history,
                    policy=lambda: gate.policy,
                    budget_used=app[BUDGETS].used,
                    in_flight=lambda: in_flight.count,
                    pending=tracked_pending(tracker) if tracker is not None else None,
                )
            checks.extend(
                [
                    keys_check(keyring.current, lambda: describe_failures(keyring.last)),
                    upstream_check(upstream, facts),
                    chain_id_check(facts),
                ]
            )
            restore_recursion_limit()  # again: anything imported since create_app
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
    token = read_admin_token(settings.admin_token_file) if settings.admin_token_file else b""
    if settings.admin_token_file or settings.admin_clients:
        add_admin_routes(app, token, frozenset(settings.admin_clients), keyring)
    if settings.operator_page:
        configure_operator(app, token, frozenset(settings.admin_clients))
        if not settings.metrics_listen:
            add_operator_routes(app, app)
    return app


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
