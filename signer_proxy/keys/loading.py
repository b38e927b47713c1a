"""Load every key source of a configuration into signers, with a report of each key.

One load runs every source concurrently (explicit KMS keys, discovery, keystores, and the
`--key` sources of the other backends, keys/backends.py) under one bound on KMS calls in
flight. One address held by two different keys is refused, naming both. It never raises for
a key that fails, unless `strict` (startup without --allow-key-failures): then every explicit
key, keystore, `--key` source and discovery listing must load, and no address be held twice.
A later load (reload) is given the previous one, and from it:

- reuses public keys by key ARN (an asymmetric KMS key's material never changes) and
  keystores whose file and password are unchanged (scrypt costs ~1 s per file);
- keeps a key's previous signer when its failure is transient (throttling, network), and
  every previously discovered key when discovery cannot list at all: a KMS hiccup during
  a reload must not take working keys out of service.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from signer_proxy.errors import ConfigError, KeyLoadFailed
from signer_proxy.keys.aws_clients import KmsClients
from signer_proxy.keys.aws_kms import KmsSigner, load_key
from signer_proxy.keys.backends import BACKENDS, BackendSource
from signer_proxy.keys.discovery import discover
from signer_proxy.keys.keystore import decrypt_keystore, fingerprint, keystore_files, read_password
from signer_proxy.keys.signer import Signer
from signer_proxy.keys.sources import KeySources, KeystoreSpec, KmsKeySpec

log = logging.getLogger(__name__)

SOURCES = ("kms", "discovery", "keystore", *(backend.source for backend in BACKENDS))
# Keystore decryption is scrypt: ~1 s of CPU and 256 MiB per file at geth's default cost.
KEYSTORE_CONCURRENCY = 2


@dataclass(frozen=True, slots=True)
class KeyStatus:
    """One key of one source after a load (a row of `signer-proxy keys list`)."""

    source: str  # one of SOURCES
    ref: str  # as configured or discovered: alias, id, ARN (with options), keystore path
    key: str = ""  # the key ARN or keystore file, once known
    region: str = ""
    address: str = ""
    state: str = "loaded"  # loaded | kept (previous signer, after a transient failure) | failed
    reason: str = ""  # errors.KEY_LOAD_REASONS, when not loaded
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.state != "failed"


@dataclass(frozen=True)
class KeyLoad:
    """The signers one load produced (one per address, in source order) and its report."""

    signers: tuple[Signer, ...] = ()
    statuses: tuple[KeyStatus, ...] = ()
    skipped: Mapping[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    # What the next load reuses: signers by (source, ref), public keys by ARN, keystores.
    by_origin: Mapping[tuple[str, str], Signer] = field(default_factory=dict, repr=False)
    public_keys: Mapping[str, bytes] = field(default_factory=dict, repr=False)
    keystores: Mapping[str, tuple[bytes, Signer]] = field(default_factory=dict, repr=False)
    # The refs each `--key` source produced (by its label): kept together when it cannot list.
    groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict, repr=False)

    def failures(self) -> list[KeyStatus]:
        return [s for s in self.statuses if not s.ok]

    def failures_by_source(self) -> Counter[str]:
        return Counter(s.source for s in self.failures())


@dataclass
class _Entry:
    status: KeyStatus
    signer: Signer | None = None
    fingerprint: bytes = b""
    required: bool = True  # a failure refuses a strict load
    group: str = ""  # the `--key` source it came from


def _failed(source: str, ref: str, exc: KeyLoadFailed, **fields: str) -> _Entry:
    return _Entry(
        KeyStatus(source, ref, state="failed", reason=exc.reason, message=str(exc), **fields)
    )


def _kept_or_failed(
    source: str, ref: str, exc: KeyLoadFailed, previous: KeyLoad | None, **fields: str
) -> _Entry:
    """A transient failure keeps the key's previous signer, if it had one."""
    signer = previous.by_origin.get((source, ref)) if previous and exc.transient else None
    if signer is None:
        return _failed(source, ref, exc, **fields)
    status = KeyStatus(
        source, ref, key=signer.key_name, address=signer.address, state="kept",
        reason=exc.reason, message=str(exc), **fields,
    )  # fmt: skip
    return _Entry(status, signer)


