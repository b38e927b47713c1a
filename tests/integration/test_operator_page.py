"""The operator page against a real proxy (anvil, the KMS emulator): its JSON on its own,
who gets in, and the page itself in headless Chromium."""

from __future__ import annotations

import base64
import json
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.auth_support import API_KEYS, write_api_keys_file
from tests.conftest import (
    Anvil,
    InProcessProxy,
    KmsEmulator,
    KmsKey,
    ProxyFactory,
    free_port,
    proxy_settings,
    start_proxy_process,
    stop,
)
from tests.integration.browser import chromium_binary, chromium_page
from tests.integration.test_tracking import GWEI, low_fee_send, mine, until

pytestmark = pytest.mark.integration

TOKEN = "operator-token-0123456789abcdef"
RECIPIENT = "0x" + "ab" * 20
POLICY = """
defaults:
  max_value: 1 ether
keys:
  "{key}":
    daily_value_budget: 5 ether
"""


async def start(
    start_proxy: ProxyFactory, tmp_path: Path, anvil: Anvil, kms: KmsEmulator, key: KmsKey
) -> InProcessProxy:
    token_file = tmp_path / "admin-token"
    token_file.write_text(TOKEN)
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.format(key=key.address))
    settings = proxy_settings(
        anvil.url,
        kms.url,
        key.alias or key.arn,
        admin_token_file=str(token_file),
        policy_file=str(policy),
        audit_log=str(tmp_path / "audit.log"),
    )
    proxy: InProcessProxy = await start_proxy(settings)
    return proxy


async def send(proxy: InProcessProxy, key: KmsKey, value: int) -> dict[str, Any]:
    return await proxy.call(
        "eth_sendTransaction", [{"from": key.address, "to": RECIPIENT, "value": hex(value)}]
    )


async def traffic(proxy: InProcessProxy, key: KmsKey) -> tuple[str, dict[str, Any]]:
    """One send the policy allows (its hash) and one it refuses (the error)."""
    allowed = await send(proxy, key, 10**17)
    assert "result" in allowed, allowed
    refused = await send(proxy, key, 2 * 10**18)
    assert refused["error"]["code"] == -32043, refused
    return allowed["result"], refused["error"]


async def get(proxy: InProcessProxy, path: str, headers: dict[str, str] | None = None) -> Any:
    return await proxy.client.get(path, headers=headers or {})


async def test_status_json_shows_keys_decisions_and_nodes(
    start_proxy: ProxyFactory, tmp_path: Path, anvil: Anvil, kms: KmsEmulator, funded_key: KmsKey
) -> None:
    proxy = await start(start_proxy, tmp_path, anvil, kms, funded_key)
    tx_hash, _ = await traffic(proxy, funded_key)

    response = await get(proxy, "/operator/status.json", {"Authorization": f"Bearer {TOKEN}"})
    assert response.status == 200
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    assert response.headers["Cache-Control"] == "no-store"
    data = await response.json()

    (chain,) = data["chains"]
    (node,) = chain["nodes"]
    assert node["healthy"] is True and node["chain_id"] == 31337
    assert node["head_block"] >= 1 and node["url"] == anvil.url
    (key,) = data["keys"]
    assert key["address"] == funded_key.address and key["backend"] == "aws_kms"
    assert key["next_nonce"] == 1 and key["signed_today"] == 1
    assert int(key["balance_wei"]) < 1000 * 10**18
    (budget,) = key["budgets"]
    assert budget == {
        "scope": f"key {funded_key.address}",
        "limit_wei": str(5 * 10**18),
        "used_wei": str(10**17),
    }
    assert isinstance(data["pending"], list)  # tracking is on by default
    refused, allowed = data["decisions"][:2]  # newest first
    assert allowed["outcome"] == "allowed" and allowed["tx_hash"] == tx_hash
    assert refused["outcome"] == "denied" and refused["rule"] == "max_value"
    assert "max_value" in refused["reason"]
    assert set(data["latency"]) == {"kms_sign", "node"}
    assert TOKEN not in json.dumps(data)


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        pytest.param({}, 401, id="no-credential"),
        pytest.param({"Authorization": "Bearer wrong-token-0123456789"}, 401, id="wrong-bearer"),
        pytest.param(
            {"Authorization": "Basic " + base64.b64encode(b"me:wrong").decode()},
            401,
            id="wrong-basic",
        ),
        pytest.param({"Authorization": "Basic !!!"}, 401, id="garbled-basic"),
        pytest.param(
            {"Authorization": "Basic " + base64.b64encode(f"anyone:{TOKEN}".encode()).decode()},
            200,
            id="basic-with-token-as-password",
        ),
        pytest.param({"Authorization": f"Bearer {TOKEN}"}, 200, id="bearer"),
        pytest.param(
            {"Authorization": f"Bearer {TOKEN}", "Host": "evil.example"}, 403, id="foreign-host"
        ),
    ],
)
@pytest.mark.parametrize("path", ["/operator", "/operator/page.js", "/operator/status.json"])
async def test_only_the_admin_credential_gets_in(
    start_proxy: ProxyFactory,
    tmp_path: Path,
    anvil: Anvil,
    kms: KmsEmulator,
    funded_key: KmsKey,
    headers: dict[str, str],
    status: int,
    path: str,
) -> None:
    proxy = await start(start_proxy, tmp_path, anvil, kms, funded_key)
    response = await get(proxy, path, headers)
    body = await response.text()
    assert response.status == status, body
    if status != 200:
        assert funded_key.address not in body and "0x" not in body
        assert response.headers["Content-Type"].startswith("text/plain")
    if status == 401:
        assert response.headers["WWW-Authenticate"].startswith("Basic realm=")


