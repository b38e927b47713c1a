"""ops/recent.py: decisions kept for the page, latency windows from histogram samples."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Histogram

from signer_proxy.access.audit import NullAuditLog
from signer_proxy.ops.recent import (
    HistogramTotals,
    LatencyHistory,
    RecentDecisions,
    every_label,
    label_not_in,
    totals,
    window_point,
)

DAY = 1_764_806_400.0  # 2025-12-04 00:00 UTC


def entry(**fields: Any) -> dict[str, Any]:
    return {"time": "t", "client": "c", "method": "eth_sendTransaction", **fields}


def test_decisions_keep_the_newest_and_only_the_shown_fields() -> None:
    clock = [DAY]
    recent = RecentDecisions(NullAuditLog(), size=2, clock=lambda: clock[0])
    recent.write(entry(**{"from": "0xA", "outcome": "allowed", "result": "ok", "digest": "0x1"}))
    recent.write(
        entry(
            **{"from": "0xA", "outcome": "denied", "rule": "max_value", "result": "refused"},
            error={"code": -32043, "message": "policy rule max_value refused: over"},
        )
    )
    recent.write(entry(**{"from": "0xb", "outcome": "allowed", "result": "ok"}))
    newest, older = recent.latest(10)
    assert newest["from"] == "0xb"
    assert older["reason"] == "policy rule max_value refused: over"
    assert "digest" not in str(recent.latest(10)) and "error" not in older
    assert recent.signed_today("0xa") == 1  # refusals are not signatures
    clock[0] = DAY + 86_400
    assert recent.signed_today("0xa") == 0  # a new UTC day


def test_decisions_write_through_to_the_audit_log_first() -> None:
    written = []

    class Log(NullAuditLog):
        def write(self, entry: Any) -> None:
            written.append(entry)

    recent = RecentDecisions(Log())
    recent.write(entry(outcome="allowed"))
    assert len(written) == 1 and recent.latest(1)[0]["outcome"] == "allowed"


B = ((0.01, 0.0), (0.1, 0.0), (1.0, 0.0), (float("inf"), 0.0))


def hist(count: float, total: float, cumulative: tuple[float, ...]) -> HistogramTotals:
    return HistogramTotals(count, total, tuple(zip((b for b, _ in B), cumulative, strict=True)))


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        pytest.param(
            hist(0, 0, (0, 0, 0, 0)),
            hist(0, 0, (0, 0, 0, 0)),
            {"count": 0, "avg_ms": None, "p95_ms": None},
            id="nothing-observed",
        ),
        pytest.param(
            hist(0, 0, (0, 0, 0, 0)),
            hist(10, 0.2, (5, 10, 10, 10)),
            {"count": 10, "avg_ms": 20.0, "p95_ms": 100.0},
            id="p95-in-the-second-bucket",
        ),
        pytest.param(
            hist(10, 0.2, (5, 10, 10, 10)),
            hist(30, 2.2, (5, 10, 29, 30)),
            {"count": 20, "avg_ms": 100.0, "p95_ms": 1000.0},
            id="only-the-interval-counts",
        ),
        pytest.param(
            hist(0, 0, (0, 0, 0, 0)),
            hist(1, 5.0, (0, 0, 0, 1)),
            {"count": 1, "avg_ms": 5000.0, "p95_ms": None},
            id="over-the-last-bound",
        ),
    ],
)
def test_window_point(
    before: HistogramTotals, after: HistogramTotals, expected: dict[str, Any]
) -> None:
    assert window_point(before, after) == expected


def test_totals_add_up_label_sets_and_can_leave_some_out() -> None:
    registry = CollectorRegistry()
    h = Histogram("t_seconds", "t", ["method"], buckets=(0.1, 1.0), registry=registry)
    h.labels("a").observe(0.05)
    h.labels("b").observe(0.5)
    both = totals(h, every_label)
    assert both.count == 2 and both.total == pytest.approx(0.55)
    assert dict(both.buckets) == {0.1: 1, 1.0: 2, float("inf"): 2}
    only_a = totals(h, label_not_in("method", ["b"]))
    assert only_a.count == 1


def test_history_keeps_a_point_per_interval_and_shows_the_open_one() -> None:
    registry = CollectorRegistry()
    h = Histogram("s_seconds", "s", buckets=(0.1, 1.0), registry=registry)
    clock = [100.0]
    history = LatencyHistory(
        {"kms": lambda: totals(h, every_label)}, interval=10, points=2, clock=lambda: clock[0]
    )
    h.observe(0.05)
    assert history.series()["kms"] == [{"t": 100.0, "count": 1, "avg_ms": 50.0, "p95_ms": 100.0}]
    for _ in range(3):
        clock[0] += 10
        history.sample()
        h.observe(0.5)
    series = history.series()["kms"]
    assert len(series) == 3  # two kept (points=2) and the open interval
    assert [p["count"] for p in series] == [1, 1, 1]
    assert series[-1]["avg_ms"] == 500.0
