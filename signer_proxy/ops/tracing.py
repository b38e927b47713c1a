"""Traces: OpenTelemetry spans at the seams, off unless the standard OTEL_* variables ask.

When off (the default) nothing here is on the request path: the traced wrappers below are
not installed, `span()` is one attribute read, and no header is added to node requests.
When on, each JSON-RPC body gets a SERVER span (continuing the client's W3C `traceparent`),
each local call a child, and the seams add theirs: the policy gate, the nonce reservation,
the key's signature (backend, key, retries), every node request (CLIENT, with `traceparent`
sent on to the node). Attributes carry no secret and no calldata: method names (unknown ones
folded to `_OTHER`), addresses, key names, hashes, outcomes.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from signer_proxy import __version__
from signer_proxy.errors import ConfigError, SignerProxyError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

    from signer_proxy.eth.ecdsa import Signature
    from signer_proxy.keys.signer import Signer
    from signer_proxy.nonces.base import Lease, NonceManager
    from signer_proxy.upstream.base import Upstream

# The tracer while tracing is on; None (the default) means every hook here is skipped.
TRACER: Tracer | None = None
_PROVIDER: TracerProvider | None = None

# The headers a node request made in this context carries (traceparent), set by TracedUpstream
# and read by the HTTP node client: empty unless tracing is on.
OUTGOING_HEADERS: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar(
    "outgoing_headers", default=None
)

SUPPORTED_PROTOCOLS = ("http/protobuf",)


def wanted(env: Mapping[str, str]) -> bool:
    """Whether the environment asks for traces: an OTLP endpoint or OTEL_TRACES_EXPORTER, and
    not OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none":
        return False
    return bool(
        exporter
        or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )


def configure(env: Mapping[str, str] | None = None) -> bool:
    """Turn traces on if the environment asks (see `wanted`); True if on. The exporter reads
    its own OTEL_EXPORTER_OTLP_* variables (endpoint, headers, timeout, certificate).
    ConfigError for what this build cannot do (gRPC, an unknown exporter)."""
    env = os.environ if env is None else env
    if not wanted(env):
        return False
    exporter_name = env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() or "otlp"
    protocol = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    if exporter_name not in ("otlp", "console"):
        raise ConfigError(
            f"OTEL_TRACES_EXPORTER={exporter_name} is not supported: use otlp (OTLP over "
            "HTTP), console, or none"
        )
    if exporter_name == "otlp" and protocol not in SUPPORTED_PROTOCOLS:
        raise ConfigError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol} is not supported: use http/protobuf "
            "(point it at the collector's OTLP/HTTP port, usually 4318)"
        )
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SpanExporter,
    )

    exporter: SpanExporter
    if exporter_name == "console":
        exporter = ConsoleSpanExporter()
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    # Resource.create reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES itself, and what
    # it is given wins over them: the default name only when the environment names none.
    attributes = {"service.version": __version__}
    named = env.get("OTEL_SERVICE_NAME") or "service.name=" in env.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    )
    if not named:
        attributes["service.name"] = "signer-proxy"
    resource = Resource.create(attributes)
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter))  # exports on its own thread
    use(provider)
    return True


def use(provider: TracerProvider | None) -> None:
    """Trace into `provider` from now on (None: off). Tests give an in-memory one."""
    global TRACER, _PROVIDER
    _PROVIDER = provider
    TRACER = provider.get_tracer("signer_proxy", __version__) if provider else None


def shutdown() -> None:
    """Flush what is buffered and stop (at process exit)."""
    if _PROVIDER is not None:
        _PROVIDER.shutdown()
    use(None)


# Stateless, so one instance serves every `with` while tracing is off (a generator-based
# context manager cost 3.5 µs per use here; this one 0.1 µs).
_NULL = contextlib.nullcontext()


def span(name: str, attributes: Mapping[str, Any] | None = None) -> Any:
    """A child span of the current one while tracing is on; else a context that does nothing."""
    if TRACER is None:
        return _NULL
    return TRACER.start_as_current_span(name, attributes=attributes)


# --- The seams, traced -------------------------------------------------------------------------


def _record_error(current: Span, exc: BaseException) -> None:
    from opentelemetry.trace import Status, StatusCode

    kind = type(exc).__name__
    current.set_attribute("error.type", kind)
    message = exc.message if isinstance(exc, SignerProxyError) else kind
    current.set_status(Status(StatusCode.ERROR, message))


def traceparent_headers() -> dict[str, str]:
    """The W3C trace context of the current span, as headers for an outgoing request."""
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return carrier


