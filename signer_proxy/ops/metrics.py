"""Prometheus metrics: one registry per app, observed at the seams (router, signer, upstream,
nonce manager) by thin wrappers, so the layers themselves stay free of metrics code.

Every label value comes from a fixed set defined here: client-chosen strings (method names,
error messages) are folded into these sets before they reach a label, so a client cannot grow
the number of time series. `docs/operations.md` lists every metric (a test keeps it in step).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from aiohttp import web
from botocore.exceptions import BotoCoreError, ClientError
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from signer_proxy import __version__
from signer_proxy.errors import (
    AuditUnavailable,
    Forbidden,
    KmsUnavailable,
    MethodNotFound,
    NodeRejected,
    PolicyDenied,
    RateLimited,
    ResourceUnavailable,
    SignerProxyError,
    SigningFailed,
    Unauthorized,
    UpstreamBadResponse,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from signer_proxy.eth.ecdsa import Signature
from signer_proxy.jsonrpc import Body, Call, loads
from signer_proxy.keys.discovery import SKIP_REASONS
from signer_proxy.keys.keyring import RELOAD_OUTCOMES, RELOAD_TRIGGERS
from signer_proxy.keys.loading import SOURCES as KEY_SOURCES
from signer_proxy.keys.loading import KeyLoad
from signer_proxy.keys.signer import Signer, SignerWrapper, signer_backend
from signer_proxy.nonces.base import Lease, NonceManager
from signer_proxy.ops.loop_metrics import LoopCounter, LoopHistogram
from signer_proxy.upstream.base import Upstream
from signer_proxy.upstream.node_errors import SendOutcome, classify_send_error

# --- Fixed label sets and the pure functions that fold values into them ----------------------

# Local methods by family; a local method missing here is "other", anything forwarded is
# "forwarded", a malformed call or body is "invalid", a whole batch (for latency) is "batch".
LOCAL_FAMILIES: dict[str, str] = {
    "eth_accounts": "accounts",
    "eth_requestAccounts": "accounts",
    "eth_sendTransaction": "send_transaction",
    "eth_signTransaction": "sign_transaction",
    "eth_sign": "sign_message",
    "personal_sign": "sign_message",
    "eth_signTypedData": "sign_message",
    "eth_signTypedData_v3": "sign_message",
    "eth_signTypedData_v4": "sign_message",
    "signer_signAuthorization": "sign_authorization",
}
FAMILIES = (*sorted(set(LOCAL_FAMILIES.values())), "other", "forwarded", "invalid")

# What a client got back, by the JSON-RPC error code it saw (the codes errors.py owns).
# A node's own error (a revert, "insufficient funds") keeps the node's code: "node_error".
OUTCOME_BY_CODE: dict[int, str] = {
    -32700: "invalid",
    -32600: "invalid",
    MethodNotFound.code: "invalid",
    -32602: "invalid",
    SignerProxyError.code: "internal",  # -32603
    SigningFailed.code: "signing_failed",
    KmsUnavailable.code: "kms_unavailable",
    UpstreamUnavailable.code: "upstream_unavailable",
    UpstreamBadResponse.code: "upstream_bad_response",
    Unauthorized.code: "unauthorized",
    Forbidden.code: "forbidden",
    PolicyDenied.code: "policy_denied",
    RateLimited.code: "rate_limited",
    AuditUnavailable.code: "audit_unavailable",
    ResourceUnavailable.code: "unavailable",  # -32002: refused while shutting down
}
OUTCOMES = ("ok", *sorted(set(OUTCOME_BY_CODE.values())), "node_error", "no_reply")

# KMS error codes worth their own label; any other code is "other".
KMS_ERROR_CODES = frozenset(
    {
        "ThrottlingException",
        "DependencyTimeoutException",
        "KMSInternalException",
        "KeyUnavailableException",
        "DisabledException",
        "KMSInvalidStateException",
        "NotFoundException",
        "InvalidKeyUsageException",
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidSignatureException",
    }
)

# The node calls the proxy makes itself (a fixed set in our code); "forward" is client
# pass-through (single calls and batches), anything else "other".
UPSTREAM_METHODS = frozenset(
    {
        "eth_chainId",
        "eth_getBlockByNumber",
        "eth_getTransactionCount",
        "eth_estimateGas",
        "eth_gasPrice",
        "eth_maxPriorityFeePerGas",
        "eth_feeHistory",
        "eth_sendRawTransaction",
    }
)


def method_family(method: str, is_local: bool) -> str:
    """The family label of a call: a local method's family, else "forwarded"."""
    if not is_local:
        return "forwarded"
    return LOCAL_FAMILIES.get(method, "other")


