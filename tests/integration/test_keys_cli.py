"""`signer-proxy keys …` and `signer-proxy address` as real subprocesses against the KMS
emulator; BYOK imports also through a KMS front that records what reached KMS."""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account

from signer_proxy.eth.ecdsa import keccak256
from tests.conftest import REGION, KeyFactory, run_cli
from tests.integration.kms_front import start_kms_front
from tests.integration.test_key_sources import PASSWORD, write_keystore

pytestmark = pytest.mark.integration


def cli(kms_url: str, *args: str) -> Any:
    """`signer-proxy ARGS` against the emulator at `kms_url` (flags from the environment)."""
    return run_cli(
        *args,
        env={"SIGNER_PROXY_AWS_REGION": REGION, "SIGNER_PROXY_AWS_ENDPOINT_URL": kms_url},
    )


def ok_json(result: Any) -> Any:
    assert result.returncode == 0, (result.stdout, result.stderr)
    return json.loads(result.stdout)


@pytest.fixture
def run() -> str:
    return uuid.uuid4().hex[:10]


def test_create_then_address_list_and_verify(kms: Any, run: str) -> None:
    alias = f"alias/{run}/treasury"
    created = ok_json(
        cli(kms.url, "keys", "create", "--alias", alias, "--tag", f"team={run}", "--json")
    )
    assert created["alias"] == alias and created["region"] == REGION
    assert created["arn"].startswith(f"arn:aws:kms:{REGION}:")

    address = cli(kms.url, "address", alias)
    assert address.returncode == 0, address.stderr
    assert address.stdout.split() == [created["address"], created["arn"]]  # address, key name

    listed = cli(kms.url, "keys", "list", "--kms-tag", f"team={run}")
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()[:2]
    assert header.split() == ["ADDRESS", "KEY", "NAME", "REGION", "STATE", "SOURCE"]
    assert row.split() == [
        created["address"],
        created["arn"],
        alias,
        REGION,
        "Enabled",
        "discovery",
    ]

    verified = ok_json(cli(kms.url, "keys", "verify", alias, "--json"))
    assert verified["ok"] is True
    [key] = verified["keys"]
    assert key["address"] == created["address"] and key["arn"] == created["arn"]
    assert [c["name"] for c in key["checks"]] == [
        "found", "spec", "usage", "state", "public key", "signature",
    ]  # fmt: skip
    assert all(c["ok"] for c in key["checks"])


def test_verify_gives_the_fix_for_each_failure(
    kms: Any, kms_client: Any, make_key: KeyFactory
) -> None:
    disabled, good = make_key(), make_key()
    p256 = make_key(key_spec="ECC_NIST_P256")
    kms_client.disable_key(KeyId=disabled.key_id)
    try:
        result = cli(
            kms.url, "keys", "verify", good.arn, disabled.alias or "", p256.alias or "",
            "alias/never-made",
        )  # fmt: skip
    finally:
        kms_client.enable_key(KeyId=disabled.key_id)

    assert result.returncode == 1, result.stderr
    out = result.stdout
    assert f"ok    {good.arn}  {good.address}" in out
    assert f"FAIL  {disabled.alias}" in out and "FAIL  state: KeyState Disabled" in out
    assert "fix: enable it or remove it from --kms-key" in out
    assert "FAIL  spec: KeySpec ECC_NIST_P256" in out and "signer-proxy keys create" in out
    assert "FAIL  found: DescribeKey: NotFoundException" in out and "--aws-region" in out
    assert out.rstrip().endswith("4 key(s) checked: 3 key(s) failed")