def continue_trace(traceparent: str | None) -> Any:
    """The OpenTelemetry context a client's `traceparent` names (None: a new trace)."""
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    if not traceparent:
        return None
    return TraceContextTextMapPropagator().extract({"traceparent": traceparent})


class TracedUpstream:
    """An Upstream whose every request is a CLIENT span and carries `traceparent`."""

    def __init__(self, inner: Upstream) -> None:
        self._inner = inner
        self.display_url: str = getattr(inner, "display_url", "the node")

    async def _traced(self, name: str, method: str, run: Callable[[], Any]) -> Any:
        from opentelemetry.trace import SpanKind

        assert TRACER is not None
        attributes = {
            "rpc.system": "jsonrpc",
            "rpc.method": method,
            "server.address": self.display_url,
        }
        with TRACER.start_as_current_span(
            name, kind=SpanKind.CLIENT, attributes=attributes, record_exception=False
        ) as current:
            token = OUTGOING_HEADERS.set(traceparent_headers())
            try:
                return await run()
            except SignerProxyError as exc:
                _record_error(current, exc)
                raise
            finally:
                OUTGOING_HEADERS.reset(token)

    async def call(self, method: str, params: Any) -> Any:
        # The proxy's own calls: method names from our code, never a client's.
        return await self._traced(
            f"node {method}", method, lambda: self._inner.call(method, params)
        )

    async def forward(self, body: bytes) -> bytes:
        result: bytes = await self._traced(
            "node forward", "forward", lambda: self._inner.forward(body)
        )
        return result

    def __getattr__(self, name: str) -> Any:  # aclose, watch, nodes … of the inner client
        return getattr(self._inner, name)


def traced_signer(inner: Signer) -> Signer:
    """`inner` with a span around each signature: the backend, the key, how long."""
    from signer_proxy.keys.signer import SignerWrapper, signer_backend

    backend = signer_backend(inner)

    class TracedSigner(SignerWrapper):
        async def sign_digest(self, digest: bytes) -> Signature:
            assert TRACER is not None
            attributes = {
                "signer.key": self._inner.key_name,
                "signer.address": self._inner.address,
                "signer.backend": backend,
            }
            with TRACER.start_as_current_span(
                "sign", attributes=attributes, record_exception=False
            ) as current:
                try:
                    return await self._inner.sign_digest(digest)
                except SignerProxyError as exc:
                    _record_error(current, exc)
                    raise

    return TracedSigner(inner)


class TracedNonces:
    """A NonceManager whose reservations are spans (the wait for the address's lock counts)."""

    def __init__(self, inner: NonceManager) -> None:
        self._inner = inner

    async def reserve(self, address: str) -> Lease:
        assert TRACER is not None
        with TRACER.start_as_current_span("nonce reserve", attributes={"eth.from": address}) as s:
            started = time.perf_counter()
            lease = await self._inner.reserve(address)
            s.set_attribute("eth.nonce", lease.nonce)
            s.set_attribute("nonce.wait_seconds", time.perf_counter() - started)
            return lease

    async def next_nonce(self, address: str) -> int:
        return await self._inner.next_nonce(address)

    async def resync(self, address: str) -> None:
        await self._inner.resync(address)

    async def replaced(self, address: str, nonce: int, raw: bytes) -> None:
        await self._inner.replaced(address, nonce, raw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def event(name: str, attributes: Mapping[str, Any]) -> None:
    """An event on the current span (a KMS retry, a nonce clash) while tracing is on."""
    if TRACER is None:
        return
    from opentelemetry import trace

    trace.get_current_span().add_event(name, dict(attributes))


def server_span(name: str, traceparent: str | None, attributes: Mapping[str, Any]) -> Any:
    """The SERVER span of one request body, continuing the client's trace if it sent one."""
    from opentelemetry.trace import SpanKind

    assert TRACER is not None
    return TRACER.start_as_current_span(
        name,
        context=continue_trace(traceparent),
        kind=SpanKind.SERVER,
        attributes=attributes,
        record_exception=False,
    )


def set_reply(current: Span, reply: Any) -> None:
    """The JSON-RPC outcome on a call's span: its error code, if the reply is an error (a
    node's reply passed through is read only while small)."""
    if isinstance(reply, bytes) and len(reply) <= 65536:
        from signer_proxy.jsonrpc import loads

        try:
            reply = loads(reply)
        except ValueError:
            return
    error = reply.get("error") if isinstance(reply, dict) else None
    if isinstance(error, dict) and "code" in error:
        from opentelemetry.trace import Status, StatusCode

        current.set_attribute("rpc.jsonrpc.error_code", error["code"])
        current.set_status(Status(StatusCode.ERROR, str(error.get("message", ""))[:200]))
