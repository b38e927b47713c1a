"""Key discovery against the KMS emulator (which pages lists as AWS does): tags, alias prefixes,
both; every page followed; keys it may not read skipped quietly and counted; bounded
concurrency; and through the proxy, a discovered key signing on anvil."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web

from signer_proxy.config import Settings
from signer_proxy.eth.ecdsa import address_from_public_key, public_key_from_spki
from signer_proxy.keys.aws_clients import KmsClients
from signer_proxy.keys.discovery import Discovered, discover
from signer_proxy.keys.sources import DiscoverySpec
from tests.conftest import REGION, Anvil, ProxyFactory, proxy_settings
from tests.integration.kms_front import KmsFront, kms_error, start_kms_front

pytestmark = pytest.mark.integration

SINK = "0x000000000000000000000000000000000000dEaD"

TaggedKey = Callable[..., tuple[str, str]]


@pytest.fixture
def run() -> str:
    """A value of this test's own: tags and alias prefixes do not see other tests' keys."""
    return uuid.uuid4().hex[:12]


@pytest.fixture
def tagged_key(kms_client: Any) -> TaggedKey:
    """Create a key with `tags` (and `alias`): (key ARN, address or "")."""

    def make(
        tags: dict[str, str] | None = None,
        alias: str | None = None,
        key_spec: str = "ECC_SECG_P256K1",
        disabled: bool = False,
    ) -> tuple[str, str]:
        metadata = kms_client.create_key(
            KeySpec=key_spec,
            KeyUsage="SIGN_VERIFY",
            Tags=[{"TagKey": k, "TagValue": v} for k, v in (tags or {}).items()],
        )["KeyMetadata"]
        if alias:
            kms_client.create_alias(AliasName=alias, TargetKeyId=metadata["KeyId"])
        if disabled:
            kms_client.disable_key(KeyId=metadata["KeyId"])
        address = ""
        if key_spec == "ECC_SECG_P256K1":
            der = kms_client.get_public_key(KeyId=metadata["Arn"])["PublicKey"]
            address = address_from_public_key(public_key_from_spki(der))
        return metadata["Arn"], address

    return make


async def discovered(
    url: str, spec: DiscoverySpec, concurrency: int = 32, page_size: int | None = None
) -> Discovered:
    settings = Settings(aws_region=REGION, aws_endpoint_url=url)
    async with KmsClients(settings) as clients:
        client = await clients.get(clients.location())
        return await discover(
            client, spec, REGION, limit=asyncio.Semaphore(concurrency), page_size=page_size
        )


async def test_tags_select_enabled_signing_keys_across_every_page(
    aiohttp_server: Any, kms: Any, tagged_key: TaggedKey, run: str
) -> None:
    wanted = [tagged_key({"app": "signer", "run": run}) for _ in range(7)]
    tagged_key({"app": "other", "run": run})  # one tag differs
    tagged_key({"run": run})  # a tag missing
    tagged_key({"app": "signer", "run": run}, disabled=True)  # retired: skipped, not a failure
    p256, _ = tagged_key({"app": "signer", "run": run}, key_spec="ECC_NIST_P256")
    front = await start_kms_front(aiohttp_server, kms.url)

    found = await discovered(
        front.url, DiscoverySpec((("app", "signer"), ("run", run))), page_size=3
    )

    assert sorted(info.address for _, info in found.keys) == sorted(a for _, a in wanted)
    assert {label for label, _ in found.keys} == {arn for arn, _ in wanted}  # no alias: the ARN
    assert len(front.operations("ListAliases")) > 1  # to name keys that have an alias
    assert [label for label, _ in found.failures] == [p256]  # selected, but cannot sign
    assert "KeySpec is ECC_NIST_P256" in str(found.failures[0][1])
    assert found.skipped["not_enabled"] == 1
    assert found.skipped["tags_differ"] >= 2  # the two above, and every other test's keys
    pages = front.operations("ListKeys")
    assert len(pages) > 3 and all(page["Limit"] == 3 for page in pages)
    assert "Marker" not in pages[0] and all("Marker" in page for page in pages[1:])
    assert found.listed >= 11


async def test_an_alias_prefix_reads_only_the_keys_behind_its_aliases(
    aiohttp_server: Any, kms: Any, tagged_key: TaggedKey, run: str
) -> None:
    mine = [tagged_key(alias=f"alias/{run}/signer-{i}") for i in range(5)]
    tagged_key(alias=f"alias/{run}-other/x")  # a longer prefix that does not match
    front = await start_kms_front(aiohttp_server, kms.url)

    found = await discovered(
        front.url, DiscoverySpec(alias_prefixes=(f"alias/{run}/",)), page_size=2
    )

    assert [label for label, _ in found.keys] == [f"alias/{run}/signer-{i}" for i in range(5)]
    assert [info.address for _, info in found.keys] == [a for _, a in mine]
    assert front.operations("ListKeys") == []  # never lists (or reads) the account's other keys
    described = {body["KeyId"] for body in front.operations("DescribeKey")}
    assert described == {arn.rsplit("/", 1)[1] for arn, _ in mine}
    assert len(front.operations("ListAliases")) > 2
    assert found.skipped == {} and found.failures == []


async def test_alias_prefix_and_tags_must_both_match(
    kms: Any, tagged_key: TaggedKey, run: str
) -> None:
    both = tagged_key({"env": "prod"}, alias=f"alias/{run}/a")
    tagged_key({"env": "dev"}, alias=f"alias/{run}/b")
    tagged_key({"env": "prod"})  # no alias

    found = await discovered(kms.url, DiscoverySpec((("env", "prod"),), (f"alias/{run}/",)))

    assert [(label, info.arn) for label, info in found.keys] == [(f"alias/{run}/a", both[0])]
    assert found.skipped == {"tags_differ": 1}


async def test_keys_the_identity_may_not_read_are_skipped_quietly_and_counted(
    aiohttp_server: Any, kms: Any, tagged_key: TaggedKey, run: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Least privilege (deploy/aws): ListKeys lists the whole account, but reads are granted on
    the stack's keys only; everything else answers AccessDenied."""
    stack = [tagged_key({"app": "signer-proxy", "env": run}) for _ in range(3)]
    allowed = {arn.rsplit("/", 1)[1] for arn, _ in stack}
    front = KmsFront()

    async def least_privilege(operation: str, body: dict[str, Any]) -> web.Response | None:
        key = str(body.get("KeyId", "")).rsplit("/", 1)[-1]
        if operation in ("ListResourceTags", "DescribeKey", "GetPublicKey") and key not in allowed:
            return kms_error("AccessDeniedException", f"not authorized to {operation} {key}")
        return None

    front.answer = least_privilege
    await start_kms_front(aiohttp_server, kms.url, front)

    found = await discovered(front.url, DiscoverySpec((("app", "signer-proxy"), ("env", run))))

    assert sorted(info.arn for _, info in found.keys) == sorted(arn for arn, _ in stack)
    assert found.failures == []
    assert found.skipped["access_denied"] == found.listed - 3 > 0
    assert "WARNING" not in caplog.text and "ERROR" not in caplog.text


