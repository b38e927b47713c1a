"""Hedera through its own SDK (hiero-sdk-python), offline: transactions frozen with a node
account and a transaction id, signed through the KMS emulator by HederaSdkSigner, serialized,
parsed back by the SDK and every signature in the signature map verified with the SDK's own
PublicKey.verify; the same transaction signed by the SDK's local PrivateKey for a key imported
into the emulator verifies alike; `signer-proxy hedera-sign --transaction` adds the signature
to a serialized SDK transaction."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from hiero_sdk_python import (
    AccountId,
    PrivateKey,
    PublicKey,
    TopicId,
    TopicMessageSubmitTransaction,
    Transaction,
    TransferTransaction,
)
from hiero_sdk_python.hapi.sdk.transaction_list_pb2 import TransactionList
from hiero_sdk_python.hapi.services import transaction_contents_pb2
from hiero_sdk_python.transaction.transaction_id import TransactionId

from signer_proxy.config import load_settings
from signer_proxy.eth.ecdsa import keccak256
from signer_proxy.keys.aws_kms import KmsSigner, load_key
from signer_proxy.keys.hedera_sdk import HederaSdkSigner
from signer_proxy.keys.reload import kms_client
from tests.conftest import REGION, KeyFactory, run_cli
from tests.integration.test_keys_cli import cli, ok_json

pytestmark = pytest.mark.integration

OPERATOR = AccountId(0, 0, 1001)
NODE = AccountId(0, 0, 3)


def topic_message() -> Any:
    tx = TopicMessageSubmitTransaction().set_topic_id(TopicId(0, 0, 4242)).set_message("report 7")
    return tx.set_transaction_id(TransactionId.generate(OPERATOR)).set_node_account_ids([NODE])


def transfer() -> Any:
    tx = (
        TransferTransaction()
        .add_hbar_transfer(OPERATOR, -25)
        .add_hbar_transfer(AccountId(0, 0, 2002), 25)
    )
    return tx.set_transaction_id(TransactionId.generate(OPERATOR)).set_node_account_ids([NODE])


def signature_pairs(serialized: bytes) -> list[tuple[bytes, bytes, bytes]]:
    """(body bytes, public key prefix, ECDSA signature) of every pair, read from the wire form
    the SDK parsed back (Transaction.from_bytes must accept it first)."""
    Transaction.from_bytes(serialized)
    pairs = []
    for tx in TransactionList.FromString(serialized).transaction_list:
        signed = transaction_contents_pb2.SignedTransaction.FromString(tx.signedTransactionBytes)
        pairs += [
            (signed.bodyBytes, p.pubKeyPrefix, p.ECDSA_secp256k1) for p in signed.sigMap.sigPair
        ]
    return pairs


def verify_all(serialized: bytes, public_key: Any) -> int:
    pairs = signature_pairs(serialized)
    for body, prefix, signature in pairs:
        assert prefix == public_key.to_bytes_raw()
        assert len(signature) == 64
        PublicKey.from_bytes_ecdsa(prefix).verify(signature, body)  # raises when it is not
    return len(pairs)


async def kms_sdk_signer(kms_url: str, key_ref: str) -> tuple[Any, HederaSdkSigner]:
    settings = load_settings({"aws_region": REGION, "aws_endpoint_url": kms_url})
    context = kms_client(settings)
    client = await context.__aenter__()
    signer = KmsSigner(client, await load_key(client, key_ref, REGION))
    return context, await HederaSdkSigner.create(signer)


@pytest.mark.parametrize("build", [topic_message, transfer], ids=["topic-message", "transfer"])
async def test_kms_signed_sdk_transaction_round_trips_and_the_sdk_verifies_it(
    kms: Any, make_key: KeyFactory, build: Any
) -> None:
    key = make_key()
    context, sdk_signer = await kms_sdk_signer(kms.url, key.arn)
    try:
        tx = build().freeze()
        await sdk_signer.sign_transaction(tx)
        serialized = bytes(tx.to_bytes())
    finally:
        await context.__aexit__(None, None, None)

    assert verify_all(serialized, sdk_signer.public_key) == 1
    assert sdk_signer.public_key.is_ecdsa()
    assert sdk_signer.public_key_der_hex.endswith(sdk_signer.public_key_hex)
    # A tampered body no longer verifies: the check above can fail.
    body, prefix, signature = signature_pairs(serialized)[0]
    with pytest.raises(InvalidSignature):
        PublicKey.from_bytes_ecdsa(prefix).verify(signature, body + b"\0")


async def test_imported_key_signs_what_the_sdks_private_key_signs_and_both_verify(
    kms: Any, tmp_path: Path, make_key: KeyFactory
) -> None:
    private = PrivateKey.generate_ecdsa()
    key_file = tmp_path / "key.hex"
    key_file.write_text(private.to_bytes_raw().hex() + "\n")
    alias = f"alias/hedera-import-{keccak256(private.to_bytes_raw()).hex()[:8]}"
    imported = ok_json(
        await asyncio.to_thread(
            cli, kms.url, "keys", "import", "--private-key-file", str(key_file), "--json",
            "--alias", alias,
        )
    )  # fmt: skip
    assert private.to_bytes_raw().hex() not in str(imported)

    context, sdk_signer = await kms_sdk_signer(kms.url, alias)
    try:
        assert sdk_signer.public_key.to_bytes_raw() == private.public_key().to_bytes_raw()
        tx = topic_message().freeze()
        by_kms = bytes((await sdk_signer.sign_transaction(tx)).to_bytes())
    finally:
        await context.__aexit__(None, None, None)
    by_local = bytes(Transaction.from_bytes(tx.to_bytes()).to_bytes())
    local_tx = topic_message()
    local_tx.transaction_id = tx.transaction_id
    local_tx = local_tx.freeze().sign(private)
    by_sdk = bytes(local_tx.to_bytes())

    assert verify_all(by_kms, private.public_key()) == 1
    assert verify_all(by_sdk, private.public_key()) == 1
    assert signature_pairs(by_kms)[0][0] == signature_pairs(by_sdk)[0][0]  # the same body
    assert by_local == by_kms


def test_cli_hedera_sign_adds_the_signature_to_a_serialized_sdk_transaction(
    kms: Any, make_key: KeyFactory, tmp_path: Path
) -> None:
    key = make_key()
    unsigned = bytes(transfer().freeze().to_bytes())
    path = tmp_path / "tx.bin"
    path.write_bytes(unsigned)
    shown = ok_json(cli(kms.url, "hedera-key", "--kms-key", key.arn))

    from_file = ok_json(
        cli(kms.url, "hedera-sign", "--kms-key", key.arn, "--transaction", str(path))
    )
    piped = subprocess.run(
        [sys.executable, "-m", "signer_proxy", "hedera-sign", "--kms-key", key.arn,
         "--aws-region", REGION, "--aws-endpoint-url", kms.url, "--transaction", "-"],
        input=unsigned, capture_output=True, timeout=60,
    )  # fmt: skip
    assert piped.returncode == 0, piped.stderr

    public_key = PublicKey.from_string_ecdsa(shown["publicKey"])
    for output in (from_file, json.loads(piped.stdout)):
        assert output["publicKey"] == shown["publicKey"]
        assert verify_all(bytes.fromhex(output["transaction"]), public_key) == 1
    refused = run_cli(
        "hedera-sign", "--kms-key", key.arn, "--aws-region", REGION, "--aws-endpoint-url",
        kms.url, "--transaction", str(tmp_path / "missing.bin"),
    )  # fmt: skip
    assert refused.returncode != 0 and "Traceback" not in refused.stderr


def js_sdk(*args: str) -> str:
    root = Path(__file__).resolve().parents[2]
    modules = root / ".tools" / "node_modules"
    assert (modules / "@hashgraph" / "sdk").is_dir(), "@hashgraph/sdk missing: run `make tools`"
    result = subprocess.run(
        ["node", str(root / "tests" / "fixtures" / "hashgraph_sdk.cjs"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NODE_PATH": str(modules)},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_javascript_sdk_transaction_signed_by_the_cli_verifies_in_the_javascript_sdk(
    kms: Any, make_key: KeyFactory, tmp_path: Path
) -> None:
    key, other = make_key(), make_key()
    path = tmp_path / "js-tx.bin"
    path.write_bytes(bytes.fromhex(js_sdk("build")))

    signed = ok_json(cli(kms.url, "hedera-sign", "--kms-key", key.arn, "--transaction", str(path)))
    other_key = ok_json(cli(kms.url, "hedera-key", "--kms-key", other.arn))["publicKey"]

    assert json.loads(js_sdk("verify", signed["transaction"], signed["publicKey"])) == {
        "verified": True
    }
    assert json.loads(js_sdk("verify", signed["transaction"], other_key)) == {"verified": False}
    assert (
        verify_all(
            bytes.fromhex(signed["transaction"]), PublicKey.from_string_ecdsa(signed["publicKey"])
        )
        == 1
    )
