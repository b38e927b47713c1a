"""gcpkms:// sources and key rings: pure parsing."""

from __future__ import annotations

import pytest

from signer_proxy.errors import ConfigError
from signer_proxy.keys.gcp_kms import crc32c, parse_gcp_key, parse_key_ring

NAME = (
    "projects/my-project/locations/europe-west1/keyRings/signers/cryptoKeys/treasury/"
    "cryptoKeyVersions/3"
)


def test_a_key_version_parses_and_round_trips() -> None:
    spec = parse_gcp_key("gcpkms://" + NAME)
    assert spec.name == NAME and spec.label == "gcpkms://" + NAME


@pytest.mark.parametrize(
    "text",
    [
        NAME,  # no scheme
        "gcpkms://" + NAME.rsplit("/cryptoKeyVersions/", 1)[0],  # a key, not a version
        "gcpkms://" + NAME.replace("/3", "/0"),
        "gcpkms://" + NAME.replace("keyRings", "rings"),
        "gcpkms://" + NAME + "/extra",
    ],
)
def test_anything_but_a_key_version_is_refused(text: str) -> None:
    with pytest.raises(ConfigError, match=r"cryptoKeyVersions|key version"):
        parse_gcp_key(text)


def test_key_rings() -> None:
    ring = "projects/my-project/locations/global/keyRings/signers"
    assert parse_key_ring(ring) == ring == parse_key_ring("gcpkms://" + ring)
    with pytest.raises(ConfigError, match="not a key ring"):
        parse_key_ring(ring + "/cryptoKeys/k")


def test_crc32c_is_castagnoli() -> None:
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
