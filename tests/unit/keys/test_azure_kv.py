"""azurekv:// sources and the raw r ‖ s signature Key Vault returns."""

from __future__ import annotations

import coincurve
import pytest

from signer_proxy.errors import ConfigError
from signer_proxy.eth.ecdsa import (
    SECP256K1_HALF_N,
    SECP256K1_N,
    SignatureError,
    keccak256,
    raw_signature,
)
from signer_proxy.keys.azure_kv import AzureKeySpec, parse_azure_key


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        (
            "azurekv://myvault/keys/signer",
            AzureKeySpec("https://myvault.vault.azure.net", "signer"),
        ),
        (
            "azurekv://myhsm.managedhsm.azure.net/keys/k-1/0123abcd",
            AzureKeySpec("https://myhsm.managedhsm.azure.net", "k-1", "0123abcd"),
        ),
        ("azurekv://127.0.0.1:8443/keys/k", AzureKeySpec("https://127.0.0.1:8443", "k")),
    ],
)
def test_sources_parse(text: str, spec: AzureKeySpec) -> None:
    assert parse_azure_key(text) == spec


@pytest.mark.parametrize(
    "text",
    [
        "myvault/keys/signer",
        "azurekv://myvault/secrets/signer",
        "azurekv://myvault/keys/",
        "azurekv://myvault/keys/a/b/c",
        "azurekv://my_vault/keys/k",
        "azurekv://myvault/keys/bad_name",
        "azurekv://myvault/keys/k/not-hex!",
    ],
)
def test_bad_sources_are_refused_with_an_example(text: str) -> None:
    with pytest.raises(ConfigError, match=r"azurekv|is not|must be"):
        parse_azure_key(text)


def test_label_round_trips() -> None:
    text = "azurekv://myhsm.managedhsm.azure.net/keys/k/01ab"
    assert parse_azure_key(text).label == text


def test_raw_signature_is_made_low_s_and_recoverable() -> None:
    key = coincurve.PrivateKey()
    public = key.public_key.format(compressed=False)
    digest = keccak256(b"raw")
    sig = key.sign_recoverable(digest, hasher=None)
    r, s = sig[:32], int.from_bytes(sig[32:64], "big")
    high = r + (SECP256K1_N - s).to_bytes(32, "big")
    for raw in (sig[:64], high):
        canonical = raw_signature(raw, digest, public)
        assert canonical.s == s <= SECP256K1_HALF_N and canonical.y_parity == sig[64]


def test_a_signature_of_another_key_or_length_is_refused() -> None:
    digest = keccak256(b"raw")
    other = coincurve.PrivateKey().sign_recoverable(digest, hasher=None)[:64]
    public = coincurve.PrivateKey().public_key.format(compressed=False)
    with pytest.raises(SignatureError, match="does not recover"):
        raw_signature(other, digest, public)
    with pytest.raises(SignatureError, match="64 bytes"):
        raw_signature(other[:63], digest, public)
    with pytest.raises(SignatureError, match="group order"):
        raw_signature(b"\x00" * 64, digest, public)
