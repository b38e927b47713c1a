"""create_app(settings): wire the layers together and own their lifecycles."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from functools import partial
from typing import Any

from aiohttp import web

from signer_proxy import transport
from signer_proxy.access.audit import FileAuditLog, open_audit_log
from signer_proxy.access.auth import load_api_keys
from signer_proxy.access.budgets import BudgetStore, MemoryBudgetStore, RedisBudgetStore
from signer_proxy.access.gate import GuardedSigner, SigningGate
from signer_proxy.access.key_names import KeyNames
from signer_proxy.access.policy import load_policy
from signer_proxy.access.ratelimit import RateLimiter
from signer_proxy.access.setup import build_authenticator, build_gate, rate_limits
from signer_proxy.chain.fill import ChainFacts, mined_nonce, pending_nonce
from signer_proxy.config import ChainConfig, Settings
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
from signer_proxy.nonces.memory import MemoryNonceManager, Resender
from signer_proxy.nonces.replicas import connect_nonce_store, redis_check, start_redis_nonces
from signer_proxy.ops import tracing
from signer_proxy.ops.background import background
from signer_proxy.ops.board import (
    latency_history,
    sample_every,
    signers_of,
    status_nodes,
    tracked_pending,
)
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
from signer_proxy.ops.recent import RecentDecisions
from signer_proxy.ops.recursion_limit import restore_recursion_limit
from signer_proxy.ops.shutdown import IN_FLIGHT, InFlight
from signer_proxy.ops.status import ChainNodes, StatusBoard
from signer_proxy.ops.tls import SERVER_TLS, ServerTls
from signer_proxy.router import Router
from signer_proxy.tracking.startup import start_tracker
from signer_proxy.tracking.tracker import Tracker
from signer_proxy.transport.admin import add_admin_routes, read_admin_token
from signer_proxy.transport.chains import ROUTES, ChainRoute, ChainRoutes
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
from signer_proxy.transport.ws import node_socket, setup_websocket
from signer_proxy.upstream.base import Upstream
from signer_proxy.upstream.credentials import HeaderSpec
from signer_proxy.upstream.failover import FailoverUpstream
from signer_proxy.upstream.http import HttpUpstream
from signer_proxy.upstream.setup import make_upstream

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


def build_router(
    registry: KeyRegistry | Callable[[], KeyRegistry],
    upstream: Upstream,
    facts: ChainFacts,
    settings: Settings,
    metrics: Metrics | None = None,
    gate: SigningGate | None = None,
    nonces: NonceManager | None = None,
    tracker: Tracker | None = None,
    chain: str = "default",
) -> Router:
    """The router over methods/table.py's methods, everything else to the node; `gate` decides
    each client's methods and every signature (none: no policy, nothing audited)."""
    gate = gate or SigningGate()
    if nonces is None:

        async def send_raw(raw: bytes) -> None:
            await upstream.call("eth_sendRawTransaction", [to_data(raw)])

        resender = Resender(partial(mined_nonce, upstream), send_raw)
        nonces = MemoryNonceManager(partial(pending_nonce, upstream), resender=resender)
    if metrics is not None:
        nonces = metrics.nonces(nonces, chain)
    if tracing.TRACER is not None:
        nonces = tracing.TracedNonces(nonces)
    if tracker is not None:
        tracker.nonces = nonces  # its replacements become the bytes the nonces keep

    def current() -> KeyRegistry:
        return registry() if callable(registry) else registry

    methods = method_table(current, upstream, nonces, facts, settings, gate, tracker)
    return Router(
        methods,
        upstream,
        observer=metrics.reply_observer(chain) if metrics else None,
        deadline=settings.request_deadline,
        gate=gate.call_denial if gate else None,
    )


