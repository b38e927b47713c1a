"""Traces through a real proxy: anvil, the KMS emulator, spans in memory and over OTLP/HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from signer_proxy.ops import tracing
from tests.conftest import (
    Anvil,
    KmsEmulator,
    KmsKey,
    ProxyFactory,
    proxy_settings,
    start_proxy_process,
    stop,
)
from tests.integration.node_front import NodeFront

pytestmark = pytest.mark.integration

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{CLIENT_SPAN}-01"
RECIPIENT = "0x" + "ab" * 20
CALLDATA = "0x" + "c0ffee" * 40


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    yield exporter
    tracing.use(None)


def by_name(finished: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in finished if s.name == name]


def ancestors(span: ReadableSpan, finished: tuple[ReadableSpan, ...]) -> list[str]:
    by_id = {s.context.span_id: s for s in finished}
    names = []
    parent = span.parent
    while parent is not None and parent.span_id in by_id:
        span = by_id[parent.span_id]
        names.append(span.name)
        parent = span.parent
    return names


async def test_a_send_is_one_trace_continuing_the_clients_traceparent(
    spans: InMemorySpanExporter,
    start_proxy: ProxyFactory,
    anvil: Anvil,
    kms: KmsEmulator,
    funded_key: KmsKey,
) -> None:
    front = NodeFront(anvil.url)
    try:
        proxy = await start_proxy(proxy_settings(front.url, kms.url, funded_key.alias))
        response = await proxy.client.post(
            "/",
            json={
                "jsonrpc": "2.0",
                "id": 7,
                "method": "eth_sendTransaction",
                "params": [{"from": funded_key.address, "to": RECIPIENT, "data": CALLDATA}],
            },
            headers={"traceparent": TRACEPARENT},
        )
        body = await response.json()
        assert "result" in body, body
    finally:
        front.stop()

    finished = spans.get_finished_spans()
    (server,) = by_name(finished, "eth_sendTransaction")
    assert server.kind is SpanKind.SERVER
    assert format(server.context.trace_id, "032x") == TRACE_ID
    assert server.parent is not None and format(server.parent.span_id, "016x") == CLIENT_SPAN
    assert server.attributes is not None
    assert server.attributes["rpc.system"] == "jsonrpc"
    assert server.attributes["rpc.method"] == "eth_sendTransaction"
    assert server.attributes["rpc.jsonrpc.request_id"] == "7"
    # Every span of the request is in the client's trace, under the server span.
    request_spans = [s for s in finished if format(s.context.trace_id, "032x") == TRACE_ID]
    names = {s.name for s in request_spans}
    assert {"fill", "policy gate", "nonce reserve", "sign", "node eth_sendRawTransaction"} <= names
    for span in request_spans:
        if span is not server:
            assert "eth_sendTransaction" in ancestors(span, finished), span.name
    # The node calls made while filling are the fill span's children.
    (fill,) = by_name(finished, "fill")
    fill_children = [
        s for s in request_spans if s.parent and s.parent.span_id == fill.context.span_id
    ]
    assert any(s.name == "node eth_estimateGas" for s in fill_children)
    assert all(s.kind is SpanKind.CLIENT for s in fill_children)
    (sign,) = by_name(finished, "sign")
    assert sign.attributes is not None
    assert sign.attributes["signer.address"] == funded_key.address
    assert sign.attributes["signer.backend"] == "aws_kms"
    (gate,) = by_name(finished, "policy gate")
    assert gate.attributes is not None and gate.attributes["policy.outcome"] == "allowed"
    # The node saw each request's own CLIENT span as parent, in the client's trace (calls
    # the proxy makes at startup, outside any request, are traces of their own).
    client_spans = {
        format(s.context.span_id, "016x") for s in request_spans if s.kind is SpanKind.CLIENT
    }
    sent = [tp.split("-") for tp in front.traceparents if tp and TRACE_ID in tp]
    assert len(sent) >= 3
    assert {parent for _, _, parent, _ in sent} <= client_spans
    # No calldata anywhere in the attributes.
    for span in finished:
        for value in (span.attributes or {}).values():
            assert "c0ffee" not in str(value)


async def test_unknown_methods_are_folded_and_errors_marked(
    spans: InMemorySpanExporter,
    start_proxy: ProxyFactory,
    anvil: Anvil,
    kms: KmsEmulator,
    funded_key: KmsKey,
) -> None:
    proxy = await start_proxy(proxy_settings(anvil.url, kms.url, funded_key.alias))
    reply = await proxy.call("no such method, anyone's text", [])
    assert "error" in reply
    await proxy.result("eth_blockNumber")
    names = [s.name for s in spans.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert names == ["_OTHER", "eth_blockNumber"]
    (other,) = [s for s in spans.get_finished_spans() if s.name == "_OTHER"]
    assert other.attributes is not None and "rpc.jsonrpc.error_code" in other.attributes
    assert not other.status.is_ok


async def test_no_traceparent_goes_to_the_node_while_tracing_is_off(
    start_proxy: ProxyFactory, anvil: Anvil, kms: KmsEmulator, funded_key: KmsKey
) -> None:
    assert tracing.TRACER is None
    front = NodeFront(anvil.url)
    try:
        proxy = await start_proxy(proxy_settings(front.url, kms.url, funded_key.alias))
        response = await proxy.client.post(
            "/",
            json={
                "jsonrpc": "2.0",
                "id": 1,
                "method": "eth_sendTransaction",
                "params": [{"from": funded_key.address, "to": RECIPIENT}],
            },
            headers={"traceparent": TRACEPARENT},
        )
        assert "result" in await response.json()
    finally:
        front.stop()
    assert front.traceparents and not any(front.traceparents)


class OtlpReceiver:
    """A small OTLP/HTTP collector: POST /v1/traces with protobuf bodies, kept decoded."""

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        self.arrived = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                ok = self.path == "/v1/traces" and (
                    self.headers.get("Content-Type") == "application/x-protobuf"
                )
                if ok:
                    message = ExportTraceServiceRequest()
                    message.ParseFromString(body)
                    receiver.requests.append(message)
                    receiver.arrived.set()
                self.send_response(200 if ok else 400)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def span_names(self) -> dict[str, str]:
        """span name → service.name of its resource."""
        names = {}
        for request in self.requests:
            for resource_spans in request.resource_spans:
                service = next(
                    a.value.string_value
                    for a in resource_spans.resource.attributes
                    if a.key == "service.name"
                )
                for scope in resource_spans.scope_spans:
                    for span in scope.spans:
                        names[span.name] = service
        return names

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def test_serve_exports_spans_over_otlp_http_when_otel_variables_say_so(
    anvil: Anvil, kms: KmsEmulator, funded_key: KmsKey
) -> None:
    receiver = OtlpReceiver()
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_SERVICE_NAME": "signer-proxy-test",
        "OTEL_BSP_SCHEDULE_DELAY": "50",
    }
    proxy = start_proxy_process(
        "--upstream", anvil.url, "--aws-region", "us-east-1",
        "--aws-endpoint-url", kms.url, "--kms-key", funded_key.alias or funded_key.arn,
        env=env,
    )  # fmt: skip
    try:
        payload = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "eth_sendTransaction",
            "params": [{"from": funded_key.address, "to": RECIPIENT}],
        }
        import urllib.request

        request = urllib.request.Request(
            proxy.url,
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json", "traceparent": TRACEPARENT},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert "result" in json.loads(response.read())
        deadline = time.monotonic() + 20
        while "sign" not in receiver.span_names() and time.monotonic() < deadline:
            receiver.arrived.wait(0.2)
            receiver.arrived.clear()
    finally:
        stop(proxy.process)
        receiver.stop()
    names = receiver.span_names()
    assert names.get("eth_sendTransaction") == "signer-proxy-test", names
    assert {"fill", "policy gate", "nonce reserve", "sign", "node eth_sendRawTransaction"} <= set(
        names
    )


def test_serve_refuses_a_grpc_otlp_configuration(anvil: Anvil, kms: KmsEmulator) -> None:
    from tests.conftest import run_cli

    result = run_cli(
        "serve", "--listen", "127.0.0.1:0", "--upstream", anvil.url, "--aws-region", "us-east-1",
        "--aws-endpoint-url", kms.url, "--kms-key", "alias/none",
        env={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317",
             "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "use http/protobuf" in result.stderr


_ = (asyncio, os)
