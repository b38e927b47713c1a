"""The one-shot key commands as real subprocesses against the KMS emulator:
sign-authorization (its output used in a type 0x4 transaction mined by anvil), hedera-key and
hedera-sign (verified with `cryptography` against the key KMS holds)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_der_public_key
from eth_account import Account
from eth_utils import to_checksum_address

from signer_proxy.eth.ecdsa import SECP256K1_HALF_N, keccak256
from signer_proxy.eth.tx_encoding import authorization_digest
from tests.auth_support import write_policy_file
from tests.conftest import REGION, Anvil, KeyFactory, run_cli
from tests.integration.test_transactions import RUNTIME_CODE, wait_for_receipt

pytestmark = pytest.mark.integration

# anvil's first default account's well-known test key: it sends the type 0x4 transaction.
ANVIL_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
DELEGATE = to_checksum_address("0x000000000000000000000000000000000000c0de")


def key_command(kms: Any, command: str, key: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(
        command, "--kms-key", key, "--aws-region", REGION, "--aws-endpoint-url", kms.url, *args
    )


def test_sign_authorization_output_is_accepted_in_a_type_4_transaction_on_anvil(
    anvil: Anvil, kms: Any, make_key: KeyFactory
) -> None:
    key = make_key()
    anvil.call("anvil_setCode", [DELEGATE, RUNTIME_CODE])

    result = key_command(
        kms, "sign-authorization", key.alias or key.arn,
        "--address", DELEGATE.lower(), "--chain-id", "31337", "--nonce", "0x0",
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    authorization = json.loads(result.stdout)
    assert authorization["authority"] == key.address
    assert (authorization["chainId"], authorization["nonce"]) == ("0x7a69", "0x0")
    assert authorization["address"] == DELEGATE
    digest = authorization_digest(31337, DELEGATE, 0)
    vrs = (int(authorization["yParity"], 16), int(authorization["r"], 16),
           int(authorization["s"], 16))  # fmt: skip
    assert Account._recover_hash(digest, vrs=vrs) == key.address
    assert vrs[2] <= SECP256K1_HALF_N
    sponsor = Account.from_key(ANVIL_KEY)
    signed = sponsor.sign_transaction(
        {"type": 4, "chainId": 31337, "nonce": 0, "to": key.address, "value": 0, "gas": 100_000,
         "maxFeePerGas": 10**10, "maxPriorityFeePerGas": 1,
         "authorizationList": [{"chainId": 31337, "address": DELEGATE, "nonce": 0,
                                "yParity": vrs[0], "r": vrs[1], "s": vrs[2]}]}
    )  # fmt: skip
    tx_hash = anvil.call("eth_sendRawTransaction", ["0x" + bytes(signed.raw_transaction).hex()])
    assert wait_for_receipt(anvil, tx_hash)["status"] == "0x1"
    assert anvil.call("eth_getCode", [key.address, "latest"]) == "0xef0100" + DELEGATE[2:].lower()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        pytest.param(["--address", "0x12", "--chain-id", "1", "--nonce", "0"], "--address must"),
        pytest.param(["--address", DELEGATE, "--chain-id", "x", "--nonce", "0"], "--chain-id must"),
    ],
)
def test_sign_authorization_refuses_bad_input_with_status_2(
    kms: Any, make_key: KeyFactory, args: list[str], fragment: str
) -> None:
    result = key_command(kms, "sign-authorization", make_key().arn, *args)

    assert result.returncode == 2
    assert fragment in result.stderr and "Traceback" not in result.stderr


def test_hedera_key_and_hedera_sign_give_the_hedera_forms_of_the_kms_key(
    kms: Any, kms_client: Any, make_key: KeyFactory
) -> None:
    key = make_key()
    body = bytes.fromhex("0a1c0a0c08c8f6b8a806100a18") * 7
    kms_key = load_der_public_key(kms_client.get_public_key(KeyId=key.arn)["PublicKey"])
    assert isinstance(kms_key, ec.EllipticCurvePublicKey)
    compressed = kms_key.public_bytes(Encoding.X962, PublicFormat.CompressedPoint).hex()

    shown = key_command(kms, "hedera-key", key.arn)
    signed = key_command(kms, "hedera-sign", key.arn, "--hex", "0x" + body.hex())
    piped = subprocess.run(
        [sys.executable, "-m", "signer_proxy", "hedera-sign", "--kms-key", key.arn,
         "--aws-region", REGION, "--aws-endpoint-url", kms.url, "--file", "-"],
        input=body, capture_output=True, timeout=60,
    )  # fmt: skip

    assert shown.returncode == signed.returncode == piped.returncode == 0, signed.stderr
    key_info = json.loads(shown.stdout)
    assert key_info == {
        "publicKey": compressed,
        "publicKeyDer": "302d300706052b8104000a032200" + compressed,
        "evmAddress": key.address,
    }
    for output in (json.loads(signed.stdout), json.loads(piped.stdout)):
        assert output["publicKey"] == compressed
        assert output["digest"] == keccak256(body).hex()
        signature = bytes.fromhex(output["signature"])
        assert len(signature) == 64
        der = encode_dss_signature(
            int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        )
        kms_key.verify(der, keccak256(body), ec.ECDSA(Prehashed(hashes.SHA256())))


def test_hedera_sign_unknown_key_exits_2_naming_it(kms: Any) -> None:
    result = key_command(kms, "hedera-sign", "alias/no-such-key", "--hex", "00")

    assert result.returncode == 2
    assert "alias/no-such-key" in result.stderr and "not found" in result.stderr


def test_signatures_made_by_hand_pass_the_policy_and_are_audited(
    kms: Any, make_key: KeyFactory, tmp_path: Path
) -> None:
    """With the config file's policy and audit log, sign-authorization is refused by a rule as
    the server would refuse it (chain_ids), and every decision of both commands is audited as
    the operator's."""
    key = make_key()
    policy = write_policy_file(
        tmp_path, {"defaults": {"chain_ids": [31337]}, "keys": {"alias/other": {}}}
    )
    audit = tmp_path / "audit.jsonl"
    config = tmp_path / "config.yaml"
    config.write_text(f"policy_file: {policy}\naudit_log: {audit}\n")
    sign = ("--address", DELEGATE, "--nonce", "0", "--config", str(config))

    refused = key_command(kms, "sign-authorization", key.arn, "--chain-id", "1", *sign)
    allowed = key_command(kms, "sign-authorization", key.arn, "--chain-id", "31337", *sign)
    hedera = key_command(kms, "hedera-sign", key.arn, "--hex", "0a1c", "--config", str(config))

    assert refused.returncode != 0 and "chain_ids" in refused.stderr, refused.stderr
    assert refused.stdout == ""  # nothing signed
    assert allowed.returncode == 0 and hedera.returncode == 0, allowed.stderr + hedera.stderr
    lines = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [(e["method"], e["outcome"], e.get("rule")) for e in lines] == [
        ("signer_signAuthorization", "denied", "chain_ids"),
        ("signer_signAuthorization", "allowed", None),
        ("hedera-sign", "allowed", None),
    ]
    assert {(e["client"], e["transport"], e["from"], e["key"]) for e in lines} == {
        ("operator-cli", "cli", key.address, key.arn)
    }
    assert lines[1]["digest"] == "0x" + authorization_digest(31337, DELEGATE, 0).hex()
    assert lines[2]["digest"] == "0x" + keccak256(bytes.fromhex("0a1c")).hex()
    assert lines[1]["result"] == lines[2]["result"] == "ok"
