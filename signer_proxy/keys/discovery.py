"""Find the signing keys of one Region and account by tags and/or alias prefixes.

Candidates come from ListAliases (alias prefixes: only aliased keys are touched) or ListKeys
(tags alone; ListAliases then only names them), every page of them. Each candidate is then
checked, with at most `concurrency` KMS calls in flight: its tags (ListResourceTags),
DescribeKey (enabled ECC_SECG_P256K1 SIGN_VERIFY), and GetPublicKey unless an earlier load
knows its public key.

Keys the identity may not read (AccessDenied: a least-privilege policy lists every key of
the account but grants reads on its own) are skipped quietly and counted; so are keys whose
tags differ, keys that are not enabled (disabling a key takes it out of service), and keys
deleted while being looked at. A selected key that cannot sign for another reason (wrong key
spec, a KMS error after retries) is a failure: reported, never fatal.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from botocore.exceptions import BotoCoreError, ClientError

from signer_proxy.errors import KeyLoadFailed, KmsUnavailable
from signer_proxy.eth.ecdsa import SignatureError, address_from_public_key, public_key_from_spki
from signer_proxy.keys.aws_kms import (
    STARTUP_ATTEMPTS,
    KmsCalls,
    KmsKeyInfo,
    check_metadata,
    kms_error_code,
    load_failure,
)
from signer_proxy.keys.sources import DiscoverySpec

log = logging.getLogger(__name__)

# Why a listed key was passed over: the fixed label set of the skipped-keys metric.
SKIP_REASONS = ("access_denied", "tags_differ", "not_enabled", "gone")

# AWS's largest pages: fewer round trips for thousands of keys.
LIST_KEYS_PAGE = 1000
LIST_ALIASES_PAGE = 100
LIST_TAGS_PAGE = 50

_ACCESS_DENIED = "AccessDeniedException"
_GONE = "NotFoundException"


@dataclass
class Discovered:
    """What one discovery found: usable keys by label, failures, and skipped counts."""

    keys: list[tuple[str, KmsKeyInfo]] = field(default_factory=list)
    failures: list[tuple[str, KeyLoadFailed]] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    listed: int = 0


class _ThroughCalls:
    """A KMS client whose every call goes through KmsCalls (the process-wide cap, retries)."""

    def __init__(self, client: Any, calls: KmsCalls) -> None:
        self._client = client
        self._calls = calls

    def __getattr__(self, operation: str) -> Callable[..., Awaitable[Any]]:
        method = getattr(self._client, operation)

        async def call(**params: Any) -> Any:
            key = str(params.get("KeyId", "discovery"))
            return await self._calls.run(key, lambda: method(**params), STARTUP_ATTEMPTS)

        return call


class _Skip(Exception):
    def __init__(self, reason: str) -> None:
        self.reason = reason


async def _pages(call: Any, member: str, limit: int, **params: Any) -> list[Any]:
    """Every item of a KMS list operation, following NextMarker until Truncated is false."""
    items: list[Any] = []
    marker: str | None = None
    while True:
        page = await call(Limit=limit, **({"Marker": marker} if marker else {}), **params)
        items.extend(page.get(member) or [])
        marker = page.get("NextMarker")
        if not page.get("Truncated") or not marker:
            return items


async def list_candidates(
    client: Any, spec: DiscoverySpec, region: str, page_size: int | None = None
) -> dict[str, str]:
    """Key id → label (the matching alias, else the key ARN) of every candidate key."""
    action = "kms:ListAliases" if spec.alias_prefixes else "kms:ListKeys"
    try:
        if spec.alias_prefixes:
            aliases = await _pages(client.list_aliases, "Aliases", page_size or LIST_ALIASES_PAGE)
            candidates: dict[str, str] = {}
            for alias in sorted(aliases, key=lambda a: str(a.get("AliasName", ""))):
                name, target = alias.get("AliasName", ""), alias.get("TargetKeyId")
                if target and any(name.startswith(p) for p in spec.alias_prefixes):
                    candidates.setdefault(target, name)
            return candidates
        keys = await _pages(client.list_keys, "Keys", page_size or LIST_KEYS_PAGE)
        names = await _alias_names(client, page_size)
        return {k["KeyId"]: names.get(k["KeyId"], k.get("KeyArn", k["KeyId"])) for k in keys}
    except ClientError as exc:
        code = kms_error_code(exc)
        raise KeyLoadFailed(
            f"key discovery ({spec.describe()}) in Region {region} cannot list keys: {code}"
            + (f": the AWS identity needs {action}" if code == _ACCESS_DENIED else ""),
            "listing",
            transient=code != _ACCESS_DENIED,
        ) from exc
    except (
        KeyError, TypeError, TimeoutError, BotoCoreError, OSError, aiohttp.ClientError,
        KmsUnavailable,
    ) as exc:  # fmt: skip
        raise KeyLoadFailed(
            f"key discovery ({spec.describe()}) in Region {region} cannot list keys "
            f"({type(exc).__name__}): check the network, --aws-endpoint-url and credentials",
            "listing",
            transient=True,
        ) from exc


async def _alias_names(client: Any, page_size: int | None) -> dict[str, str]:
    """Key id → its first alias, to name tag-discovered keys as operators do; {} when the
    identity may not list aliases (the keys are then named by ARN)."""
    try:
        aliases = await _pages(client.list_aliases, "Aliases", page_size or LIST_ALIASES_PAGE)
    except (ClientError, BotoCoreError, OSError, aiohttp.ClientError, KmsUnavailable):
        return {}
    names: dict[str, str] = {}
    for alias in sorted(aliases, key=lambda a: str(a.get("AliasName", ""))):
        if alias.get("TargetKeyId"):
            names.setdefault(alias["TargetKeyId"], str(alias["AliasName"]))
    return names


async def _tags(client: Any, key_id: str, page_size: int | None) -> dict[str, str]:
    tags = await _pages(
        client.list_resource_tags, "Tags", min(page_size or LIST_TAGS_PAGE, LIST_TAGS_PAGE),
        KeyId=key_id,
    )  # fmt: skip
    return {str(t.get("TagKey")): str(t.get("TagValue", "")) for t in tags}


async def _check(
    client: Any,
    key_id: str,
    label: str,
    spec: DiscoverySpec,
    region: str,
    known_public_keys: Mapping[str, bytes],
    page_size: int | None,
) -> KmsKeyInfo:
    try:
        if spec.tags:
            tags = await _tags(client, key_id, page_size)
            if any(tags.get(k) != v for k, v in spec.tags):
                raise _Skip("tags_differ")
        metadata = (await client.describe_key(KeyId=key_id))["KeyMetadata"]
        if metadata.get("KeyState") != "Enabled":
            raise _Skip("not_enabled")
        check_metadata(label, metadata)
        arn = metadata["Arn"]
        public_key = known_public_keys.get(arn)
        if public_key is None:
            public_key = public_key_from_spki((await client.get_public_key(KeyId=arn))["PublicKey"])
    except ClientError as exc:
        code = kms_error_code(exc)
        if code == _ACCESS_DENIED:
            raise _Skip("access_denied") from None
        if code == _GONE:
            raise _Skip("gone") from None
        raise load_failure(exc, label, region) from exc
    except SignatureError as exc:
        raise KeyLoadFailed(f"KMS key {label}: {exc}", "invalid") from exc
    except (
        KeyError, TypeError, TimeoutError, BotoCoreError, OSError, aiohttp.ClientError,
        KmsUnavailable,
    ) as exc:  # fmt: skip
        raise load_failure(exc, label, region) from exc
    return KmsKeyInfo(
        ref=label, arn=arn, public_key=public_key, address=address_from_public_key(public_key)
    )


async def discover(
    client: Any,
    spec: DiscoverySpec,
    region: str,
    *,
    limit: asyncio.Semaphore,
    known_public_keys: Mapping[str, bytes] | None = None,
    page_size: int | None = None,
    calls: KmsCalls | None = None,
) -> Discovered:
    """The keys `spec` selects; KeyLoadFailed("listing") only when no list can be had."""
    client = _ThroughCalls(client, calls or KmsCalls())
    candidates = await list_candidates(client, spec, region, page_size)
    found = Discovered(listed=len(candidates))
    known = known_public_keys or {}

    async def one(key_id: str, label: str) -> None:
        async with limit:
            try:
                found.keys.append(
                    (label, await _check(client, key_id, label, spec, region, known, page_size))
                )
            except _Skip as skip:
                found.skipped[skip.reason] += 1
            except KeyLoadFailed as exc:
                found.failures.append((label, exc))

    await asyncio.gather(*(one(key_id, label) for key_id, label in candidates.items()))
    found.keys.sort(key=lambda item: item[0])
    found.failures.sort(key=lambda item: item[0])
    if found.skipped:
        log.info(
            "key discovery (%s) skipped %s",
            spec.describe(),
            ", ".join(
                f"{n} {reason.replace('_', ' ')}" for reason, n in sorted(found.skipped.items())
            ),
        )
    return found
