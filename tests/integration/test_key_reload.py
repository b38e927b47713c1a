"""Reloading keys without a restart: SIGHUP to a real `signer-proxy serve` (the config file
re-read, aliases re-resolved, discovery re-run), the admin route and its token, and a
signature in flight when its key is removed."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from signer_proxy.app import create_app
from signer_proxy.config import Settings
from signer_proxy.errors import ConfigError
from tests.conftest import (
    REGION,
    Anvil,
    KeyFactory,
    proxy_settings,
    rpc_call,
    start_proxy_process,
    stop,
)
from tests.integration.kms_front import KmsFront, start_kms_front

pytestmark = pytest.mark.integration

SINK = "0x000000000000000000000000000000000000dEaD"
TOKEN = "an-admin-token-of-32-characters!"


def accounts(url: str) -> list[str]:
    return list(rpc_call(url, "eth_accounts")["result"])


def wait_for_accounts(url: str, expected: list[str], seconds: float = 15) -> list[str]:
    deadline = time.monotonic() + seconds
    while (seen := accounts(url)) != expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return seen


def test_sighup_rereads_the_file_resolves_aliases_again_and_reruns_discovery(
    anvil: Anvil, kms: Any, kms_client: Any, make_key: KeyFactory, tmp_path: Path
) -> None:
    run = uuid.uuid4().hex[:8]
    moved, kept, removed, added = make_key(), make_key(), make_key(), make_key()
    retargeted = make_key()  # the key `moved`'s alias will point at
    found, retired = make_key(f"alias/{run}/found"), make_key(f"alias/{run}/retired")
    config = tmp_path / "signer-proxy.yaml"

    def write(keys: list[str]) -> None:
        config.write_text(
            yaml.safe_dump(
                {
                    "upstream": anvil.url,
                    "aws_region": REGION,
                    "aws_endpoint_url": kms.url,
                    "kms_keys": keys,
                    "kms_discover_alias_prefixes": [f"alias/{run}/"],
                }
            )
        )

    write([moved.alias or "", kept.arn, removed.arn])
    proxy = start_proxy_process("--config", str(config))
    try:
        assert accounts(proxy.url) == [
            moved.address, kept.address, removed.address, found.address, retired.address,
        ]  # fmt: skip
        kms_client.update_alias(AliasName=moved.alias, TargetKeyId=retargeted.key_id)
        write([moved.alias or "", kept.arn, added.arn])
        fresh = make_key(f"alias/{run}/fresh")
        kms_client.disable_key(KeyId=retired.key_id)

        proxy.process.send_signal(signal.SIGHUP)

        expected = [retargeted.address, kept.address, added.address, found.address, fresh.address]
        assert wait_for_accounts(proxy.url, expected) == expected
        anvil.fund(retargeted.address)
        reply = rpc_call(
            proxy.url, "eth_sendTransaction", [{"from": retargeted.address, "to": SINK}]
        )
        assert anvil.call("eth_getTransactionByHash", [reply["result"]])["from"] == (
            retargeted.address.lower()
        )
        stale = rpc_call(proxy.url, "eth_sendTransaction", [{"from": removed.address, "to": SINK}])
        assert stale["error"]["code"] == -32602 and removed.address in stale["error"]["message"]

        # A file that no longer parses: the reload is refused and the keys stay as they are.
        config.write_text("kms_keys: [unclosed\n")
        proxy.process.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert accounts(proxy.url) == expected
    finally:
        kms_client.enable_key(KeyId=retired.key_id)
        proxy.process.terminate()
        try:
            _, stderr = proxy.process.communicate(timeout=15)
        finally:
            stop(proxy.process)
    assert proxy.process.returncode == 0
    assert f"reload (sighup): removed {removed.address}" in stderr
    assert f"reload (sighup): added {retargeted.address}" in stderr
    assert "reload (sighup) refused, nothing changed" in stderr
    assert "Traceback" not in stderr


async def started(aiohttp_client: Any, settings: Settings, **options: Any) -> Any:
    return await aiohttp_client(create_app(settings, **options))


def token_file(tmp_path: Path, token: str = TOKEN) -> str:
    path = tmp_path / "admin-token"
    path.write_text(token + "\n")
    return str(path)


async def test_the_admin_route_is_off_unless_a_token_file_is_set(
    aiohttp_client: Any, anvil: Anvil, kms: Any, make_key: KeyFactory
) -> None:
    client = await started(aiohttp_client, proxy_settings(anvil.url, kms.url, make_key().arn))
    response = await client.post("/admin/keys/reload", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status == 404


async def test_the_admin_route_needs_the_token_and_reports_the_reload(
    aiohttp_client: Any, anvil: Anvil, kms: Any, make_key: KeyFactory, tmp_path: Path
) -> None:
    first, second = make_key(), make_key()
    settings = proxy_settings(anvil.url, kms.url, first.arn, admin_token_file=token_file(tmp_path))
    reloaded = dataclasses.replace(settings, kms_keys=(second.arn, "alias/not-there"))
    client = await started(aiohttp_client, settings, reload_settings=lambda: reloaded)

    for headers in (
        {},
        {"Authorization": "Bearer wrong-token-wrong-token"},
        {"Authorization": TOKEN},
    ):
        refused = await client.post("/admin/keys/reload", headers=headers)
        assert refused.status == 401
        assert "Bearer" in (await refused.json())["error"]
    response = await client.post("/admin/keys/reload", headers={"Authorization": f"Bearer {TOKEN}"})

    assert response.status == 200
    body = await response.json()
    assert (body["added"], body["removed"], body["keys"]) == ([second.address], [first.address], 1)
    assert body["failed"][0]["key"] == "alias/not-there"
    assert body["failed"][0]["reason"] == "not_found"
    assert TOKEN not in json.dumps(body)
    metrics = await (await client.get("/metrics")).text()
    assert 'signer_proxy_key_reloads_total{outcome="failures",trigger="admin"} 1.0' in metrics
    assert 'signer_proxy_key_load_failures{source="kms"} 1.0' in metrics


@pytest.mark.parametrize(
    ("emptied", "message"),
    [
        pytest.param(False, "config file /etc/x.yaml is not valid YAML", id="unreadable"),
        pytest.param(True, "the configuration names no keys now", id="emptied"),
    ],
)
async def test_a_reload_whose_configuration_fails_changes_nothing(
    aiohttp_client: Any,
    anvil: Anvil,
    kms: Any,
    make_key: KeyFactory,
    tmp_path: Path,
    emptied: bool,
    message: str,
) -> None:
    key = make_key()
    settings = proxy_settings(anvil.url, kms.url, key.arn, admin_token_file=token_file(tmp_path))

    def reread() -> Settings:
        if emptied:
            return dataclasses.replace(settings, kms_keys=())
        raise ConfigError("config file /etc/x.yaml is not valid YAML")

    client = await started(aiohttp_client, settings, reload_settings=reread)
    response = await client.post("/admin/keys/reload", headers={"Authorization": f"Bearer {TOKEN}"})

    assert response.status == 422
    assert (await response.json())["error"].startswith(
        f"nothing changed (keys, policy, API keys): {message}"
    )
    reply = await client.post("/", json={"jsonrpc": "2.0", "id": 1, "method": "eth_accounts"})
    assert (await reply.json())["result"] == [key.address]


def test_a_short_admin_token_refuses_startup(kms: Any, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least 16 characters"):
        create_app(
            proxy_settings(
                "http://127.0.0.1:1", kms.url, admin_token_file=token_file(tmp_path, "short")
            )
        )


async def test_a_signature_in_flight_finishes_when_its_key_is_removed(
    aiohttp_client: Any, aiohttp_server: Any, anvil: Anvil, kms: Any, make_key: KeyFactory
) -> None:
    leaving, staying = make_key(), make_key()
    anvil.fund(leaving.address)
    front = KmsFront()
    held, release = asyncio.Event(), asyncio.Event()

    async def hold_sign(operation: str, body: dict[str, Any]) -> None:
        if operation == "Sign" and body["KeyId"] == leaving.arn and not release.is_set():
            held.set()
            await release.wait()
        return None

    front.answer = hold_sign  # type: ignore[assignment]
    await start_kms_front(aiohttp_server, kms.url, front)
    settings = proxy_settings(anvil.url, front.url, leaving.arn, staying.arn)
    app = create_app(
        settings, reload_settings=lambda: dataclasses.replace(settings, kms_keys=(staying.arn,))
    )
    client = await aiohttp_client(app)

    async def call(method: str, params: Any) -> dict[str, Any]:
        response = await client.post(
            "/", json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
        )
        return dict(await response.json())

    sending = asyncio.create_task(
        call("eth_sendTransaction", [{"from": leaving.address, "to": SINK}])
    )
    await asyncio.wait_for(held.wait(), 10)
    from signer_proxy.app import KEYRING

    report = await app[KEYRING].reload("admin")  # does not wait for the signature in flight
    assert report.removed == (leaving.address,)
    assert (await call("eth_accounts", []))["result"] == [staying.address]
    release.set()

    sent = await asyncio.wait_for(sending, 10)
    assert "result" in sent, sent
    assert (
        anvil.call("eth_getTransactionByHash", [sent["result"]])["from"] == leaving.address.lower()
    )
    again = await call("eth_sendTransaction", [{"from": leaving.address, "to": SINK}])
    assert again["error"]["code"] == -32602


async def test_admin_clients_reload_with_their_own_credentials(
    aiohttp_client: Any, anvil: Anvil, kms: Any, make_key: KeyFactory, tmp_path: Path
) -> None:
    from tests.auth_support import API_KEYS, write_api_keys_file

    settings = proxy_settings(
        anvil.url,
        kms.url,
        make_key().arn,
        api_keys_file=str(write_api_keys_file(tmp_path)),
        admin_clients=("ci",),
    )
    client = await started(aiohttp_client, settings)

    async def reload(headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        response = await client.post("/admin/keys/reload", headers=headers)
        return response.status, dict(await response.json())

    status, body = await reload({"Authorization": f"Bearer {API_KEYS['ci']}"})
    assert status == 200 and body["keys"] == 1
    status, body = await reload({"Authorization": f"Bearer {API_KEYS['dapp']}"})
    assert (status, body["error"]) == (
        403,
        "client dapp may not reload keys: it is not in --admin-clients",
    )
    status, _ = await reload({})
    assert status == 401
    status, _ = await reload(
        {"Authorization": f"Bearer {API_KEYS['ci']}", "Origin": "https://evil.example"}
    )
    assert status == 403
    for key in API_KEYS.values():
        assert key not in json.dumps(body)


async def test_the_policy_follows_a_retargeted_alias_on_reload(
    aiohttp_client: Any,
    anvil: Anvil,
    kms: Any,
    kms_client: Any,
    make_key: KeyFactory,
    tmp_path: Path,
) -> None:
    """The policy names keys as --kms-key does; after a reload it binds to the key the alias
    now names, and the key that left no longer signs for anyone."""
    from tests.auth_support import API_KEYS, write_api_keys_file

    first, second, other = make_key(), make_key(), make_key()
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump({"clients": {"dapp": {"keys": [first.alias]}}}))
    settings = proxy_settings(
        anvil.url,
        kms.url,
        first.alias or "",
        other.arn,
        api_keys_file=str(write_api_keys_file(tmp_path)),
        policy_file=str(policy),
    )
    app = create_app(settings)
    client = await aiohttp_client(app)

    async def accounts_of(name: str) -> list[str]:
        response = await client.post(
            "/",
            json={"jsonrpc": "2.0", "id": 1, "method": "eth_accounts"},
            headers={"Authorization": f"Bearer {API_KEYS[name]}"},
        )
        return list((await response.json())["result"])

    assert await accounts_of("dapp") == [first.address]
    kms_client.update_alias(AliasName=first.alias, TargetKeyId=second.key_id)
    from signer_proxy.app import KEYRING

    await app[KEYRING].reload("admin")
    assert await accounts_of("dapp") == [second.address]
    assert await accounts_of("ci") == [second.address, other.address]  # unrestricted
