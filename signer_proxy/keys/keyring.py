"""The keys in service now, and their replacement on reload (SIGHUP, the admin route).

Methods reach the registry through `KeyRing.current()` once per call and keep the signer they
got: a reload builds a whole new registry off to the side and swaps it in with one
assignment, so signatures in flight finish with the signer (and KMS client) they started
with, and no call ever sees a half-loaded set of keys. Reloads run one at a time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from signer_proxy.errors import ConfigError
from signer_proxy.keys.loading import KeyLoad, KeyStatus
from signer_proxy.keys.registry import KeyRegistry
from signer_proxy.keys.signer import Signer

log = logging.getLogger(__name__)

# previous load (None at startup), strict → the new load
Loader = Callable[[KeyLoad | None, bool], Awaitable[KeyLoad]]
# Read what else a reload re-reads (the policy and API keys files); ConfigError refuses the
# reload. What it returns applies it, with the new keys, and says what it applied.
Prepare = Callable[[], Callable[[], dict[str, Any]]]
RELOAD_TRIGGERS = ("sighup", "admin")
_SOURCE_NAMES = {"kms": "KMS", "discovery": "discovered KMS", "keystore": "keystore"}
RELOAD_OUTCOMES = ("ok", "failures", "error")  # failures: some keys did not load


@dataclass(frozen=True)
class ReloadReport:
    """What one reload changed and what did not load."""

    trigger: str
    load: KeyLoad
    added: tuple[str, ...]
    removed: tuple[str, ...]
    access: dict[str, Any] | None = None  # what the reload applied besides keys (Prepare)

    def to_json(self) -> dict[str, Any]:
        def row(status: KeyStatus) -> dict[str, str]:
            return {
                "source": status.source,
                "key": status.ref,
                "reason": status.reason,
                "message": status.message,
            }

        return {
            "keys": len(self.load.signers),
            "added": list(self.added),
            "removed": list(self.removed),
            "failed": [row(s) for s in self.load.statuses if s.state == "failed"],
            "kept": [row(s) for s in self.load.statuses if s.state == "kept"],
            "skipped": dict(self.load.skipped),
            "seconds": round(self.load.seconds, 3),
            **({"access": self.access} if self.access is not None else {}),
        }


def describe_failures(load: KeyLoad | None, limit: int = 3) -> list[str]:
    """Short lines naming what did not load (for /ready), the first `limit` of them."""
    if load is None:
        return []
    failed = [s for s in load.statuses if not s.ok]
    kept = [s for s in load.statuses if s.state == "kept"]
    lines = [f"{s.ref}: {s.message}" for s in failed[:limit]]
    if len(failed) > limit:
        lines.append(f"and {len(failed) - limit} more (signer-proxy keys list shows all)")
    # A key whose service was away at the last load still signs with its previous signer
    # (when the service is back): named, so /ready shows which key's backend was away.
    lines += [f"{s.ref}: kept from the previous load after: {s.message}" for s in kept[:limit]]
    if len(kept) > limit:
        lines.append(f"and {len(kept) - limit} more kept from the previous load")
    return lines


class KeyRing:
    """Holds the current KeyRegistry; `start` loads it, `reload` replaces it atomically."""

    def __init__(
        self,
        wrap: Callable[[Signer], Signer] = lambda signer: signer,
        observe: Callable[[KeyLoad], None] | None = None,
        count_reload: Callable[[str, str], None] | None = None,
        guard: Callable[[Signer], Signer] | None = None,
        prepare: Prepare | None = None,
    ) -> None:
        self._registry = self._unguarded = KeyRegistry(())
        self._prepare = prepare
        self._wrap = wrap
        self._guard = guard
        self._observe = observe
        self._count_reload = count_reload
        self._load: Loader | None = None
        self._last: KeyLoad | None = None
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()

    def current(self) -> KeyRegistry:
        """The registry in service now (a method keeps what it got for the whole call)."""
        return self._registry

    def unguarded(self) -> KeyRegistry:
        """The same keys without `guard` (for the proxy's own signatures, e.g. gap repair)."""
        return self._unguarded

    @property
    def last(self) -> KeyLoad | None:
        return self._last

    def use(self, signers: Sequence[Signer]) -> None:
        """Serve exactly these signers, with nothing to reload (tests, embedding)."""
        self._swap(KeyLoad(tuple(signers)))

    async def start(self, load: Loader, *, strict: bool) -> KeyLoad:
        """The first load; with `strict`, a key that fails stops startup (ConfigError)."""
        self._load = load
        async with self._lock:
            loaded = await load(None, strict)
            for status in loaded.statuses:
                if status.ok and status.state != "duplicate":
                    log.info(
                        "loaded %s key %s (%s) as %s",
                        _SOURCE_NAMES.get(status.source, status.source),
                        status.ref,
                        status.key,
                        status.address,
                    )
            self._swap(loaded)
        return loaded

    async def reload(self, trigger: str) -> ReloadReport:
        """Load every source again and swap the result in, with what `prepare` re-reads;
        ConfigError (nothing changed) when the configuration itself cannot be read. Key
        failures are reported, never raised."""
        async with self._lock:
            try:
                apply = self._prepare() if self._prepare is not None else None
                if self._load is None:
                    access = apply() if apply is not None else None
                    return ReloadReport(trigger, self._last or KeyLoad(), (), (), access)
                before = set(self._registry.addresses)
                loaded = await self._load(self._last, False)
            except ConfigError:
                self._counted(trigger, "error")
                raise
            access = apply() if apply is not None else None  # the policy follows in _swap
            self._swap(loaded)
            after = [s.address for s in loaded.signers]
        self._counted(
            trigger,
            "failures" if any(not s.ok or s.state == "kept" for s in loaded.statuses) else "ok",
        )
        report = ReloadReport(
            trigger,
            loaded,
            tuple(a for a in after if a not in before),
            tuple(sorted(before - set(after))),
            access,
        )
        for address in report.added:
            log.info("reload (%s): added %s", trigger, address)
        for address in report.removed:
            log.info("reload (%s): removed %s", trigger, address)
        log.info(
            "reload (%s): %d keys (%d added, %d removed), %d failed, in %.2f s",
            trigger,
            len(loaded.signers),
            len(report.added),
            len(report.removed),
            len(loaded.failures()),
            loaded.seconds,
        )
        return report

    def reload_in_background(self, trigger: str) -> asyncio.Task[Any]:
        """Start a reload from a signal handler; its outcome goes to the log."""

        async def run() -> None:
            try:
                await self.reload(trigger)
            except ConfigError as exc:
                log.error("reload (%s) refused, nothing changed: %s", trigger, exc)
            except Exception:
                log.exception("reload (%s) failed, nothing changed", trigger)

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _counted(self, trigger: str, outcome: str) -> None:
        if self._count_reload is not None:
            self._count_reload(trigger, outcome)

    def _swap(self, loaded: KeyLoad) -> None:
        for status in loaded.statuses:
            if status.state == "failed":
                log.warning("%s key %s did not load: %s", status.source, status.ref, status.message)
            elif status.state == "kept":
                log.warning(
                    "%s key %s kept from the previous load: %s",
                    status.source,
                    status.ref,
                    status.message,
                )
        wrapped = [self._wrap(s) for s in loaded.signers]
        self._unguarded = KeyRegistry(wrapped)
        guard = self._guard
        self._registry = (
            self._unguarded if guard is None else KeyRegistry(guard(s) for s in wrapped)
        )
        self._last = loaded
        if self._observe is not None:
            self._observe(loaded)
