"""ops/tracing.py: when the environment turns traces on, and what it refuses."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from signer_proxy.errors import ConfigError
from signer_proxy.ops import tracing


@pytest.fixture(autouse=True)
def _tracing_off() -> Iterator[None]:
    yield
    tracing.use(None)


@pytest.mark.parametrize(
    ("env", "on"),
    [
        pytest.param({}, False, id="nothing-set"),
        pytest.param({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True, id="endpoint"),
        pytest.param(
            {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"},
            True,
            id="traces-endpoint",
        ),
        pytest.param({"OTEL_TRACES_EXPORTER": "otlp"}, True, id="exporter-named"),
        pytest.param({"OTEL_TRACES_EXPORTER": "none"}, False, id="exporter-none"),
        pytest.param(
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_SDK_DISABLED": "true"},
            False,
            id="sdk-disabled",
        ),
        pytest.param(
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_TRACES_EXPORTER": "none"},
            False,
            id="endpoint-but-exporter-none",
        ),
        pytest.param({"OTEL_SERVICE_NAME": "x"}, False, id="service-name-alone"),
    ],
)
def test_wanted_follows_the_standard_variables(env: dict[str, str], on: bool) -> None:
    assert tracing.wanted(env) is on


def test_configure_leaves_tracing_off_without_otel_variables() -> None:
    assert tracing.configure({}) is False
    assert tracing.TRACER is None


def test_configure_turns_tracing_on_with_an_endpoint() -> None:
    assert tracing.configure({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}) is True
    assert tracing.TRACER is not None
    tracing.shutdown()
    assert tracing.TRACER is None


@pytest.mark.parametrize(
    ("env", "says"),
    [
        pytest.param(
            {"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER=zipkin", id="zipkin"
        ),
        pytest.param(
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            "use http/protobuf",
            id="grpc",
        ),
    ],
)
def test_configure_refuses_what_this_build_cannot_export(env: dict[str, str], says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        tracing.configure(env)
    assert tracing.TRACER is None


def test_span_does_nothing_while_off() -> None:
    with tracing.span("anything") as current:
        assert current is None
    tracing.event("ignored", {"a": 1})  # no current span, no error