def outcome_of_code(code: Any) -> str:
    """The outcome label for a JSON-RPC error code a client received."""
    if isinstance(code, int) and not isinstance(code, bool):
        return OUTCOME_BY_CODE.get(code, "node_error")
    return "node_error"


_SCAN_WHOLE_UP_TO = 64 * 1024
_SCAN_ENDS = 256


def outcome_of_reply(reply: Any) -> str:
    """The outcome label of one reply: a response object, or the node's bytes passed through."""
    if isinstance(reply, (bytes, bytearray)):  # a tuple: faster than a union, every call
        # Most replies are results: a byte scan rules an error out without decoding. Nodes
        # write a response's keys first ({"jsonrpc","id","error":…}), so a large reply (a
        # megabyte of logs) is only scanned at its ends.
        if len(reply) > _SCAN_WHOLE_UP_TO:
            if b'"error"' not in reply[:_SCAN_ENDS] and b'"error"' not in reply[-_SCAN_ENDS:]:
                return "ok"
        elif b'"error"' not in reply:
            return "ok"
        try:
            reply = loads(reply)
        except ValueError:
            return "upstream_bad_response"
    if isinstance(reply, dict):
        error = reply.get("error")
        if error is None:
            return "ok"
        return outcome_of_code(error.get("code") if isinstance(error, dict) else None)
    return "ok"


def kms_error_label(exc: BaseException) -> str:
    """The error label for a failed signature: a known KMS code, or a coarse kind."""
    cause = exc.__cause__
    if isinstance(cause, ClientError):
        code = str(cause.response.get("Error", {}).get("Code", ""))
        return code if code in KMS_ERROR_CODES else "other"
    if isinstance(cause, TimeoutError | BotoCoreError | OSError):
        return "unreachable"
    if isinstance(exc, SigningFailed):
        return "bad_signature"
    return "other"


def upstream_error_label(exc: BaseException) -> str:
    if isinstance(exc, UpstreamTimeout):
        return "timeout"
    if isinstance(exc, UpstreamUnavailable):
        return "unavailable"
    if isinstance(exc, UpstreamBadResponse):
        return "bad_response"
    if isinstance(exc, NodeRejected):
        return "node_error"
    return "other"


# --- The metrics -------------------------------------------------------------------------------

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_SIGN_LATENCY = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
_NONCE_LATENCY = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0)


