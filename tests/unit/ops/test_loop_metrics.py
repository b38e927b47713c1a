"""The loop's counter and histogram expose exactly what prometheus_client's would, for the
same observations (only the _created timestamps differ: they are creation times)."""

from __future__ import annotations

import re

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from signer_proxy.ops.loop_metrics import LoopCounter, LoopHistogram

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def exposition(registry: CollectorRegistry) -> str:
    text = generate_latest(registry).decode()
    return re.sub(r"(_created\{[^}]*\}) \S+", r"\1 T", text)


OBSERVATIONS = [
    pytest.param([], id="no-observation"),
    pytest.param([("a", "x", 0.0)], id="zero"),
    pytest.param([("a", "x", 0.005)], id="on-a-bound"),
    pytest.param([("a", "x", 0.0050001)], id="just-above-a-bound"),
    pytest.param([("a", "x", 30.0), ("a", "x", 31.0), ("a", "x", 1e9)], id="top-and-inf"),
    pytest.param([("a", "x", -1.0)], id="negative"),
    pytest.param(
        [("a", "x", 0.003), ("b", "x", 0.2), ("a", "y", 4.0), ("a", "x", 0.07), ("b", "x", 0.2)],
        id="several-children",
    ),
]


@pytest.mark.parametrize("observations", OBSERVATIONS)
def test_a_histogram_exposes_what_prometheus_client_would(
    observations: list[tuple[str, str, float]],
) -> None:
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    reference = Histogram("x_seconds", "Time.", ["m", "c"], buckets=BUCKETS, registry=theirs)
    lean = LoopHistogram("x_seconds", "Time.", ["m", "c"], buckets=BUCKETS, registry=ours)
    for family, chain, seconds in observations:
        reference.labels(family, chain).observe(seconds)
        lean.labels(family, chain).observe(seconds)
    assert exposition(ours) == exposition(theirs)
    for family, chain, _ in observations:
        labels = {"m": family, "c": chain}
        for name in ("x_seconds_count", "x_seconds_sum"):
            assert ours.get_sample_value(name, labels) == theirs.get_sample_value(name, labels)


@pytest.mark.parametrize("amounts", [[], [1], [1, 1, 2.5], [0]])
def test_a_counter_exposes_what_prometheus_client_would(amounts: list[float]) -> None:
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    reference = Counter("y_total", "Calls.", ["family", "outcome"], registry=theirs)
    lean = LoopCounter("y_total", "Calls.", ["family", "outcome"], registry=ours)
    for amount in amounts:
        reference.labels("f", "ok").inc(amount)
        lean.labels("f", "ok").inc(amount)
    lean.labels("g", "error").inc()
    reference.labels("g", "error").inc()
    assert exposition(ours) == exposition(theirs)


def test_refusals_as_prometheus_client_refuses() -> None:
    registry = CollectorRegistry()
    counter = LoopCounter("z_total", "Z.", ["a"], registry=registry)
    with pytest.raises(ValueError, match="non-negative"):
        counter.labels("a").inc(-1)
    with pytest.raises(ValueError, match="labels"):
        counter.labels("a", "b")
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        LoopCounter("z_total", "Z again.", ["a"], registry=registry)
    with pytest.raises(ValueError, match="increasing"):
        LoopHistogram("h", "H.", [], buckets=(1.0, 0.5))


def test_label_values_are_strings_whatever_they_are_given_as() -> None:
    registry = CollectorRegistry()
    counter = LoopCounter("w_total", "W.", ["code"], registry=registry)
    counter.labels(429).inc()
    counter.labels("429").inc()
    assert counter.labels(429) is counter.labels("429")
    assert registry.get_sample_value("w_total", {"code": "429"}) == 2
