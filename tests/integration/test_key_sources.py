"""Key sources combined in one proxy: a key of another Region, a key of another account (its
role assumed through STS), a V3 keystore; and what startup does when one of them fails."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
from aiohttp import web
from eth_account import Account
from eth_keyfile import create_keyfile_json

from signer_proxy.app import KEYRING
from signer_proxy.eth.ecdsa import address_from_public_key, keccak256, public_key_from_spki
from tests.conftest import REGION, Anvil, KeyFactory, ProxyFactory, proxy_settings, run_cli
from tests.integration.kms_front import KmsFront, kms_error, start_kms_front

pytestmark = pytest.mark.integration

SINK = "0x000000000000000000000000000000000000dEaD"
OTHER_ACCOUNT = "222233334444"
ROLE = f"arn:aws:iam::{OTHER_ACCOUNT}:role/signer"
PASSWORD = "keystore password for tests"


def write_keystore(directory: Path, key: bytes, password: str = PASSWORD) -> tuple[Path, Path]:
    """A light-KDF V3 keystore and its password file: (keystore, password file)."""
    keystore = directory / f"UTC--{uuid.uuid4().hex}"
    keystore.write_text(
        json.dumps(create_keyfile_json(key, password.encode(), kdf="scrypt", iterations=4096))
    )
    password_file = directory.parent / f"{keystore.name}.password"
    password_file.write_text(password + "\n")
    return keystore, password_file


def kms_key_in(kms_url: str, region: str = REGION, **credentials: str) -> tuple[str, str, str]:
    """A secp256k1 key (and alias) created with these credentials: (alias, ARN, address)."""
    client = boto3.client("kms", region_name=region, endpoint_url=kms_url, **credentials)
    metadata = client.create_key(KeySpec="ECC_SECG_P256K1", KeyUsage="SIGN_VERIFY")["KeyMetadata"]
    alias = f"alias/elsewhere-{uuid.uuid4().hex[:8]}"
    client.create_alias(AliasName=alias, TargetKeyId=metadata["KeyId"])
    der = client.get_public_key(KeyId=metadata["Arn"])["PublicKey"]
    return alias, metadata["Arn"], address_from_public_key(public_key_from_spki(der))


def assumed_role_credentials(kms_url: str) -> dict[str, str]:
    sts = boto3.client("sts", region_name=REGION, endpoint_url=kms_url)
    creds = sts.assume_role(RoleArn=ROLE, RoleSessionName="test")["Credentials"]
    return {
        "aws_access_key_id": creds["AccessKeyId"],
        "aws_secret_access_key": creds["SecretAccessKey"],
        "aws_session_token": creds["SessionToken"],
    }


async def send(proxy: Any, anvil: Anvil, sender: str) -> None:
    tx_hash = await proxy.result("eth_sendTransaction", [{"from": sender, "to": SINK}])
    assert anvil.call("eth_getTransactionByHash", [tx_hash])["from"] == sender.lower()


async def test_keys_of_another_region_another_account_and_a_keystore_sign_side_by_side(
    start_proxy: ProxyFactory,
    anvil: Anvil,
    kms: Any,
    kms_client: Any,
    make_key: KeyFactory,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("DEBUG")
    home = make_key()
    region_alias, region_arn, region_address = kms_key_in(kms.url, "eu-west-1")
    other_alias, other_arn, other_address = kms_key_in(kms.url, **assumed_role_credentials(kms.url))
    assert f":{OTHER_ACCOUNT}:" in other_arn
    with pytest.raises(kms_client.exceptions.NotFoundException):
        kms_client.describe_key(KeyId=other_alias)  # not visible to the proxy's own identity
    (tmp_path / "keystore").mkdir()
    local_key = keccak256(b"keystore beside KMS keys")
    _, password_file = write_keystore(tmp_path / "keystore", local_key)
    local_address = Account.from_key(local_key).address
    for address in (home.address, region_address, other_address, local_address):
        anvil.fund(address)

    settings = proxy_settings(
        anvil.url,
        kms.url,
        home.alias or "",
        f"{region_alias}?region=eu-west-1&endpoint_url={kms.url}",
        f"{other_alias}?role_arn={ROLE}",
        aws_sts_endpoint_url=kms.url,
        keystores=(f"{tmp_path / 'keystore'}?password_file={password_file}",),
    )
    proxy = await start_proxy(settings)

    assert await proxy.result("eth_accounts") == [
        home.address, region_address, other_address, local_address,
    ]  # fmt: skip
    for sender in (region_address, other_address, local_address):
        await send(proxy, anvil, sender)
    statuses = proxy.client.server.app[KEYRING].last.statuses
    assert [(s.source, s.key, s.region) for s in statuses][1:3] == [
        ("kms", region_arn, "eu-west-1"),
        ("kms", other_arn, REGION),
    ]
    assert f"loaded keystore key {statuses[3].ref} ({statuses[3].key}) as {local_address}" in (
        caplog.text
    )
    for secret in (local_key.hex(), PASSWORD):  # at debug, with signing logged
        assert secret not in caplog.text


def serve_args(kms_url: str, *extra: str) -> list[str]:
    return [
        "serve", "--listen", "127.0.0.1:0", "--upstream", "http://127.0.0.1:1",
        "--aws-region", REGION, "--aws-endpoint-url", kms_url, *extra,
    ]  # fmt: skip


def test_a_keystore_whose_password_is_wrong_refuses_startup_without_secrets(
    kms: Any, tmp_path: Path
) -> None:
    (tmp_path / "ks").mkdir()
    key = keccak256(b"wrong password key")
    keystore, password_file = write_keystore(tmp_path / "ks", key)
    password_file.write_text("not the password\n")

    result = run_cli(
        *serve_args(kms.url, "--keystore", f"{keystore}?password_file={password_file}")
    )

    assert result.returncode == 2, result.stderr
    assert "listening" not in result.stdout
    assert str(keystore) in result.stderr and "MAC mismatch" in result.stderr
    for secret in ("not the password", PASSWORD, key.hex()):
        assert secret not in result.stderr + result.stdout


def test_every_key_that_fails_is_named_when_startup_refuses(kms: Any, tmp_path: Path) -> None:
    result = run_cli(
        *serve_args(
            kms.url, "--kms-key", "alias/missing-one", "--kms-key", "alias/missing-two",
            "--keystore", f"{tmp_path}/none.json?password_file={tmp_path}/pw",
        )
    )  # fmt: skip
    assert result.returncode == 2
    assert "3 keys cannot be used" in result.stderr
    for name in ("alias/missing-one", "alias/missing-two", "none.json"):
        assert name in result.stderr


async def test_allow_key_failures_serves_the_others_and_reports_the_failure(
    start_proxy: ProxyFactory,
    anvil: Anvil,
    kms: Any,
    make_key: KeyFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    good = make_key()
    settings = proxy_settings(
        anvil.url, kms.url, good.alias or "", "alias/never-created", allow_key_failures=True
    )
    proxy = await start_proxy(settings)

    assert await proxy.result("eth_accounts") == [good.address]
    response = await proxy.client.get("/ready")
    body = await response.json()
    assert response.status == 200, body
    detail = body["checks"]["keys"]["detail"]
    assert detail.startswith("1 key loaded; not loaded: alias/never-created: ")
    assert "was not found" in detail
    metrics = await (await proxy.client.get("/metrics")).text()
    assert 'signer_proxy_key_load_failures{source="kms"} 1.0' in metrics
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(m.startswith("kms key alias/never-created did not load: ") for m in warnings)


async def test_a_transient_kms_error_on_reload_keeps_the_key_and_a_disabled_key_is_dropped(
    aiohttp_server: Any,
    start_proxy: ProxyFactory,
    anvil: Anvil,
    kms: Any,
    kms_client: Any,
    make_key: KeyFactory,
) -> None:
    steady, flaky = make_key(), make_key()
    front = KmsFront()
    await start_kms_front(aiohttp_server, kms.url, front)
    proxy = await start_proxy(proxy_settings(anvil.url, front.url, steady.arn, flaky.arn))
    ring = proxy.client.server.app[KEYRING]

    async def unavailable(operation: str, body: dict[str, Any]) -> web.Response | None:
        if operation == "DescribeKey" and body.get("KeyId") == flaky.arn:
            return kms_error("KeyUnavailableException")
        return None

    front.answer = unavailable
    report = await ring.reload("admin")
    assert report.removed == () and report.added == ()
    assert [k["key"] for k in report.to_json()["kept"]] == [flaky.arn]
    assert await proxy.result("eth_accounts") == [steady.address, flaky.address]

    front.answer = None
    kms_client.disable_key(KeyId=flaky.key_id)
    try:
        report = await ring.reload("admin")
    finally:
        kms_client.enable_key(KeyId=flaky.key_id)
    assert report.removed == (flaky.address,)
    assert report.to_json()["failed"][0]["reason"] == "state"
    assert await proxy.result("eth_accounts") == [steady.address]
    # Public keys were read once, at startup: reloads reuse them.
    fetched = sorted(body["KeyId"] for body in front.operations("GetPublicKey"))
    assert fetched == sorted([steady.arn, flaky.arn])
