"""keys.pkcs11_keys without a token: RFC 7512 sources, the PIN's sources, error names, and
the raw r‖s a token returns made canonical."""

from __future__ import annotations

from pathlib import Path

import coincurve
import pytest

from signer_proxy.config import Settings
from signer_proxy.errors import ConfigError, KeyLoadFailed
from signer_proxy.eth.ecdsa import SECP256K1_N, keccak256, raw_signature
from signer_proxy.keys.pkcs11_keys import (
    ckr_name,
    is_lost,
    key_uri,
    parse_uri,
    public_key_from_ec_point,
    read_pin,
)

SETTINGS = Settings(pkcs11_module="/lib/p11.so", pkcs11_pin_file="/run/pin", pkcs11_sessions=2)


def test_a_uri_names_token_key_module_and_pin() -> None:
    spec = parse_uri("pkcs11:token=my%20hsm;object=treasury;id=%01%ff", SETTINGS)
    assert (spec.token, spec.object, spec.id) == ("my hsm", "treasury", b"\x01\xff")
    assert (spec.module, spec.pin_file, spec.sessions) == ("/lib/p11.so", "/run/pin", 2)
    assert not spec.lists

    listing = parse_uri(
        "pkcs11:serial=7a3f?module-path=/opt/x.so&pin-source=file:/p&x-label-prefix=hot/", None
    )
    assert (listing.serial, listing.module, listing.pin_file) == ("7a3f", "/opt/x.so", "/p")
    assert listing.lists and listing.label_prefix == "hot/"
    assert listing.token_name == "serial=7a3f"


def test_the_pin_may_come_from_a_variable_and_is_never_in_a_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = parse_uri("pkcs11:token=t", Settings(pkcs11_module="/m.so", pkcs11_pin_env="HSM_PIN"))
    monkeypatch.setenv("HSM_PIN", "s3cret-pin")
    assert read_pin(spec) == "s3cret-pin"
    monkeypatch.setenv("HSM_PIN", "")
    with pytest.raises(KeyLoadFailed, match="the variable HSM_PIN is empty"):
        read_pin(spec)
    missing = parse_uri(f"pkcs11:token=t?module-path=/m.so&pin-source=file:{tmp_path}/none", None)
    with pytest.raises(KeyLoadFailed, match=r"PIN file .*none cannot be read"):
        read_pin(missing)


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("pkcs11:object=k", "name the token"),
        ("pkcs11:token=t;object=k?pin-value=1234", "pin-value would put the PIN"),
        ("pkcs11:token=t;slot=3", "unknown path attribute 'slot'"),
        ("pkcs11:token=t;token=u", "token is given twice"),
        ("pkcs11:token=t;type=public", "only private keys sign"),
        ("pkcs11:token=t?pin-source=https://x", "pin-source must be file:PATH"),
        ("pkcs11:token=t;object", "must be NAME=VALUE"),
    ],
)
def test_a_bad_uri_says_what_to_fix(uri: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        parse_uri(uri, SETTINGS)
    assert "1234" not in str(info.value)


def test_module_and_pin_are_required() -> None:
    with pytest.raises(ConfigError, match="no PKCS#11 module"):
        parse_uri("pkcs11:token=t", Settings(pkcs11_pin_file="/p"))
    with pytest.raises(ConfigError, match="no PIN"):
        parse_uri("pkcs11:token=t", Settings(pkcs11_module="/m.so"))


def test_a_key_uri_round_trips() -> None:
    uri = key_uri("token=t", "a b;c", b"\x00\x10")
    assert uri == "pkcs11:token=t;object=a%20b%3Bc;id=%00%10"
    spec = parse_uri(uri, SETTINGS)
    assert (spec.object, spec.id) == ("a b;c", b"\x00\x10")


def test_errors_carry_their_ckr_names_and_lost_sessions_are_told_apart() -> None:
    from pkcs11 import exceptions

    assert ckr_name(exceptions.PinIncorrect()) == "CKR_PIN_INCORRECT"
    assert ckr_name(exceptions.TokenNotPresent()) == "CKR_TOKEN_NOT_PRESENT"
    assert ckr_name(exceptions.PKCS11Error("Initialisation error (not initialized).")) == (
        "CKR_CRYPTOKI_NOT_INITIALIZED"
    )
    assert is_lost(exceptions.SessionHandleInvalid()) and is_lost(exceptions.DeviceRemoved())
    assert is_lost(exceptions.UserNotLoggedIn()) and is_lost(exceptions.ObjectHandleInvalid())
    assert not is_lost(exceptions.PinIncorrect()) and not is_lost(exceptions.MechanismInvalid())


def test_a_high_s_raw_signature_becomes_low_s_with_the_right_recovery_bit() -> None:
    key = coincurve.PrivateKey(keccak256(b"pkcs11 unit"))
    public_key = key.public_key.format(compressed=False)
    digest = keccak256(b"message")
    raw = key.sign_recoverable(digest, hasher=None)
    r, s = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:64], "big")
    high = r.to_bytes(32, "big") + (SECP256K1_N - s).to_bytes(32, "big")  # as an HSM may
    signature = raw_signature(high, digest, public_key)
    assert (signature.r, signature.s, signature.y_parity) == (r, s, raw[64])
    assert public_key_from_ec_point(b"\x04\x41" + public_key) == public_key
    with pytest.raises(ValueError, match="must be 64 bytes"):
        raw_signature(high[:63], digest, public_key)


async def test_a_module_that_cannot_be_loaded_is_named_and_not_retried_as_transient(
    tmp_path: Path,
) -> None:
    from signer_proxy.keys.pkcs11_keys import parse_source

    (tmp_path / "pin").write_text("1234\n")
    source = parse_source(
        f"pkcs11:token=t;object=k?module-path={tmp_path}/missing.so&pin-source=file:{tmp_path}/pin",
        None,
    )
    from signer_proxy.keys.aws_clients import KmsClients

    async with KmsClients(Settings()) as clients:
        [key] = await source.load({}, clients)
    assert key.signer is None and key.failure is not None and key.required
    assert (key.failure.reason, key.failure.transient) == ("invalid", False)
    assert "the PKCS#11 module cannot be loaded" in str(key.failure)
    assert "missing.so" in str(key.failure) and "1234" not in str(key.failure)


def test_the_user_type_setting_picks_c_logins_user_type() -> None:
    def user_type(name: str) -> int:
        settings = Settings(pkcs11_module="/m.so", pkcs11_pin_file="/p", pkcs11_user_type=name)
        return parse_uri("pkcs11:token=t", settings).user_type

    assert user_type("user") == 1  # CKU_USER
    assert user_type("crypto-user") == 0x80000001  # Luna's CKU_CRYPTO_USER


def test_a_refused_user_type_is_named_and_not_taken_for_a_lost_token() -> None:
    from pkcs11.exceptions import PKCS11Error

    from signer_proxy.keys.pkcs11_keys import load_failure

    refused = PKCS11Error("User type invalid. Should never see this.")  # python-pkcs11's
    assert ckr_name(refused) == "CKR_USER_TYPE_INVALID" and not is_lost(refused)
    failure = load_failure(refused, "PKCS#11 pkcs11:token=t")
    assert (failure.reason, failure.transient) == ("access_denied", False)