def _kms_entry(source: str, signer: KmsSigner, region: str) -> _Entry:
    info = signer.info
    return _Entry(KeyStatus(source, info.ref, info.arn, region, info.address), signer)


async def _explicit(
    spec: KmsKeySpec,
    clients: KmsClients,
    limit: asyncio.Semaphore,
    previous: KeyLoad | None,
) -> _Entry:
    location = clients.location(spec.region, spec.endpoint_url, spec.role_arn)
    try:
        client = await clients.get(location)
        async with limit:
            info = await load_key(
                client,
                spec.ref,
                location.region,
                previous.public_keys if previous else None,
                clients.calls,
            )
        signing = await clients.signing_client(location)
    except KeyLoadFailed as exc:
        return _kept_or_failed("kms", spec.label, exc, previous, region=location.region)
    except ConfigError as exc:  # e.g. no credentials to assume a role with
        failure = KeyLoadFailed(f"KMS key {spec.label}: {exc}", "access_denied")
        return _failed("kms", spec.label, failure, region=location.region)
    signer = KmsSigner(signing, replace(info, ref=spec.label), clients.calls)
    return _kms_entry("kms", signer, location.region)


async def _discovered(
    sources: KeySources,
    clients: KmsClients,
    limit: asyncio.Semaphore,
    previous: KeyLoad | None,
    page_size: int | None,
) -> tuple[list[_Entry], Counter[str], KeyLoadFailed | None]:
    location = clients.location()
    try:
        client = await clients.get(location)
        found = await discover(
            client,
            sources.discovery,
            location.region,
            limit=limit,
            known_public_keys=previous.public_keys if previous else None,
            page_size=page_size,
            calls=clients.calls,
        )
    except KeyLoadFailed as exc:
        entries = [_failed("discovery", sources.discovery.describe(), exc, region=location.region)]
        if previous is not None and exc.transient:  # keep what was discovered before
            for source, ref in previous.by_origin:
                if source == "discovery":
                    entries.append(
                        _kept_or_failed(source, ref, exc, previous, region=location.region)
                    )
        return entries, Counter(), exc
    signing = await clients.signing_client(location)
    entries = [
        _kms_entry("discovery", KmsSigner(signing, info, clients.calls), location.region)
        for _, info in found.keys
    ]
    entries += [
        _kept_or_failed("discovery", label, exc, previous, region=location.region)
        for label, exc in found.failures
    ]
    return entries, found.skipped, None


async def _keystore(
    spec: KeystoreSpec, limit: asyncio.Semaphore, previous: KeyLoad | None
) -> list[_Entry]:
    try:
        files = keystore_files(spec.path)
        password = read_password(spec.password_file)
    except KeyLoadFailed as exc:
        return [_failed("keystore", spec.path, exc)]
    if not files:
        log.warning("keystore directory %s holds no files", spec.path)

    async def one(path: str) -> _Entry:
        try:
            data = await asyncio.to_thread(_read, path)
            mark = fingerprint(data, password)
            cached = previous.keystores.get(path) if previous else None
            if cached is not None and cached[0] == mark:
                signer: Signer = cached[1]
            else:
                async with limit:
                    signer = await asyncio.to_thread(decrypt_keystore, data, password, path)
        except KeyLoadFailed as exc:
            return _failed("keystore", path, exc, key=path)
        return _Entry(KeyStatus("keystore", path, path, "", signer.address), signer, mark)

    return list(await asyncio.gather(*(one(str(p)) for p in files)))


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as exc:
        raise KeyLoadFailed(
            f"keystore {path} cannot be read ({exc.strerror})", "keystore"
        ) from None


async def _other(
    name: str, source: BackendSource, previous: KeyLoad | None, clients: KmsClients
) -> list[_Entry]:
    """The keys of one `--key` source (a PKCS#11 token, a vault …)."""
    mine = {ref: s for (src, ref), s in (previous.by_origin if previous else {}).items()
            if src == name}  # fmt: skip
    try:
        found = await source.load(mine, clients)
    except KeyLoadFailed as exc:
        entries = [_failed(name, source.label, exc)]
        if previous is not None and exc.transient:  # keep what it gave before
            for ref in previous.groups.get(source.label, ()):
                kept = _kept_or_failed(name, ref, exc, previous)
                kept.required, kept.group = False, source.label
                entries.append(kept)
        return entries
    entries = []
    for key in found:
        if key.signer is not None:
            status = KeyStatus(name, key.ref, key.key, key.location, key.signer.address)
            entry = _Entry(status, key.signer)
        else:
            failure = key.failure or KeyLoadFailed(f"{key.ref}: not loaded")
            entry = _kept_or_failed(name, key.ref, failure, previous, region=key.location)
        entry.required, entry.group = key.required, source.label
        entries.append(entry)
    return entries