class Metrics:
    """Every signer-proxy metric, registered on its own registry (one per app)."""

    def __init__(self, *, process_collectors: bool = True) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        if process_collectors:
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
            GCCollector(registry=r)
        self.build_info = Gauge(
            "signer_proxy_build_info", "Always 1; the version as a label.", ["version"], registry=r
        )
        self.build_info.labels(__version__).set(1)
        # The three metrics every request touches are written only on the event loop: lean
        # children there (ops/loop_metrics.py), the same exposition.
        self.requests = LoopCounter(
            "signer_proxy_requests_total",
            "JSON-RPC calls answered, by method family and outcome.",
            ["family", "outcome", "chain"],
            registry=r,
        )
        self.request_duration = LoopHistogram(
            "signer_proxy_request_duration_seconds",
            "Time to answer a request body: by the family of its one call, or 'batch'.",
            ["family", "chain"],
            buckets=_LATENCY,
            registry=r,
        )
        self.in_flight = Gauge(
            "signer_proxy_in_flight_requests",
            "JSON-RPC requests being handled now.",
            registry=r,
        )
        self.sign_duration = Histogram(
            "signer_proxy_sign_duration_seconds",
            "Time for one signature by the key backend (a KMS Sign round trip).",
            ["backend"],
            buckets=_SIGN_LATENCY,
            registry=r,
        )
        self.sign_errors = Counter(
            "signer_proxy_sign_errors_total",
            "Failed signatures, by backend and error (a KMS error code or a coarse kind).",
            ["backend", "error"],
            registry=r,
        )
        self.upstream_duration = LoopHistogram(
            "signer_proxy_upstream_duration_seconds",
            "Time for one request to the node: the proxy's own calls by method, pass-through "
            "as 'forward'.",
            ["method", "chain"],
            buckets=_LATENCY,
            registry=r,
        )
        self.upstream_errors = Counter(
            "signer_proxy_upstream_errors_total",
            "Failed requests to the node, by method and error kind.",
            ["method", "error", "chain"],
            registry=r,
        )
        self.send_rejections = Counter(
            "signer_proxy_send_rejections_total",
            "eth_sendRawTransaction errors from the node, by how they were classified.",
            ["reason", "chain"],
            registry=r,
        )
        self.nonce_resyncs = Counter(
            "signer_proxy_nonce_resyncs_total",
            "Times the nonce manager re-read the node after a nonce was refused.",
            ["chain"],
            registry=r,
        )
        self.nonce_reserve_duration = Histogram(
            "signer_proxy_nonce_reserve_duration_seconds",
            "Time to reserve a nonce, waiting on the address's lock included.",
            ["chain"],
            buckets=_NONCE_LATENCY,
            registry=r,
        )
        self.keys_loaded = Gauge(
            "signer_proxy_keys_loaded", "Keys the proxy can sign with now.", registry=r
        )
        self.key_load_failures = Gauge(
            "signer_proxy_key_load_failures",
            "Keys that did not load at the last load (startup or reload), by source.",
            ["source"],
            registry=r,
        )
        self.key_discovery_skipped = Gauge(
            "signer_proxy_key_discovery_skipped",
            "Keys discovery listed but passed over at the last load, by reason.",
            ["reason"],
            registry=r,
        )
        self.key_load_duration = Gauge(
            "signer_proxy_key_load_seconds",
            "How long the last key load (startup or reload) took.",
            registry=r,
        )
        self.key_reloads = Counter(
            "signer_proxy_key_reloads_total",
            "Key reloads by trigger (sighup, admin) and outcome (ok; failures: some keys did "
            "not load; error: the configuration could not be read, nothing changed).",
            ["trigger", "outcome"],
            registry=r,
        )
        for source in KEY_SOURCES:
            self.key_load_failures.labels(source).set(0)
        for reason in SKIP_REASONS:
            self.key_discovery_skipped.labels(reason).set(0)
        # Fed by later features; defined now so the names are stable for dashboards.
        self.policy_denials = Counter(
            "signer_proxy_policy_denials_total",
            "Calls refused by the signing policy, by method family (fed by the policy module).",
            ["family"],
            registry=r,
        )
        self.malformed_requests = Counter(
            "signer_proxy_malformed_requests_total",
            "HTTP requests aiohttp refused as malformed (a bad head or body framing) before "
            "any handler; each is one debug log line instead of a traceback.",
            registry=r,
        )
        self.websocket_connections = Gauge(
            "signer_proxy_websocket_connections",
            "Open WebSocket client connections.",
            registry=r,
        )
        # Transactions tracked after the send (signer_proxy.tracking), by the watching replica.
        self.tracked_pending = Gauge(
            "signer_proxy_tracked_pending",
            "Sent transactions not final yet (pending or stuck), per address watched here.",
            ["address", "chain"],
            registry=r,
        )
        self.tracked_oldest_pending_seconds = Gauge(
            "signer_proxy_tracked_oldest_pending_seconds",
            "Age of the oldest transaction not final yet, per address watched here.",
            ["address", "chain"],
            registry=r,
        )
        self.tracked_stuck = Gauge(
            "signer_proxy_tracked_stuck",
            "Transactions pending past the policy's wait that cannot be bumped, per address.",
            ["address", "chain"],
            registry=r,
        )
        self.tracked_bumps = Counter(
            "signer_proxy_tracked_bumps_total",
            "Replacements sent with higher fees, by trigger (auto, speed_up, cancel).",
            ["trigger", "chain"],
            registry=r,
        )
        self.tracked_rebroadcasts = Counter(
            "signer_proxy_tracked_rebroadcasts_total",
            "Tracked transactions the node had forgotten, sent again as the same bytes.",
            ["chain"],
            registry=r,
        )
        self.tracked_reorged = Counter(
            "signer_proxy_tracked_reorged_total",
            "Mined transactions a reorg took out of the chain while they were confirming "
            "(--tracking-confirmations), watched as pending again.",
            ["chain"],
            registry=r,
        )
        self.tracked_stuck_events = Counter(
            "signer_proxy_tracked_stuck_events_total",
            "Times a transaction was found stuck (bumping off, or a policy ceiling reached).",
            ["chain"],
            registry=r,
        )
        self._request_children: dict[tuple[str, str, str], Any] = {}
        self._duration_children: dict[tuple[str, str], Any] = {}

    def names(self) -> list[str]:
        """The signer_proxy_* metric names as exposed (counters with their _total)."""
        return sorted(
            f"{m.name}_total" if m.type == "counter" else m.name
            for m in self.registry.collect()
            if m.name.startswith("signer_proxy_")
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    # -- the router seam --

    def count_call(self, family: str, outcome: str, chain: str = "default") -> None:
        key = (family, outcome, chain)
        child = self._request_children.get(key)
        if child is None:
            child = self._request_children[key] = self.requests.labels(family, outcome, chain)
        child.inc()

    def observe_duration(self, family: str, seconds: float, chain: str = "default") -> None:
        key = (family, chain)
        child = self._duration_children.get(key)
        if child is None:
            child = self._duration_children[key] = self.request_duration.labels(family, chain)
        child.observe(seconds)

    def observe_reply(
        self,
        body: Body,
        reply: Any,
        seconds: float,
        is_local: Callable[[str], bool],
        chain: str = "default",
    ) -> None:
        """Count every call of a routed body by family and outcome, and time the body."""
        if not body.is_batch:
            call = body.calls[0]
            assert isinstance(call, Call)
            family = method_family(call.method, is_local(call.method))
            outcome = "no_reply" if reply is None else outcome_of_reply(reply)
            self.count_call(family, outcome, chain)
            self.observe_duration(family, seconds, chain)
            return
        replies: Iterator[Any] = iter(reply or ())
        for item in body.calls:
            if not isinstance(item, Call):
                self.count_call("invalid", outcome_of_reply(next(replies, None)), chain)
            elif item.is_notification:
                family = method_family(item.method, is_local(item.method))
                self.count_call(family, "no_reply", chain)
            else:
                family = method_family(item.method, is_local(item.method))
                self.count_call(family, outcome_of_reply(next(replies, None)), chain)
        self.observe_duration("batch", seconds, chain)

    def reply_observer(
        self, chain: str
    ) -> Callable[[Body, Any, float, Callable[[str], bool]], None]:
        """observe_reply for one chain's router."""

        def observe(
            body: Body, reply: Any, seconds: float, is_local: Callable[[str], bool]
        ) -> None:
            self.observe_reply(body, reply, seconds, is_local, chain)

        return observe

    def count_rejected_body(self, error: SignerProxyError) -> None:
        """A body refused before routing (not JSON, too large, empty batch, no such chain):
        it has no chain."""
        self.count_call("invalid", outcome_of_code(error.error_code()), "none")

    # -- key loads --

    def observe_key_load(self, load: KeyLoad) -> None:
        """Failures by source, discovery's skipped keys by reason, and the load's duration."""
        failures = load.failures_by_source()
        for source in KEY_SOURCES:
            self.key_load_failures.labels(source).set(failures.get(source, 0))
        for reason in SKIP_REASONS:
            self.key_discovery_skipped.labels(reason).set(load.skipped.get(reason, 0))
        self.key_load_duration.set(load.seconds)

    def count_reload(self, trigger: str, outcome: str) -> None:
        trigger = trigger if trigger in RELOAD_TRIGGERS else "other"
        self.key_reloads.labels(trigger, outcome if outcome in RELOAD_OUTCOMES else "error").inc()

    # -- wrappers for the other seams --

    def signer(self, signer: Signer) -> Signer:
        return MeteredSigner(signer, self)

    def upstream(self, upstream: Upstream, chain: str = "default") -> MeteredUpstream:
        return MeteredUpstream(upstream, self, chain)

    def nonces(self, nonces: NonceManager, chain: str = "default") -> NonceManager:
        return MeteredNonceManager(nonces, self, chain)


METRICS = web.AppKey("metrics", Metrics)


class MeteredSigner(SignerWrapper):
    """A Signer that times each signature and counts failures by KMS error code."""

    def __init__(self, inner: Signer, metrics: Metrics) -> None:
        super().__init__(inner)
        self._metrics = metrics
        self._backend = signer_backend(inner)
        self._duration = metrics.sign_duration.labels(self._backend)

    async def sign_digest(self, digest: bytes) -> Signature:
        started = time.perf_counter()
        try:
            return await self._inner.sign_digest(digest)
        except SignerProxyError as exc:
            self._metrics.sign_errors.labels(self._backend, kms_error_label(exc)).inc()
            raise
        finally:
            self._duration.observe(time.perf_counter() - started)


class MeteredUpstream:
    """An Upstream that times each node request and counts errors and send rejections."""

    def __init__(self, inner: Upstream, metrics: Metrics, chain: str = "default") -> None:
        self._inner = inner
        self._metrics = metrics
        self._chain = chain
        # Every pass-through observes this one.
        self._forward_duration = metrics.upstream_duration.labels("forward", chain)
        self.display_url: str = getattr(inner, "display_url", "the node")

    async def call(self, method: str, params: Any) -> Any:
        label = method if method in UPSTREAM_METHODS else "other"
        started = time.perf_counter()
        try:
            return await self._inner.call(method, params)
        except SignerProxyError as exc:
            errors = self._metrics.upstream_errors
            errors.labels(label, upstream_error_label(exc), self._chain).inc()
            if method == "eth_sendRawTransaction" and isinstance(exc, NodeRejected):
                reason: SendOutcome = classify_send_error(exc.message)
                self._metrics.send_rejections.labels(reason.value, self._chain).inc()
            raise
        finally:
            duration = self._metrics.upstream_duration.labels(label, self._chain)
            duration.observe(time.perf_counter() - started)

    async def forward(self, body: bytes) -> bytes:
        started = time.perf_counter()
        try:
            return await self._inner.forward(body)
        except SignerProxyError as exc:
            errors = self._metrics.upstream_errors
            errors.labels("forward", upstream_error_label(exc), self._chain).inc()
            raise
        finally:
            self._forward_duration.observe(time.perf_counter() - started)


class MeteredNonceManager:
    """A NonceManager that times reservations (lock waits included) and counts resyncs."""

    def __init__(self, inner: NonceManager, metrics: Metrics, chain: str = "default") -> None:
        self._inner = inner
        self._reserve_duration = metrics.nonce_reserve_duration.labels(chain)
        self._resyncs = metrics.nonce_resyncs.labels(chain)

    async def reserve(self, address: str) -> Lease:
        started = time.perf_counter()
        try:
            return await self._inner.reserve(address)
        finally:
            self._reserve_duration.observe(time.perf_counter() - started)

    async def next_nonce(self, address: str) -> int:
        return await self._inner.next_nonce(address)

    async def resync(self, address: str) -> None:
        self._resyncs.inc()
        await self._inner.resync(address)

    async def replaced(self, address: str, nonce: int, raw: bytes) -> None:
        await self._inner.replaced(address, nonce, raw)


async def handle_metrics(request: web.Request) -> web.Response:
    """GET /metrics: the Prometheus text exposition of this app's registry."""
    metrics = request.app[METRICS]
    response = web.Response(body=metrics.exposition())
    # The classic text format's type: every Prometheus version (and most agents) parses it.
    response.headers["Content-Type"] = CONTENT_TYPE_PLAIN_0_0_4
    return response