def test_list_shows_every_source_and_why_a_key_did_not_load(
    kms: Any, make_key: KeyFactory, tmp_path: Path
) -> None:
    key = make_key()
    (tmp_path / "ks").mkdir()
    local = keccak256(b"listed keystore")
    keystore, password_file = write_keystore(tmp_path / "ks", local)

    listed = ok_json(
        cli(
            kms.url, "keys", "list", "--json", "--kms-key", key.alias or "",
            "--kms-key", "alias/never-made",
            "--keystore", f"{keystore}?password_file={password_file}",
        )
    )  # fmt: skip

    rows = {row["name"]: row for row in listed["keys"]}
    assert rows[key.alias or ""]["address"] == key.address
    assert rows[key.alias or ""]["state"] == "Enabled" and rows[key.alias or ""]["key"] == key.arn
    assert rows["alias/never-made"]["state"] == "failed (not_found)"
    assert "was not found" in rows["alias/never-made"]["message"]
    assert rows[str(keystore)] | {"message": ""} == {
        "address": Account.from_key(local).address,
        "key": str(keystore),
        "name": str(keystore),
        "region": "",
        "state": "unlocked",
        "source": "keystore",
        "message": "",
    }


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        pytest.param(
            ["keys", "create", "--alias", "treasury"], "must start with alias/", id="alias"
        ),
        pytest.param(
            ["keys", "import", "--keystore", "/nope.json"], "--keystore needs --password-file",
            id="no-password-file",
        ),
        pytest.param(
            ["keys", "import", "--private-key-file", "/nope", "--valid-to", "2001-01-01"],
            "--valid-to must be in the future", id="valid-to-past",
        ),
        pytest.param(["address", "alias/x?zone=a"], "unknown option 'zone'", id="address-option"),
    ],
)  # fmt: skip
def test_usage_errors_exit_2_with_what_to_change(kms: Any, args: list[str], fragment: str) -> None:
    result = cli(kms.url, *args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert fragment in result.stderr and "Traceback" not in result.stderr


async def test_import_wraps_the_key_as_kms_asks_and_proves_kms_holds_it(
    aiohttp_server: Any, kms: Any, tmp_path: Path, run: str
) -> None:
    private_key = keccak256(b"byok " + run.encode())
    expected = Account.from_key(private_key).address
    key_file = tmp_path / "key.hex"
    key_file.write_text("0x" + private_key.hex() + "\n")
    front = await start_kms_front(aiohttp_server, kms.url)
    alias = f"alias/{run}/imported"

    def import_(*extra: str) -> Any:
        return cli(
            front.url, "keys", "import", "--private-key-file", str(key_file), "--json", *extra
        )

    result = await asyncio.to_thread(
        import_, "--alias", alias, "--tag", f"team={run}",
        "--wrapping-algorithm", "RSA_AES_KEY_WRAP_SHA_256", "--wrapping-key-spec", "RSA_2048",
    )  # fmt: skip
    imported = ok_json(result)
    assert imported["address"] == expected and imported["imported"] is True
    assert imported["expiration_model"] == "KEY_MATERIAL_DOES_NOT_EXPIRE"
    for output in (result.stdout, result.stderr):
        assert private_key.hex() not in output.lower()

    [created] = front.operations("CreateKey")
    assert (created["Origin"], created["KeySpec"], created["KeyUsage"]) == (
        "EXTERNAL", "ECC_SECG_P256K1", "SIGN_VERIFY",
    )  # fmt: skip
    assert created["Tags"] == [{"TagKey": "team", "TagValue": run}]
    [parameters] = front.operations("GetParametersForImport")
    assert parameters == {
        "KeyId": imported["arn"],
        "WrappingAlgorithm": "RSA_AES_KEY_WRAP_SHA_256",
        "WrappingKeySpec": "RSA_2048",
    }
    [material] = front.operations("ImportKeyMaterial")
    assert (
        material["ExpirationModel"] == "KEY_MATERIAL_DOES_NOT_EXPIRE" and "ValidTo" not in material
    )
    wrapped = base64.b64decode(material["EncryptedKeyMaterial"])
    assert len(wrapped) > 256 and private_key not in wrapped  # RSA block + AES-KWP of PKCS#8
    operations = [operation for operation, _ in front.calls]
    assert operations.index("ImportKeyMaterial") < operations.index("Sign")  # the proof comes after

    # Again into the same key: KMS already holds it, nothing is imported.
    again = ok_json(await asyncio.to_thread(import_, "--key-id", alias))
    assert (again["address"], again["imported"]) == (expected, False)
    assert len(front.operations("ImportKeyMaterial")) == 1

    # Another key into it: refused, KMS never swaps an asymmetric key's material.
    other = tmp_path / "other.hex"
    other.write_text(keccak256(b"someone else").hex())
    refused = await asyncio.to_thread(
        cli, front.url, "keys", "import", "--private-key-file", str(other), "--key-id", alias
    )
    assert refused.returncode == 1
    assert f"already holds the key of {expected}" in refused.stderr


async def test_import_from_a_keystore_with_expiring_material(
    aiohttp_server: Any, kms: Any, kms_client: Any, tmp_path: Path, run: str
) -> None:
    private_key = keccak256(b"byok keystore " + run.encode())
    (tmp_path / "ks").mkdir()
    keystore, password_file = write_keystore(tmp_path / "ks", private_key)
    valid_to = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=30)
    front = await start_kms_front(aiohttp_server, kms.url)

    result = await asyncio.to_thread(
        cli, front.url, "keys", "import", "--keystore", str(keystore),
        "--password-file", str(password_file), "--valid-to", valid_to.isoformat(),
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    address = Account.from_key(private_key).address
    assert address in result.stdout and "test signature checked" in result.stdout
    assert PASSWORD not in result.stdout + result.stderr
    [parameters] = front.operations("GetParametersForImport")
    assert (parameters["WrappingAlgorithm"], parameters["WrappingKeySpec"]) == (
        "RSAES_OAEP_SHA_256", "RSA_4096",
    )  # the defaults  # fmt: skip
    [material] = front.operations("ImportKeyMaterial")
    assert material["ExpirationModel"] == "KEY_MATERIAL_EXPIRES"
    assert abs(material["ValidTo"] - valid_to.timestamp()) < 1
    assert len(base64.b64decode(material["EncryptedKeyMaterial"])) == 512  # one RSA-4096 block
    described = kms_client.describe_key(KeyId=parameters["KeyId"])["KeyMetadata"]
    assert (described["KeyState"], described["ExpirationModel"]) == (
        "Enabled", "KEY_MATERIAL_EXPIRES",
    )  # fmt: skip


def test_import_refuses_a_key_whose_material_kms_generated(
    kms: Any, make_key: KeyFactory, tmp_path: Path
) -> None:
    key = make_key()
    key_file = tmp_path / "key.hex"
    key_file.write_text(keccak256(b"not for this key").hex())
    result = cli(
        kms.url, "keys", "import", "--private-key-file", str(key_file), "--key-id", key.arn
    )
    assert result.returncode == 1
    assert "its Origin is AWS_KMS" in result.stderr and "leave out --key-id" in result.stderr


def test_address_of_a_keystore_file_decrypts_it(kms: Any, tmp_path: Path) -> None:
    private_key = keccak256(b"address of a keystore")
    (tmp_path / "keys").mkdir()
    keystore, password_file = write_keystore(tmp_path / "keys", private_key)
    result = cli(kms.url, "address", f"{keystore}?password_file={password_file}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [Account.from_key(private_key).address, str(keystore)]
    assert PASSWORD not in result.stdout + result.stderr
    missing = cli(kms.url, "address", str(keystore))  # no password: say where to give it
    assert missing.returncode == 2 and "has no password file" in missing.stderr