async def load_keys(
    sources: KeySources,
    clients: KmsClients,
    previous: KeyLoad | None = None,
    *,
    concurrency: int = 32,
    strict: bool = False,
    page_size: int | None = None,
) -> KeyLoad:
    """Every key of `sources`; with `strict`, ConfigError listing what failed to load."""
    started = time.perf_counter()
    limit = asyncio.Semaphore(concurrency)
    keystore_limit = asyncio.Semaphore(KEYSTORE_CONCURRENCY)
    explicit = [_explicit(spec, clients, limit, previous) for spec in sources.kms]
    discovery = (
        _discovered(sources, clients, limit, previous, page_size)
        if sources.discovery.enabled
        else None
    )
    keystores = [_keystore(spec, keystore_limit, previous) for spec in sources.keystores]
    others = [_other(name, source, previous, clients) for name, source in sources.others]
    explicit_entries, discovered, keystore_lists, other_lists = await asyncio.gather(
        asyncio.gather(*explicit),
        discovery if discovery is not None else _nothing(),
        asyncio.gather(*keystores),
        asyncio.gather(*others),
    )
    discovered_entries, skipped, listing_failure = discovered
    keystore_entries = [entry for group in keystore_lists for entry in group]
    other_entries = [entry for group in other_lists for entry in group]

    loaded = _assemble(
        [*explicit_entries, *discovered_entries, *keystore_entries, *other_entries],
        skipped,
        time.perf_counter() - started,
    )
    if strict:
        refused = [
            e.status
            for e in [*explicit_entries, *keystore_entries, *other_entries]
            if e.required and not e.status.ok
        ]
        messages = [s.message for s in refused]
        if listing_failure is not None:
            messages.append(str(listing_failure))
        messages += [s.message for s in loaded.statuses if s.reason == "duplicate"]
        if messages:
            raise ConfigError(
                messages[0]
                if len(messages) == 1
                else f"{len(messages)} keys cannot be used:\n  " + "\n  ".join(messages)
            )
    return loaded


async def _nothing() -> tuple[list[_Entry], Counter[str], None]:
    return [], Counter(), None


def _assemble(entries: Sequence[_Entry], skipped: Counter[str], seconds: float) -> KeyLoad:
    signers: dict[str, Signer] = {}
    arns: dict[str, str] = {}
    first: dict[str, KeyStatus] = {}
    groups: dict[str, list[str]] = {}
    statuses: list[KeyStatus] = []
    by_origin: dict[tuple[str, str], Signer] = {}
    public_keys: dict[str, bytes] = {}
    keystores: dict[str, tuple[bytes, Signer]] = {}
    for entry in entries:
        status, signer = entry.status, entry.signer
        if signer is None:
            statuses.append(status)
            continue
        address = signer.address.lower()
        if address in signers:
            if arns.get(address) != signer.key_name:  # the same KMS key twice is no news
                held = first[address]
                duplicate = replace(
                    status,
                    state="failed",
                    reason="duplicate",
                    message=f"{signer.address} is held by both {held.key or held.ref} "
                    f"({held.source}) and {signer.key_name} ({status.source}): only the first "
                    "signs; remove one of them from the configuration",
                )
                log.warning("%s", duplicate.message)
                statuses.append(duplicate)
            continue
        signers[address] = signer
        arns[address] = signer.key_name
        first[address] = status
        if entry.group:
            groups.setdefault(entry.group, []).append(status.ref)
        statuses.append(status)
        by_origin[(status.source, status.ref)] = signer
        if isinstance(signer, KmsSigner):
            public_keys[signer.info.arn] = signer.info.public_key
        if status.source == "keystore" and entry.fingerprint:
            keystores[status.ref] = (entry.fingerprint, signer)
    return KeyLoad(
        tuple(signers.values()),
        tuple(statuses),
        dict(skipped),
        seconds,
        by_origin,
        public_keys,
        keystores,
        {label: tuple(refs) for label, refs in groups.items()},
    )