async def test_without_admin_credentials_the_page_is_for_loopback_only(
    start_proxy: ProxyFactory, anvil: Anvil, kms: KmsEmulator, funded_key: KmsKey
) -> None:
    proxy = await start_proxy(proxy_settings(anvil.url, kms.url, funded_key.alias))
    response = await get(proxy, "/operator/status.json")  # the test client is on 127.0.0.1
    assert response.status == 200
    assert (await response.json())["keys"][0]["address"] == funded_key.address


async def test_with_client_auth_and_no_admin_credential_the_page_is_off(
    start_proxy: ProxyFactory, tmp_path: Path, anvil: Anvil, kms: KmsEmulator, funded_key: KmsKey
) -> None:
    settings = proxy_settings(
        anvil.url, kms.url, funded_key.alias, api_keys_file=str(write_api_keys_file(tmp_path))
    )
    proxy = await start_proxy(settings)
    response = await get(
        proxy, "/operator/status.json", {"Authorization": f"Bearer {API_KEYS['ci']}"}
    )
    assert response.status == 403
    assert "needs --admin-token-file or --admin-clients" in await response.text()


def test_with_metrics_listen_the_page_is_on_the_ops_port_only(
    anvil: Anvil, kms: KmsEmulator, funded_key: KmsKey
) -> None:
    ops_port = free_port()
    proxy = start_proxy_process(
        "--upstream", anvil.url, "--aws-region", "us-east-1", "--aws-endpoint-url", kms.url,
        "--kms-key", funded_key.alias or funded_key.arn,
        "--metrics-listen", f"127.0.0.1:{ops_port}",
    )  # fmt: skip
    try:
        assert proxy.process.stdout is not None
        assert "metrics on" in proxy.process.stdout.readline()  # the ops listener is up
        with urllib.request.urlopen(f"http://127.0.0.1:{ops_port}/operator/status.json") as r:
            assert json.loads(r.read())["keys"][0]["address"] == funded_key.address
        with urllib.request.urlopen(f"http://127.0.0.1:{ops_port}/operator") as r:
            assert b"signer-proxy" in r.read()
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"{proxy.url}/operator/status.json")
        missing.value.close()
        assert missing.value.code in (404, 405)
    finally:
        stop(proxy.process)


async def test_without_tracking_the_page_says_so(
    start_proxy: ProxyFactory, anvil: Anvil, kms: KmsEmulator, funded_key: KmsKey
) -> None:
    settings = proxy_settings(anvil.url, kms.url, funded_key.alias, track_transactions=False)
    proxy = await start_proxy(settings)
    assert (await (await get(proxy, "/operator/status.json")).json())["pending"] is None


async def test_the_page_can_be_turned_off(
    start_proxy: ProxyFactory, anvil: Anvil, kms: KmsEmulator, funded_key: KmsKey
) -> None:
    settings = proxy_settings(anvil.url, kms.url, funded_key.alias, operator_page=False)
    proxy = await start_proxy(settings)
    assert (await get(proxy, "/operator/status.json")).status in (404, 405)


needs_chromium = pytest.mark.skipif(
    chromium_binary() is None, reason="chromium is not installed (make tools installs it)"
)


