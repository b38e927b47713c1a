"""health: readiness checks, their failure modes and the /ready body."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from signer_proxy.chain.fill import ChainFacts
from signer_proxy.errors import UpstreamUnavailable
from signer_proxy.keys import KeyRegistry
from signer_proxy.keys.local import LocalKeySigner
from signer_proxy.ops.health import (
    CheckResult,
    NotReady,
    ReadinessCheck,
    chain_id_check,
    keys_check,
    readiness_body,
    run_check,
    run_checks,
    shutdown_check,
    upstream_check,
)


def check(name: str, outcome: Any) -> ReadinessCheck:
    async def run() -> str:
        if isinstance(outcome, BaseException):
            raise outcome
        if outcome == "hang":
            await asyncio.sleep(10)
        return str(outcome)

    return ReadinessCheck(name, run)


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        pytest.param("fine", CheckResult("c", True, "fine"), id="ok"),
        pytest.param(NotReady("no keys"), CheckResult("c", False, "no keys"), id="not-ready"),
        pytest.param(
            UpstreamUnavailable("the node at http://127.0.0.1:1 could not be reached"),
            CheckResult("c", False, "the node at http://127.0.0.1:1 could not be reached"),
            id="proxy-error-message",
        ),
        pytest.param("hang", CheckResult("c", False, "no answer within 0.05 s"), id="timeout"),
        pytest.param(
            KeyError("/secret/path"),
            CheckResult("c", False, "check failed: KeyError"),
            id="unexpected-error-no-details",
        ),
    ],
)
async def test_run_check(outcome: Any, expected: CheckResult) -> None:
    assert await run_check(check("c", outcome), budget=0.05) == expected


async def test_run_checks_runs_concurrently_and_keeps_order() -> None:
    checks = [check("a", "hang"), check("b", "fine"), check("c", "hang")]
    started = asyncio.get_running_loop().time()
    results = await run_checks(checks, budget=0.2)
    elapsed = asyncio.get_running_loop().time() - started

    assert [r.name for r in results] == ["a", "b", "c"]
    assert elapsed < 0.35  # two hanging checks took one budget, not two


@pytest.mark.parametrize(
    ("results", "status", "not_ready"),
    [
        pytest.param([CheckResult("keys", True, "1 key loaded")], 200, None, id="ready"),
        pytest.param(
            [CheckResult("keys", True, "1 key"), CheckResult("upstream", False, "down")],
            503,
            ["upstream: down"],
            id="one-not-ready",
        ),
        pytest.param([], 200, None, id="no-checks"),
    ],
)
def test_readiness_body(
    results: list[CheckResult], status: int, not_ready: list[str] | None
) -> None:
    got_status, body = readiness_body(results)
    assert got_status == status
    assert body["status"] == ("ready" if status == 200 else "not ready")
    assert body.get("not_ready") == not_ready
    assert set(body["checks"]) == {r.name for r in results}


async def test_keys_check() -> None:
    registry = KeyRegistry([LocalKeySigner(b"\x01" * 32), LocalKeySigner(b"\x02" * 32)])
    assert await run_check(keys_check(lambda: registry)) == CheckResult(
        "keys", True, "2 keys loaded"
    )
    empty = await run_check(keys_check(lambda: None))
    assert not empty.ok
    assert "--kms-key" in empty.detail


class ChainNode:
    def __init__(self, chain_id: int) -> None:
        self.chain_id = chain_id

    async def call(self, method: str, params: Any) -> Any:
        assert method == "eth_chainId"
        return hex(self.chain_id)

    async def forward(self, body: bytes) -> bytes:
        raise AssertionError("not used")


async def test_upstream_and_chain_id_checks_notice_a_node_that_changed_chains() -> None:
    node = ChainNode(31337)
    facts = ChainFacts(node)
    assert (await run_check(chain_id_check(facts))).detail == "chain id 31337"
    assert (await run_check(upstream_check(node, facts))).ok

    node.chain_id = 1
    moved = await run_check(upstream_check(node, facts))

    assert not moved.ok
    assert "chain id 1" in moved.detail and "31337" in moved.detail


async def test_shutdown_check() -> None:
    draining = False
    probe = shutdown_check(lambda: draining)
    assert (await run_check(probe)).ok
    draining = True
    assert (await run_check(probe)) == CheckResult(
        "shutdown", False, "shutting down: finishing in-flight requests"
    )


async def test_keys_check_names_keys_that_did_not_load_without_being_unready() -> None:
    registry = KeyRegistry([LocalKeySigner(b"\x01" * 32)])
    problems = ["alias/gone: not found"]
    result = await run_check(keys_check(lambda: registry, lambda: problems))
    assert result == CheckResult("keys", True, "1 key loaded; not loaded: alias/gone: not found")
    empty = await run_check(keys_check(lambda: KeyRegistry([]), lambda: problems))
    assert not empty.ok
    assert empty.detail == "no keys loaded: alias/gone: not found"
