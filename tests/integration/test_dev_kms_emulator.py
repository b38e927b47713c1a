"""create_dev_keys with a state dir: keys restored into the in-process emulator sign as before."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest

from signer_proxy.dev.kms_emulator import KmsEmulator, create_dev_keys
from signer_proxy.errors import ConfigError
from signer_proxy.eth.ecdsa import (
    address_from_public_key,
    canonical_signature,
    keccak256,
    public_key_from_spki,
)

pytestmark = pytest.mark.integration

# A Region of its own: the session emulator's other keys live in us-east-1.
REGION = "eu-west-3"


def forget_region() -> None:
    """What a restart does to moto: every key of the Region gone."""
    from moto.core.models import DEFAULT_ACCOUNT_ID
    from moto.kms.models import kms_backends

    kms_backends[DEFAULT_ACCOUNT_ID][REGION].keys.clear()


def test_state_dir_restores_the_same_keys_which_still_sign(
    kms: KmsEmulator, tmp_path: Path
) -> None:
    forget_region()
    first = create_dev_keys(kms.url, 2, REGION, tmp_path)
    forget_region()
    client = boto3.client("kms", region_name=REGION, endpoint_url=kms.url)
    assert client.list_keys()["Keys"] == []
    again = create_dev_keys(kms.url, 2, REGION, tmp_path)
    assert again == first  # same aliases, ARNs and addresses

    digest = keccak256(b"signed after a restart")
    der = client.sign(
        KeyId="alias/dev-1", Message=digest, MessageType="DIGEST", SigningAlgorithm="ECDSA_SHA_256"
    )["Signature"]
    public = public_key_from_spki(client.get_public_key(KeyId="alias/dev-1")["PublicKey"])
    assert address_from_public_key(public) == first[1].address
    canonical_signature(der, digest, public)  # raises unless it recovers to this key


def test_state_dir_refuses_a_key_that_no_longer_matches_its_address(
    kms: KmsEmulator, tmp_path: Path
) -> None:
    forget_region()
    create_dev_keys(kms.url, 1, REGION, tmp_path)
    state_file = tmp_path / "kms-keys.json"
    state = json.loads(state_file.read_text())
    state["keys"][0]["address"] = "0x" + "00" * 20
    state_file.write_text(json.dumps(state))
    forget_region()
    with pytest.raises(ConfigError, match="the state file is damaged"):
        create_dev_keys(kms.url, 1, REGION, tmp_path)
