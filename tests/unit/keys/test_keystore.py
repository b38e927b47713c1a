"""keys.keystore: geth's V3 keystores behind the Signer seam; nothing secret in any message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eth_account import Account
from eth_keyfile import create_keyfile_json

from signer_proxy.errors import KeyLoadFailed
from signer_proxy.eth.ecdsa import keccak256
from signer_proxy.keys.keystore import (
    decrypt_keystore,
    fingerprint,
    keystore_files,
    private_key_from_keystore,
    read_password,
)
from signer_proxy.keys.signer import sign_checked

KEY = keccak256(b"keystore test key")
PASSWORD = b"correct horse battery staple"


def keystore(kdf: str = "scrypt", key: bytes = KEY, password: bytes = PASSWORD) -> bytes:
    """A V3 keystore with a light KDF cost (geth --lightkdf: scrypt n=4096)."""
    iterations = 4096 if kdf == "scrypt" else 2
    return json.dumps(create_keyfile_json(key, password, kdf=kdf, iterations=iterations)).encode()


@pytest.mark.parametrize("kdf", ["scrypt", "pbkdf2"])
async def test_decrypt_keystore_signs_for_its_address(kdf: str) -> None:
    signer = decrypt_keystore(keystore(kdf), PASSWORD, "/k/a.json")
    assert signer.address == Account.from_key(KEY).address
    assert signer.key_name == "/k/a.json"
    await sign_checked(signer, keccak256(b"digest"))
    assert KEY.hex() not in repr(signer) and "/k/a.json" in repr(signer)


def test_geth_capitalised_crypto_field_is_accepted() -> None:
    data = json.loads(keystore())
    data["Crypto"] = data.pop("crypto")
    assert private_key_from_keystore(json.dumps(data).encode(), PASSWORD, "k") == KEY


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        pytest.param(lambda d: b"not json", "is not JSON", id="not-json"),
        pytest.param(lambda d: b"[1]", "is not JSON", id="json-list"),
        pytest.param(lambda d: _with(d, version=4), "not a V3 keystore", id="version"),
        pytest.param(lambda d: _with(d, crypto=None), "lacks what a V3 keystore", id="crypto"),
        pytest.param(lambda d: _with(d, address="00" * 20), "says it is 0x0000", id="address"),
    ],
)  # fmt: skip
def test_decrypt_keystore_refuses_naming_the_file(mutate: object, fragment: str) -> None:
    data = mutate(keystore())  # type: ignore[operator]
    with pytest.raises(KeyLoadFailed) as info:
        decrypt_keystore(data, PASSWORD, "/k/a.json")
    assert fragment in str(info.value) and "/k/a.json" in str(info.value)
    assert info.value.reason == "keystore" and not info.value.transient
    assert KEY.hex() not in str(info.value)


def _with(data: bytes, **changes: object) -> bytes:
    decoded = json.loads(data)
    decoded.update(changes)
    return json.dumps(decoded).encode()


def test_wrong_password_says_so_without_the_secrets() -> None:
    with pytest.raises(KeyLoadFailed) as info:
        decrypt_keystore(keystore(), b"wrong password", "/k/a.json")
    message = str(info.value)
    assert "the password does not open it (MAC mismatch)" in message
    assert "wrong password" not in message and PASSWORD.decode() not in message
    assert info.value.__cause__ is None and info.value.__suppress_context__


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param(b"secret\n", b"secret", id="newline"),
        pytest.param(b"secret\r\nsecond line\n", b"secret", id="crlf-first-line"),
        pytest.param(b"  spaced  ", b"  spaced  ", id="spaces-kept"),
        pytest.param(b"", b"", id="empty"),
    ],
)
def test_read_password_takes_the_first_line_as_geth_does(
    tmp_path: Path, content: bytes, expected: bytes
) -> None:
    path = tmp_path / "pw"
    path.write_bytes(content)
    assert read_password(str(path)) == expected


def test_read_password_names_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(KeyLoadFailed, match=r"password file .*nope cannot be read"):
        read_password(str(tmp_path / "nope"))


def test_keystore_files_of_a_file_a_directory_and_nothing(tmp_path: Path) -> None:
    (tmp_path / "UTC--b").write_text("{}")
    (tmp_path / "UTC--a").write_text("{}")
    (tmp_path / ".hidden").write_text("{}")
    (tmp_path / "sub").mkdir()
    assert keystore_files(str(tmp_path)) == [tmp_path / "UTC--a", tmp_path / "UTC--b"]
    assert keystore_files(str(tmp_path / "UTC--a")) == [tmp_path / "UTC--a"]
    with pytest.raises(KeyLoadFailed, match="does not exist: check --keystore"):
        keystore_files(str(tmp_path / "missing"))


def test_fingerprint_changes_with_the_file_or_the_password() -> None:
    base = fingerprint(b"file", b"pw")
    assert base == fingerprint(b"file", b"pw")
    assert base != fingerprint(b"file2", b"pw")
    assert base != fingerprint(b"file", b"pw2")
    assert b"pw" not in base