@needs_chromium
async def test_the_page_in_a_browser_shows_sends_and_refusals(
    start_proxy: ProxyFactory, tmp_path: Path, anvil: Anvil, kms: KmsEmulator, funded_key: KmsKey
) -> None:
    proxy = await start(start_proxy, tmp_path, anvil, kms, funded_key)
    tx_hash, _ = await traffic(proxy, funded_key)
    url = str(proxy.client.make_url("/operator"))

    async with chromium_page() as page:
        await page.open(url, {"Authorization": f"Bearer {TOKEN}"})
        assert page.statuses[url] == 200
        await page.wait_for("document.body.dataset.loaded === 'true'")
        address = await page.evaluate("document.querySelector('#keys tbody tr').dataset.address")
        assert address == funded_key.address
        outcomes = await page.evaluate(
            "[...document.querySelectorAll('#decisions tbody tr')].map(r => r.dataset.outcome)"
        )
        assert outcomes[:2] == ["denied", "allowed"]
        decisions = await page.evaluate("document.querySelector('#decisions').innerText")
        assert tx_hash in decisions and "refused" in decisions and "max_value" in decisions
        nodes = await page.evaluate("document.querySelector('#nodes').innerText")
        assert "up" in nodes and "31337" in nodes
        pending = await page.evaluate("document.querySelector('#pending-note').innerText")
        assert "not on" not in pending  # tracking is on by default
        note = await page.evaluate("document.getElementById('note-kms_sign').innerText")
        assert "ms avg" in note, note  # the signature just made is in the open interval
        await page.screenshot(str(tmp_path / "operator-page.png"))
        assert page.console_errors == []
    assert (tmp_path / "operator-page.png").stat().st_size > 10_000
    # OPERATOR_PAGE_SCREENSHOT=docs/operator-page.png refreshes the README's picture.
    if target := os.environ.get("OPERATOR_PAGE_SCREENSHOT"):
        shutil.copyfile(tmp_path / "operator-page.png", target)


@needs_chromium
async def test_the_page_in_a_browser_without_the_credential_shows_nothing(
    start_proxy: ProxyFactory, tmp_path: Path, anvil: Anvil, kms: KmsEmulator, funded_key: KmsKey
) -> None:
    proxy = await start(start_proxy, tmp_path, anvil, kms, funded_key)
    await traffic(proxy, funded_key)
    url = str(proxy.client.make_url("/operator"))
    async with chromium_page() as page:
        await page.open(url)
        assert page.statuses[url] == 401
        text = await page.evaluate("document.body.innerText")
        # A browser asks for the token (Basic challenge) and shows no body meanwhile.
        assert "0x" not in text and "Keys" not in text


@needs_chromium
async def test_the_page_shows_a_stuck_transaction(
    start_proxy: ProxyFactory, tmp_path: Path, paused: Anvil, kms: KmsEmulator, make_key: Any
) -> None:
    key = make_key()
    paused.fund(key.address)
    token_file = tmp_path / "admin-token"
    token_file.write_text(TOKEN)
    settings = proxy_settings(
        paused.url, kms.url, key.arn, admin_token_file=str(token_file), tracking_interval=0.1
    )
    proxy = await start_proxy(settings)
    tx_hash = await proxy.result("eth_sendTransaction", [low_fee_send(key.address)])

    async def stuck() -> Any:
        status = await proxy.result("signer_getTransactionStatus", [tx_hash])
        return status if status["state"] == "stuck" else None

    await until(stuck, between=lambda: mine(paused, 10 * GWEI))
    response = await get(proxy, "/operator/status.json", {"Authorization": f"Bearer {TOKEN}"})
    (row,) = (await response.json())["pending"]
    assert row["hash"] == tx_hash and row["state"] == "stuck" and row["address"] == key.address
    url = str(proxy.client.make_url("/operator"))
    async with chromium_page() as page:
        await page.open(url, {"Authorization": f"Bearer {TOKEN}"})
        await page.wait_for("document.body.dataset.loaded === 'true'")
        states = await page.evaluate(
            "[...document.querySelectorAll('#pending tbody tr')].map(r => r.dataset.state)"
        )
        assert states == ["stuck"]
        text = await page.evaluate("document.querySelector('#pending').innerText")
        assert tx_hash in text and "fee bumping is off" in text
        keys = await page.evaluate("document.querySelector('#keys').innerText")
        assert "1 (oldest" in keys  # the key's pending count and the oldest's age
        await page.screenshot(str(tmp_path / "operator-page-stuck.png"))
        assert page.console_errors == []