async def test_listing_denied_is_one_clear_failure(aiohttp_server: Any, kms: Any) -> None:
    front = KmsFront()

    async def deny(operation: str, body: dict[str, Any]) -> web.Response | None:
        return kms_error("AccessDeniedException") if operation == "ListAliases" else None

    front.answer = deny
    await start_kms_front(aiohttp_server, kms.url, front)
    from signer_proxy.errors import KeyLoadFailed

    with pytest.raises(KeyLoadFailed) as info:
        await discovered(front.url, DiscoverySpec(alias_prefixes=("alias/x/",)))
    assert info.value.reason == "listing" and not info.value.transient
    assert "needs kms:ListAliases" in str(info.value) and REGION in str(info.value)


async def test_kms_calls_in_flight_stay_within_the_bound(
    aiohttp_server: Any, kms: Any, tagged_key: TaggedKey, run: str
) -> None:
    for i in range(12):
        tagged_key(alias=f"alias/{run}/k{i}")
    front = KmsFront(delay=0.02)
    await start_kms_front(aiohttp_server, kms.url, front)

    found = await discovered(front.url, DiscoverySpec(alias_prefixes=(f"alias/{run}/",)), 4)

    assert len(found.keys) == 12
    assert front.peak["DescribeKey"] >= 2  # concurrent, not one after another
    assert front.total_peak <= 4


async def test_the_proxy_signs_with_discovered_keys(
    start_proxy: ProxyFactory, anvil: Anvil, kms: Any, tagged_key: TaggedKey, run: str
) -> None:
    _, first = tagged_key({"team": run}, alias=f"alias/{run}/b")
    _, second = tagged_key({"team": run}, alias=f"alias/{run}/a")
    anvil.fund(first)
    settings = proxy_settings(anvil.url, kms.url, kms_discover_tags=(f"team={run}",))

    proxy = await start_proxy(settings)

    assert await proxy.result("eth_accounts") == [second, first]  # by alias
    tx_hash = await proxy.result("eth_sendTransaction", [{"from": first, "to": SINK}])
    assert anvil.call("eth_getTransactionByHash", [tx_hash])["from"] == first.lower()
