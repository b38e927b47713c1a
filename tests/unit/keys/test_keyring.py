"""keys.keyring: loads swap in whole; a signature in flight finishes on the signer it started
with; a reload that cannot read the configuration changes nothing."""

from __future__ import annotations

import asyncio

import pytest

from signer_proxy.errors import ConfigError, UnknownAccount
from signer_proxy.eth.ecdsa import Signature, keccak256
from signer_proxy.keys.keyring import KeyRing, describe_failures
from signer_proxy.keys.loading import KeyLoad, KeyStatus
from signer_proxy.keys.local import LocalKeySigner
from signer_proxy.keys.signer import sign_checked

A, B, C = (LocalKeySigner(keccak256(b"ring %d" % i), name=f"key-{i}") for i in range(3))


class SlowSigner:
    """A Signer whose signature waits until the test releases it."""

    def __init__(self, inner: LocalKeySigner) -> None:
        self._inner = inner
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    @property
    def address(self) -> str:
        return self._inner.address

    @property
    def key_name(self) -> str:
        return self._inner.key_name

    async def sign_digest(self, digest: bytes) -> Signature:
        self.started.set()
        await self.release.wait()
        return await self._inner.sign_digest(digest)


def loaded(*signers: object, failed: tuple[KeyStatus, ...] = ()) -> KeyLoad:
    statuses = tuple(KeyStatus("kms", s.key_name, address=s.address) for s in signers)  # type: ignore[attr-defined]
    return KeyLoad(tuple(signers), statuses + failed)  # type: ignore[arg-type]


class Loads:
    """A loader returning prepared loads in turn, remembering what it was given."""

    def __init__(self, *results: KeyLoad | Exception) -> None:
        self.results = list(results)
        self.calls: list[tuple[KeyLoad | None, bool]] = []

    async def __call__(self, previous: KeyLoad | None, strict: bool) -> KeyLoad:
        self.calls.append((previous, strict))
        result = self.results.pop(0)
        if isinstance(result, Exception):
            raise result
        return result


async def test_start_then_reload_swaps_the_whole_registry() -> None:
    counted: list[tuple[str, str]] = []
    observed: list[KeyLoad] = []
    first, second = loaded(A, B), loaded(B, C)
    ring = KeyRing(observe=observed.append, count_reload=lambda t, o: counted.append((t, o)))
    loads = Loads(first, second)

    assert len(ring.current()) == 0
    await ring.start(loads, strict=True)
    assert ring.current().addresses == (A.address, B.address)
    report = await ring.reload("sighup")

    assert ring.current().addresses == (B.address, C.address)
    assert (report.added, report.removed) == ((C.address,), (A.address,))
    assert loads.calls == [(None, True), (first, False)]  # a reload is never strict
    assert observed == [first, second] and ring.last is second
    assert counted == [("sighup", "ok")]
    assert report.to_json()["keys"] == 2 and report.to_json()["added"] == [C.address]


async def test_a_signature_in_flight_finishes_on_the_old_registry() -> None:
    slow = SlowSigner(A)
    ring = KeyRing()
    await ring.start(Loads(loaded(slow, B), loaded(B)), strict=False)

    signer = ring.current().get(A.address)  # what a method does once per call
    signing = asyncio.create_task(sign_checked(signer, keccak256(b"in flight")))
    await slow.started.wait()
    await ring.reload("admin")  # A is gone from the new registry ...
    with pytest.raises(UnknownAccount):
        ring.current().get(A.address)
    slow.release.set()
    signature = await signing  # ... and the signature that had started still completes
    assert signature.r > 0


async def test_reloads_run_one_at_a_time() -> None:
    ring = KeyRing()
    gate = asyncio.Event()
    active: list[int] = []
    peak: list[int] = []

    async def load(previous: KeyLoad | None, strict: bool) -> KeyLoad:
        if previous is not None:  # a reload: hold it until the test lets go
            active.append(1)
            peak.append(len(active))
            await gate.wait()
            active.pop()
        return loaded(A)

    await ring.start(load, strict=False)
    reloads = [asyncio.create_task(ring.reload("admin")) for _ in range(3)]
    await asyncio.sleep(0.01)
    gate.set()
    await asyncio.gather(*reloads)
    assert max(peak) == 1


async def test_a_reload_that_cannot_read_its_configuration_changes_nothing() -> None:
    counted: list[tuple[str, str]] = []
    ring = KeyRing(count_reload=lambda t, o: counted.append((t, o)))
    await ring.start(Loads(loaded(A), ConfigError("config file broken")), strict=False)

    with pytest.raises(ConfigError, match="config file broken"):
        await ring.reload("admin")
    assert ring.current().addresses == (A.address,)
    assert counted == [("admin", "error")]


async def test_reload_in_background_logs_a_refusal(caplog: pytest.LogCaptureFixture) -> None:
    ring = KeyRing()
    await ring.start(Loads(loaded(A), ConfigError("config file broken")), strict=False)
    await ring.reload_in_background("sighup")
    assert "reload (sighup) refused, nothing changed: config file broken" in caplog.text
    assert ring.current().addresses == (A.address,)


async def test_failures_are_counted_and_described() -> None:
    failed = KeyStatus("kms", "alias/gone", state="failed", reason="not_found", message="nope")
    kept = KeyStatus("discovery", "alias/slow", state="kept", reason="unreachable", message="t")
    counted: list[tuple[str, str]] = []
    ring = KeyRing(count_reload=lambda t, o: counted.append((t, o)))
    await ring.start(Loads(loaded(A), loaded(A, failed=(failed, kept))), strict=False)
    report = await ring.reload("admin")

    assert counted == [("admin", "failures")]
    body = report.to_json()
    assert body["failed"] == [
        {"source": "kms", "key": "alias/gone", "reason": "not_found", "message": "nope"}
    ]
    assert [k["key"] for k in body["kept"]] == ["alias/slow"]
    assert describe_failures(ring.last) == [
        "alias/gone: nope",
        "alias/slow: kept from the previous load after: t",
    ]


def test_describe_failures_shortens_a_long_list() -> None:
    failures = tuple(
        KeyStatus("discovery", f"alias/k{i}", state="failed", message="x") for i in range(5)
    )
    lines = describe_failures(KeyLoad(statuses=failures), limit=2)
    assert lines == ["alias/k0: x", "alias/k1: x", "and 3 more (signer-proxy keys list shows all)"]
    assert describe_failures(None) == []


def test_use_serves_fixed_signers() -> None:
    ring = KeyRing(wrap=lambda s: s)
    ring.use([A, C])
    assert ring.current().addresses == (A.address, C.address)
