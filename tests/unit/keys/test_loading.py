"""keys.loading with keystores (no KMS needed): a reload reuses what did not change, the same
key from two files is refused, and `strict` names every failure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eth_account import Account
from eth_keyfile import create_keyfile_json

from signer_proxy.config import Settings
from signer_proxy.errors import ConfigError
from signer_proxy.eth.ecdsa import keccak256
from signer_proxy.keys.aws_clients import KmsClients
from signer_proxy.keys.loading import KeyLoad, load_keys
from signer_proxy.keys.sources import KeySources, KeystoreSpec

KEYS = [keccak256(b"loading %d" % i) for i in range(2)]


def keystore(path: Path, key: bytes, password: bytes = b"pw") -> Path:
    path.write_text(json.dumps(create_keyfile_json(key, password, kdf="pbkdf2", iterations=2)))
    return path


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path]:
    directory = tmp_path / "keystore"
    directory.mkdir()
    keystore(directory / "a", KEYS[0])
    keystore(directory / "b", KEYS[1])
    password = tmp_path / "pw"
    password.write_text("pw\n")
    return directory, password


async def load(
    sources: KeySources, previous: KeyLoad | None = None, strict: bool = False
) -> KeyLoad:
    async with KmsClients(Settings()) as clients:
        return await load_keys(sources, clients, previous, strict=strict)


async def test_a_reload_decrypts_only_what_changed(setup: tuple[Path, Path]) -> None:
    directory, password = setup
    sources = KeySources(keystores=(KeystoreSpec(str(directory), str(password)),))
    first = await load(sources)
    assert [s.address for s in first.signers] == [Account.from_key(k).address for k in KEYS]

    keystore(directory / "b", keccak256(b"replaced"))
    second = await load(sources, first)

    assert second.signers[0] is first.signers[0]  # unchanged file and password: not decrypted
    assert second.signers[1].address == Account.from_key(keccak256(b"replaced")).address


async def test_one_address_from_two_files_is_refused_naming_both(
    setup: tuple[Path, Path], tmp_path: Path
) -> None:
    directory, password = setup
    copy = keystore(tmp_path / "copy-of-a", KEYS[0])  # the same key in another file
    named_twice = KeystoreSpec(str(directory / "a"), str(password))
    loaded = await load(
        KeySources(
            keystores=(
                named_twice,
                KeystoreSpec(str(directory), str(password)),
                KeystoreSpec(str(copy), str(password)),
            )
        )
    )

    assert len(loaded.signers) == 2
    states = [(s.ref, s.state, s.reason) for s in loaded.statuses]
    assert states == [  # the same file twice is no news; the same key in another file is
        (str(directory / "a"), "loaded", ""),
        (str(directory / "b"), "loaded", ""),
        (str(copy), "failed", "duplicate"),
    ]
    address = Account.from_key(KEYS[0]).address
    assert loaded.statuses[2].message == (
        f"{address} is held by both {directory / 'a'} (keystore) and {copy} (keystore): only "
        "the first signs; remove one of them from the configuration"
    )
    assert loaded.failures_by_source() == {"keystore": 1}
    with pytest.raises(ConfigError, match=f"{address} is held by both .*a .keystore. and"):
        await load(KeySources(keystores=(named_twice, KeystoreSpec(str(copy), str(password)))),
                   strict=True)  # fmt: skip


async def test_failures_are_reported_or_refused_with_strict(
    setup: tuple[Path, Path], tmp_path: Path
) -> None:
    directory, password = setup
    wrong = tmp_path / "wrong"
    wrong.write_text("nope\n")
    sources = KeySources(
        keystores=(
            KeystoreSpec(str(directory / "a"), str(password)),
            KeystoreSpec(str(directory / "b"), str(wrong)),
            KeystoreSpec(str(tmp_path / "missing"), str(password)),
        )
    )
    loaded = await load(sources)
    assert len(loaded.signers) == 1
    assert [(s.reason, s.state) for s in loaded.failures()] == [("keystore", "failed")] * 2
    assert loaded.failures_by_source() == {"keystore": 2}

    with pytest.raises(ConfigError) as info:
        await load(sources, strict=True)
    message = str(info.value)
    assert message.startswith("2 keys cannot be used:")
    assert "MAC mismatch" in message and "missing does not exist" in message
