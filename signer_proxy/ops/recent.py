"""What the operator page remembers of the last minutes: audit decisions and latency.

Nothing here is on the request path beyond one deque append per audited decision: latency
comes from sampling the Prometheus histograms the seams already fill, every few seconds.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client.metrics_core import Metric

from signer_proxy.access.audit import AuditLog
from signer_proxy.access.budgets import utc_day

# The fields of an audit entry the page shows; anything else (digests, selectors, fees) stays
# in the audit log. No entry holds a secret, but the page shows only what it needs.
SHOWN_FIELDS = (
    "time",
    "client",
    "method",
    "from",
    "key",
    "outcome",
    "result",
    "rule",
    "scope",
    "to",
    "value",
    "chain_id",
    "tx_hash",
    "nonce",
)


class RecentDecisions:
    """An AuditLog that also keeps the last `size` decisions in memory and counts each
    address's signatures per UTC day (this replica's), for the operator page."""

    def __init__(
        self, inner: AuditLog, size: int = 100, clock: Callable[[], float] = time.time
    ) -> None:
        self._inner = inner
        self._entries: deque[dict[str, Any]] = deque(maxlen=size)
        self._signed: Counter[str] = Counter()
        self._day = ""
        self._clock = clock

    def check(self) -> None:
        self._inner.check()

    def write(self, entry: Mapping[str, Any]) -> None:
        self._inner.write(entry)
        shown = {k: entry[k] for k in SHOWN_FIELDS if entry.get(k) is not None}
        error = entry.get("error")
        if isinstance(error, Mapping):
            shown["reason"] = str(error.get("message", ""))[:300]
        self._entries.append(shown)
        if entry.get("result") == "ok" and entry.get("from"):
            day = utc_day(self._clock())
            if day != self._day:
                self._day, self._signed = day, Counter()
            self._signed[str(entry["from"]).lower()] += 1

    def latest(self, count: int) -> list[dict[str, Any]]:
        """The newest `count` decisions, newest first."""
        entries = list(self._entries)[-count:]
        entries.reverse()
        return entries

    def signed_today(self, address: str) -> int:
        """Signatures this replica made with `address` today (UTC)."""
        if self._day != utc_day(self._clock()):
            return 0
        return self._signed[address.lower()]

    def __getattr__(self, name: str) -> Any:  # close() and the like of the wrapped log
        return getattr(self._inner, name)


@dataclass(frozen=True, slots=True)
class HistogramTotals:
    """A histogram summed over its labels: observations, their sum, cumulative bucket counts."""

    count: float
    total: float
    buckets: tuple[tuple[float, float], ...]  # (upper bound, cumulative count)


class Collects(Protocol):
    """A histogram as the registry reads it (prometheus_client's, or ops.loop_metrics')."""

    def collect(self) -> Iterable[Metric]: ...


def totals(histogram: Collects, labels: Callable[[Mapping[str, str]], bool]) -> HistogramTotals:
    """`histogram`'s samples over the label sets `labels` accepts, added up."""
    count = total = 0.0
    buckets: dict[float, float] = {}
    for metric in histogram.collect():
        for sample in metric.samples:
            if not labels(sample.labels):
                continue
            if sample.name.endswith("_count"):
                count += sample.value
            elif sample.name.endswith("_sum"):
                total += sample.value
            elif sample.name.endswith("_bucket"):
                bound = float(sample.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
    return HistogramTotals(count, total, tuple(sorted(buckets.items())))


def window_point(before: HistogramTotals, after: HistogramTotals) -> dict[str, float | None]:
    """Observations between two samples: how many, their mean and 95th percentile in ms (the
    upper bound of the bucket it falls in; None when nothing was observed)."""
    count = after.count - before.count
    if count <= 0:
        return {"count": 0, "avg_ms": None, "p95_ms": None}
    previous = dict(before.buckets)
    p95 = None
    for bound, cumulative in after.buckets:
        if cumulative - previous.get(bound, 0.0) >= 0.95 * count:
            p95 = bound
            break
    return {
        "count": count,
        "avg_ms": round(1000 * (after.total - before.total) / count, 3),
        "p95_ms": None if p95 is None or p95 == float("inf") else round(1000 * p95, 3),
    }


class LatencyHistory:
    """A point per `interval` seconds over the last `points` intervals, for each named
    histogram: sampled from Prometheus histograms, so nothing is added to a request."""

    def __init__(
        self,
        sources: Mapping[str, Callable[[], HistogramTotals]],
        interval: float = 10.0,
        points: int = 30,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._sources = dict(sources)
        self.interval = interval
        self._clock = clock
        self._last = {name: read() for name, read in self._sources.items()}
        self._series: dict[str, deque[dict[str, Any]]] = {
            name: deque(maxlen=points) for name in self._sources
        }

    def sample(self) -> None:
        """Close the current interval: one point per source."""
        now = round(self._clock(), 3)
        for name, read in self._sources.items():
            current = read()
            point: dict[str, Any] = {"t": now, **window_point(self._last[name], current)}
            self._series[name].append(point)
            self._last[name] = current

    def series(self) -> dict[str, list[dict[str, Any]]]:
        """Each source's points, oldest first, the interval still open last."""
        now = round(self._clock(), 3)
        return {
            name: [*points, {"t": now, **window_point(self._last[name], self._sources[name]())}]
            for name, points in self._series.items()
        }


def every_label(_: Mapping[str, str]) -> bool:
    return True


def label_not_in(name: str, excluded: Iterable[str]) -> Callable[[Mapping[str, str]], bool]:
    skip = frozenset(excluded)
    return lambda labels: labels.get(name) not in skip
