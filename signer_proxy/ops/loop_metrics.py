"""A counter and a histogram for the metrics every request touches, written only from the
event loop's thread, exposed exactly as prometheus_client's Counter and Histogram are.

prometheus_client guards every value with a lock and re-checks the metric on every call: a
pass-through call (one request counted, two durations observed) spent ~4.5 µs of ~31 µs of
Python there (docs/design.md, "Fast"). These children are plain numbers: `inc` adds, `observe`
finds the bucket by bisection and adds. Everything that writes them runs on the loop, so no
lock is needed; a scrape reads them on the loop too. The samples a scrape sees (names,
labels, cumulative buckets, _count, _sum, _created) are the ones prometheus_client's own
metrics would give for the same observations (tests/unit/ops/test_loop_metrics.py).
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from typing import Any, cast

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.utils import floatToGoString

INF = float("inf")
_le = cast(Callable[[float], str], floatToGoString)  # how prometheus_client writes a bound


class CounterChild:
    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1) -> None:
        if amount < 0:
            raise ValueError("Counters can only be incremented by non-negative amounts.")
        self.value += amount


class HistogramChild:
    __slots__ = ("_bounds", "counts", "created", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self.counts = [0] * len(bounds)  # not cumulative: bucket i holds (bound i-1, bound i]
        self.sum = 0.0
        self.created = time.time()

    def observe(self, amount: float) -> None:
        self.sum += amount
        self.counts[bisect_left(self._bounds, amount)] += 1  # the first bound >= amount


class _LoopMetric:
    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry | None,
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._labelnames = tuple(labelnames)
        # By label values; str values are their own key, so a lookup needs no conversion.
        self._children: dict[tuple[object, ...], Any] = {}
        if registry is not None:
            registry.register(self)  # type: ignore[arg-type]  # a collector: collect()

    def _child(self, values: tuple[object, ...], make: Callable[[], Any]) -> Any:
        child = self._children.get(values)
        if child is None:
            key = self._key(values)
            child = self._children.get(key)
            if child is None:
                child = self._children[key] = make()
        return child

    def _key(self, values: tuple[object, ...]) -> tuple[str, ...]:
        if len(values) != len(self._labelnames):
            raise ValueError(f"{self._name} takes the labels {self._labelnames}")
        return tuple(str(value) for value in values)

    def describe(self) -> Iterable[Metric]:
        return [Metric(self._name, self._documentation, self._type)]

    _type = "untyped"


class LoopCounter(_LoopMetric):
    """Counter(name, documentation, labelnames, registry=...) for the event loop's thread."""

    _type = "counter"

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry | None = None,
    ) -> None:
        super().__init__(name.removesuffix("_total"), documentation, labelnames, registry)

    def labels(self, *values: object) -> CounterChild:
        child: CounterChild = self._child(values, CounterChild)
        return child

    def collect(self) -> Iterable[Metric]:
        metric = Metric(self._name, self._documentation, "counter")
        for key, child in list(self._children.items()):
            assert isinstance(child, CounterChild)
            labels = dict(zip(self._labelnames, map(str, key), strict=True))
            metric.add_sample(f"{self._name}_total", labels, child.value)
            metric.add_sample(f"{self._name}_created", labels, child.created)
        return [metric]


class LoopHistogram(_LoopMetric):
    """Histogram(name, documentation, labelnames, buckets=..., registry=...) for the event
    loop's thread."""

    _type = "histogram"

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        buckets: Sequence[float],
        registry: CollectorRegistry | None = None,
    ) -> None:
        bounds = tuple(float(bound) for bound in buckets)
        if list(bounds) != sorted(bounds) or len(set(bounds)) != len(bounds):
            raise ValueError("buckets must be in increasing order, each once")
        self._bounds = bounds if bounds and bounds[-1] == INF else (*bounds, INF)
        super().__init__(name, documentation, labelnames, registry)

    def labels(self, *values: object) -> HistogramChild:
        child: HistogramChild = self._child(values, lambda: HistogramChild(self._bounds))
        return child

    def collect(self) -> Iterable[Metric]:
        metric = Metric(self._name, self._documentation, "histogram")
        names = [_le(bound) for bound in self._bounds]
        for key, child in list(self._children.items()):
            assert isinstance(child, HistogramChild)
            labels = dict(zip(self._labelnames, map(str, key), strict=True))
            cumulative = 0
            for le, count in zip(names, child.counts, strict=True):
                cumulative += count
                metric.add_sample(f"{self._name}_bucket", {**labels, "le": le}, cumulative)
            metric.add_sample(f"{self._name}_count", labels, cumulative)
            metric.add_sample(f"{self._name}_sum", labels, child.sum)
            metric.add_sample(f"{self._name}_created", labels, child.created)
        return [metric]