def traced(wrap: Callable[[Signer], Signer]) -> Callable[[Signer], Signer]:
    """`wrap` around a span for each signature (tracing on)."""
    return lambda signer: wrap(tracing.traced_signer(signer))


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
    for chain in settings.chain_list():  # a ConfigError naming the header, not its value
        for text in settings.for_chain(chain).upstream_headers:
            HeaderSpec.parse(text).resolve()
    app = web.Application(client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    # Who may sign what: read now, so that a bad file refuses the start before anything runs.
    policy = load_policy(settings.policy_file)
    authenticator = build_authenticator(settings, policy)
    limiter = RateLimiter(rate_limits(policy))
    app[ACCESS] = build_access(
        authenticator, limiter, settings.allowed_hosts, settings.cors_origins
    )
    served: list[str] = []  # the chains' names, once they run (a policy may only name them)
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

    def reread_access() -> Callable[[], dict[str, Any]]:
        """A reload reads the policy and API keys files named at startup again (ConfigError:
        a file that does not read or parse refuses the whole reload, nothing changes)."""
        fresh = load_policy(settings.policy_file)
        fresh.check_chains(served)
        api_keys = load_api_keys(settings.api_keys_file) if settings.api_keys_file else {}

        def apply() -> dict[str, Any]:
            nonlocal policy
            policy = fresh  # after_load binds it again with the keys just loaded
            gate = app.get(GATE)
            if gate is not None:
                gate.policy = fresh.bind(names.resolve)
            authenticator.update(api_keys, fresh.cert_clients())
            limiter.update(rate_limits(fresh))
            log.info(
                "reload: policy (%d clients) and API keys (%d clients) read again",
                len(fresh.clients),
                len(api_keys),
            )
            return {"policy_clients": len(fresh.clients), "api_key_clients": len(api_keys)}

        return apply

    # Every key signs only inside a gate approval (gate.GuardedSigner).
    keyring = app[KEYRING] = KeyRing(
        metrics.signer if tracing.TRACER is None else traced(metrics.signer),
        observe=after_load,
        count_reload=metrics.count_reload,
        guard=GuardedSigner,
        prepare=reread_access,
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
            checks.append(keys_check(keyring.current, lambda: describe_failures(keyring.last)))
            redis = await connect_nonce_store(stack, settings) if settings.nonce_store else None
            if redis is not None:
                checks.append(ReadinessCheck("redis", redis_check(redis, settings.nonce_store)))
                app[BUDGETS] = RedisBudgetStore(redis)  # daily budgets shared like the nonces
            gate = app[GATE] = build_gate(policy, names.resolve, app[BUDGETS], decisions, metrics)
            chains = [
                await start_chain(
                    stack, ChainWiring(settings, chain, keyring, gate, metrics, redis)
                )
                for chain in settings.chain_list()
            ]
            for chain in chains:
                checks.extend(chain.checks)
            check_chain_ids(chains)
            served.extend(c.config.name for c in chains)
            policy.check_chains(served)
            default = next((c for c in chains if c.config.default), None)
            if default is None and len(chains) == 1:
                default = chains[0]
            app[ROUTES] = ChainRoutes(
                [c.route for c in chains], default.config.name if default else None
            )
            first = default or chains[0]
            app[ROUTER] = first.route.router
            if first.tracker is not None:
                app[TRACKER] = first.tracker
            app[ENDPOINT] = RpcEndpoint(app)
            if settings.operator_page:
                history = latency_history(metrics)
                background(stack, sample_every(history))
                app[STATUS_BOARD] = StatusBoard(
                    # the first chain's first: keys' balances are read on it
                    chains=[
                        ChainNodes(c.config.name, status_nodes(c.node))
                        for c in sorted(chains, key=lambda c: c is not first)
                    ],
                    signers=lambda: signers_of(keyring.current()),
                    decisions=decisions,
                    latency=history,
                    policy=lambda: gate.policy,
                    budget_used=app[BUDGETS].used,
                    in_flight=lambda: in_flight.count,
                    pending=tracked_pending(first.tracker) if first.tracker is not None else None,
                )
            restore_recursion_limit()  # again: anything imported since create_app
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


@dataclass(frozen=True)
class ChainWiring:
    """What one chain's parts are built from."""

    settings: Settings  # the process's; the chain's own are settings.for_chain(chain)
    chain: ChainConfig
    keyring: KeyRing
    gate: SigningGate
    metrics: Metrics
    redis: Any  # the --nonce-store client, or None


@dataclass
class ChainParts:
    """One served chain: its node, nonces, tracker and router, and its readiness checks."""

    config: ChainConfig
    chain_id: int
    node: HttpUpstream | FailoverUpstream
    route: ChainRoute
    tracker: Tracker | None
    checks: list[ReadinessCheck]


async def start_chain(stack: AsyncExitStack, w: ChainWiring) -> ChainParts:
    """Build one chain's parts, checking its node's chain id (ConfigError: refuse to start)."""
    chain = w.chain
    settings = w.settings.for_chain(chain)
    several = bool(w.settings.chains)
    label = chain.name  # metrics, audit and readiness name the chain
    node = make_upstream(settings)
    stack.push_async_callback(node.aclose)
    if isinstance(node, FailoverUpstream):
        background(stack, node.watch(settings.upstream_health_interval))
    upstream: MeteredUpstream | tracing.TracedUpstream = w.metrics.upstream(node, label)
    if tracing.TRACER is not None:
        upstream = tracing.TracedUpstream(upstream)
    facts = ChainFacts(upstream)
    chain_id = await node_chain_id(chain, upstream, facts, several)
    trackers: list[Tracker] = []  # gap repair starts first: it finds the tracker here

    async def track_filler(signed: SignedTx, chain_id: int, address: str, client: str) -> None:
        if trackers:
            await trackers[0].track(signed, chain_id, address, client, "filler")

    nonces: NonceManager | None = None
    if w.redis is not None:
        # Gap repair signs its fillers itself (zero-value self-transfers that only close nonce
        # gaps): it gets the keys without the client gate.
        # Each filler is audited (client "signer-proxy"), as every signature is.
        nonces = start_redis_nonces(
            stack,
            w.redis,
            w.keyring.unguarded,
            upstream,
            facts,
            settings,
            track_filler,
            lambda signer, tx, reason: w.gate.on_its_own(label, signer, tx, reason),
        )
    tracker = None
    if settings.track_transactions:
        tracker = start_tracker(
            stack, w.redis, upstream, facts, w.keyring.current, w.gate, w.metrics, settings,
            label,
        )  # fmt: skip
        trackers.append(tracker)
    keys: Callable[[], KeyRegistry] = w.keyring.current
    if chain.keys:
        keys = narrowed_keys(w.keyring, frozenset(chain.keys), chain.name)
        loaded = {a.lower() for a in w.keyring.current().addresses}
        for address in sorted(set(chain.keys) - loaded):
            log.warning(
                "chain %s: its keys list names %s, which no loaded key has (a typo, or a key "
                "that failed to load): nothing signs for it there",
                chain.name,
                address,
            )
    router = build_router(
        keys, upstream, facts, settings, w.metrics, w.gate, nonces, tracker, chain=label
    )
    ws_url, ws_headers = node_socket(settings)
    suffix = f":{label}" if several else ""
    checks = [
        upstream_check(upstream, facts, f"upstream{suffix}"),
        chain_id_check(facts, f"chain_id{suffix}"),
    ]
    route = ChainRoute(label, chain_id, router, ws_url, ws_headers)
    return ChainParts(chain, chain_id, node, route, tracker, checks)


async def node_chain_id(
    chain: ChainConfig,
    upstream: MeteredUpstream | tracing.TracedUpstream,
    facts: ChainFacts,
    several: bool,
) -> int:
    """The chain id `chain` is served with: its node's eth_chainId, checked against the
    entry's chain_id. A mismatch refuses the start; so does a node that does not answer when
    the entry names no chain_id (with several chains the id is part of the path)."""
    try:
        live = await facts.chain_id()
    except SignerProxyError as exc:
        if chain.chain_id is not None:
            facts.expect(chain.chain_id)
            log.warning(
                "chain %s: node %s not answering yet (%s); serving chain id %d as configured",
                chain.name, upstream.display_url, exc.message, chain.chain_id,
            )  # fmt: skip
            return chain.chain_id
        if several:
            raise ConfigError(
                f"chain {chain.name}: the node {upstream.display_url} did not answer eth_chainId "
                f"at start ({exc.message}); start the node first, or set chains[{chain.name}]"
                ".chain_id so the proxy can serve the chain before its node answers"
            ) from None
        log.warning("upstream %s not answering yet: %s", upstream.display_url, exc.message)
        return 0
    if chain.chain_id is not None and live != chain.chain_id:
        raise ConfigError(
            f"chain {chain.name}: the node {upstream.display_url} reports chain id {live} but "
            f"the configuration says chain_id {chain.chain_id}: point chains[{chain.name}]"
            ".upstream at the right node, or correct chain_id"
        )
    log.info("chain %s: node %s, chain id %d", chain.name, upstream.display_url, live)
    return live


def check_chain_ids(chains: Sequence[ChainParts]) -> None:
    """ConfigError when two served chains have one chain id (their nonces would collide)."""
    seen: dict[int, str] = {}
    for chain in chains:
        if chain.chain_id in seen:
            raise ConfigError(
                f"chains {seen[chain.chain_id]} and {chain.config.name} both reach chain id "
                f"{chain.chain_id}; each chain is served once: remove one, or point it at the "
                "other chain's node"
            )
        if chain.chain_id:
            seen[chain.chain_id] = chain.config.name


def narrowed_keys(
    keyring: KeyRing, addresses: frozenset[str], chain: str
) -> Callable[[], KeyRegistry]:
    """The keyring's current registry narrowed to a chain's `keys:` (rebuilt after a reload)."""
    cache: list[tuple[KeyRegistry, KeyRegistry]] = []

    def current() -> KeyRegistry:
        whole = keyring.current()
        if not cache or cache[0][0] is not whole:
            cache[:] = [(whole, whole.narrowed(addresses, chain))]
        return cache[0][1]

    return current


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
