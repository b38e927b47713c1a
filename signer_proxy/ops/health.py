"""/health (the process answers) and /ready (it can sign and forward), with a JSON body that
says what is not ready.

Readiness is a list of named checks kept in the app (`READINESS_CHECKS`); each feature adds
its own (a Redis nonce store appends "redis"). A check returns a short detail when ready and
raises NotReady (or any SignerProxyError) with the reason when not. Checks run concurrently,
each bounded by CHECK_TIMEOUT, so a probe answers in time even when the node hangs.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from signer_proxy.chain.fill import ChainFacts
from signer_proxy.errors import SignerProxyError
from signer_proxy.eth.hexdata import parse_quantity
from signer_proxy.keys import KeyRegistry
from signer_proxy.upstream.base import Upstream

# Seconds one check may take; Kubernetes probes default to a 1 s timeout, the chart sets 5 s.
CHECK_TIMEOUT = 2.0


class NotReady(Exception):
    """A readiness check failed; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class ReadinessCheck:
    name: str
    check: Callable[[], Awaitable[str]]


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    ok: bool
    detail: str


READINESS_CHECKS = web.AppKey("readiness_checks", list[ReadinessCheck])


async def run_check(check: ReadinessCheck, budget: float = CHECK_TIMEOUT) -> CheckResult:
    """Run one check within `budget` seconds; never raises (a failure is a not-ok result)."""
    try:
        async with asyncio.timeout(budget):
            return CheckResult(check.name, True, await check.check())
    except NotReady as exc:
        return CheckResult(check.name, False, str(exc))
    except SignerProxyError as exc:
        return CheckResult(check.name, False, exc.message)
    except TimeoutError:
        return CheckResult(check.name, False, f"no answer within {budget:g} s")
    except Exception as exc:  # a readiness probe must answer, whatever a check does
        return CheckResult(check.name, False, f"check failed: {type(exc).__name__}")


async def run_checks(
    checks: Sequence[ReadinessCheck], budget: float = CHECK_TIMEOUT
) -> list[CheckResult]:
    """Every check, concurrently, results in the checks' order."""
    return list(await asyncio.gather(*(run_check(c, budget) for c in checks)))


def readiness_body(results: Sequence[CheckResult]) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body): 200 when every check is ok, else 503 listing what is not."""
    not_ready = [f"{r.name}: {r.detail}" for r in results if not r.ok]
    body: dict[str, Any] = {
        "status": "not ready" if not_ready else "ready",
        "checks": {r.name: {"ok": r.ok, "detail": r.detail} for r in results},
    }
    if not_ready:
        body["not_ready"] = not_ready
    return (503 if not_ready else 200), body


# --- The standard checks --------------------------------------------------------------------


def keys_check(
    registry: Callable[[], KeyRegistry | None],
    problems: Callable[[], Sequence[str]] = lambda: (),
) -> ReadinessCheck:
    """Ready with at least one key; keys that did not load are named in the detail, but do
    not make the proxy unready while others sign."""

    async def check() -> str:
        current = registry()
        count = len(current) if current is not None else 0
        issues = "; ".join(problems())
        if count == 0:
            raise NotReady(
                "no keys loaded: "
                + (
                    issues
                    or "check the key settings (--kms-key, --key, --keystore, the discovery "
                    "filters) and the log"
                )
            )
        detail = f"{count} key{'s' if count != 1 else ''} loaded"
        return f"{detail}; not loaded: {issues}" if issues else detail

    return ReadinessCheck("keys", check)


def upstream_check(upstream: Upstream, facts: ChainFacts, name: str = "upstream") -> ReadinessCheck:
    """The node answers eth_chainId, and still with the chain id the proxy signs for."""

    async def check() -> str:
        started = time.perf_counter()
        live = parse_quantity(await upstream.call("eth_chainId", []), "the node's eth_chainId")
        known = facts.known_chain_id
        if known is not None and live != known:
            raise NotReady(
                f"the node now reports chain id {live} but the proxy signs for chain id {known}: "
                "--upstream points at another chain; fix it and restart"
            )
        return f"answered eth_chainId in {(time.perf_counter() - started) * 1000:.0f} ms"

    return ReadinessCheck(name, check)


def chain_id_check(facts: ChainFacts, name: str = "chain_id") -> ReadinessCheck:
    async def check() -> str:
        return f"chain id {await facts.chain_id()}"

    return ReadinessCheck(name, check)


def shutdown_check(draining: Callable[[], bool]) -> ReadinessCheck:
    async def check() -> str:
        if draining():
            raise NotReady("shutting down: finishing in-flight requests")
        return "serving"

    return ReadinessCheck("shutdown", check)


# --- Handlers ---------------------------------------------------------------------------------


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=json.dumps(payload).encode(), status=status, content_type="application/json"
    )


async def handle_health(request: web.Request) -> web.Response:
    """GET /health: 200 while the process serves requests (liveness)."""
    return _json({"status": "alive"})


async def handle_ready(request: web.Request) -> web.Response:
    """GET /ready: 200 when every readiness check passes, else 503 naming what is not ready."""
    checks: list[ReadinessCheck] = request.app[READINESS_CHECKS]
    status, body = readiness_body(await run_checks(checks))
    return _json(body, status)
