"""The emulator behaves as AWS documents where moto does not: list paging, and key material
import (EXTERNAL keys, GetParametersForImport, ImportKeyMaterial) with real unwrapping."""

from __future__ import annotations

import datetime
import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError
from eth_account import Account

from signer_proxy.eth.ecdsa import address_from_public_key, keccak256, public_key_from_spki
from signer_proxy.keys.byok import pkcs8_der, wrap_key_material

pytestmark = pytest.mark.integration


def code(caught: pytest.ExceptionInfo[ClientError]) -> str:
    return str(caught.value.response["Error"]["Code"])


def test_lists_page_with_limit_and_marker(kms_client: Any) -> None:
    run = uuid.uuid4().hex[:8]
    for i in range(5):
        key = kms_client.create_key(KeySpec="ECC_SECG_P256K1", KeyUsage="SIGN_VERIFY")
        kms_client.create_alias(
            AliasName=f"alias/{run}/{i}", TargetKeyId=key["KeyMetadata"]["KeyId"]
        )

    everything = []
    marker: dict[str, str] = {}
    while True:
        page = kms_client.list_aliases(Limit=2, **marker)
        assert len(page["Aliases"]) <= 2
        everything += page["Aliases"]
        if not page["Truncated"]:
            assert "NextMarker" not in page
            break
        marker = {"Marker": page["NextMarker"]}
    mine = [a["AliasName"] for a in everything if a["AliasName"].startswith(f"alias/{run}/")]
    assert sorted(mine) == [f"alias/{run}/{i}" for i in range(5)]
    assert len(everything) == len({a["AliasName"] for a in everything})  # no page repeats
    assert len(kms_client.list_keys(Limit=1000)["Keys"]) <= 1000


@pytest.mark.parametrize(
    ("operation", "kwargs", "expected"),
    [
        pytest.param("list_keys", {"Marker": "not-ours"}, "InvalidMarkerException", id="marker"),
        pytest.param("list_aliases", {"Limit": 101}, "ValidationException", id="alias-limit"),
        pytest.param("list_keys", {"Limit": 1001}, "ValidationException", id="keys-limit"),
    ],
)
def test_lists_refuse_what_aws_refuses(
    kms_client: Any, operation: str, kwargs: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ClientError) as caught:
        getattr(kms_client, operation)(**kwargs)
    assert code(caught) == expected


def external_key(kms_client: Any) -> dict[str, Any]:
    return dict(
        kms_client.create_key(KeySpec="ECC_SECG_P256K1", KeyUsage="SIGN_VERIFY", Origin="EXTERNAL")[
            "KeyMetadata"
        ]
    )


def test_an_external_key_waits_for_its_material(kms_client: Any) -> None:
    key = external_key(kms_client)
    assert (key["KeyState"], key["Origin"], key["Enabled"]) == ("PendingImport", "EXTERNAL", False)
    with pytest.raises(ClientError) as caught:
        kms_client.get_public_key(KeyId=key["Arn"])
    assert code(caught) == "KMSInvalidStateException"
    with pytest.raises(ClientError) as caught:
        kms_client.sign(
            KeyId=key["Arn"], Message=b"\x01" * 32, MessageType="DIGEST",
            SigningAlgorithm="ECDSA_SHA_256",
        )  # fmt: skip
    assert code(caught) == "KMSInvalidStateException"


@pytest.mark.parametrize("algorithm", ["RSAES_OAEP_SHA_256", "RSA_AES_KEY_WRAP_SHA_256"])
def test_imported_material_is_the_key_kms_then_signs_with(kms_client: Any, algorithm: str) -> None:
    private_key = keccak256(b"emulator import " + algorithm.encode())
    key = external_key(kms_client)
    parameters = kms_client.get_parameters_for_import(
        KeyId=key["KeyId"], WrappingAlgorithm=algorithm, WrappingKeySpec="RSA_2048"
    )
    assert parameters["KeyId"] == key["Arn"]
    assert parameters["ParametersValidTo"] > datetime.datetime.now(datetime.UTC)
    valid_to = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=30)
    kms_client.import_key_material(
        KeyId=key["KeyId"],
        ImportToken=parameters["ImportToken"],
        EncryptedKeyMaterial=wrap_key_material(
            pkcs8_der(private_key), parameters["PublicKey"], algorithm
        ),
        ExpirationModel="KEY_MATERIAL_EXPIRES",
        ValidTo=valid_to,
    )

    described = kms_client.describe_key(KeyId=key["KeyId"])["KeyMetadata"]
    assert described["KeyState"] == "Enabled"
    assert described["ExpirationModel"] == "KEY_MATERIAL_EXPIRES"
    assert abs((described["ValidTo"] - valid_to).total_seconds()) < 1
    der = kms_client.get_public_key(KeyId=key["Arn"])["PublicKey"]
    assert (
        address_from_public_key(public_key_from_spki(der)) == Account.from_key(private_key).address
    )


def test_import_refusals(kms_client: Any) -> None:
    key = external_key(kms_client)
    generated = kms_client.create_key(KeySpec="ECC_SECG_P256K1", KeyUsage="SIGN_VERIFY")

    with pytest.raises(ClientError) as caught:
        kms_client.get_parameters_for_import(
            KeyId=generated["KeyMetadata"]["KeyId"],
            WrappingAlgorithm="RSAES_OAEP_SHA_256",
            WrappingKeySpec="RSA_2048",
        )
    assert code(caught) == "UnsupportedOperationException"

    parameters = kms_client.get_parameters_for_import(
        KeyId=key["KeyId"], WrappingAlgorithm="RSAES_OAEP_SHA_256", WrappingKeySpec="RSA_2048"
    )

    def import_(material: bytes, token: bytes = parameters["ImportToken"], **extra: Any) -> str:
        wrapped = wrap_key_material(material, parameters["PublicKey"], "RSAES_OAEP_SHA_256")
        with pytest.raises(ClientError) as caught:
            kms_client.import_key_material(
                KeyId=key["KeyId"], ImportToken=token, EncryptedKeyMaterial=wrapped,
                **({"ExpirationModel": "KEY_MATERIAL_DOES_NOT_EXPIRE"} | extra),
            )  # fmt: skip
        return code(caught)

    good = pkcs8_der(keccak256(b"refusals"))
    assert import_(good, token=b"forged token") == "InvalidImportTokenException"
    assert import_(b"not pkcs8") == "IncorrectKeyMaterialException"
    assert import_(good, ExpirationModel="KEY_MATERIAL_EXPIRES") == "ValidationException"
    # Then the right material goes in once, and different material never after.
    kms_client.import_key_material(
        KeyId=key["KeyId"],
        ImportToken=parameters["ImportToken"],
        EncryptedKeyMaterial=wrap_key_material(good, parameters["PublicKey"], "RSAES_OAEP_SHA_256"),
        ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE",
    )
    assert import_(pkcs8_der(keccak256(b"other"))) == "IncorrectKeyMaterialException"
