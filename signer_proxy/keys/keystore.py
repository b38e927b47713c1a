"""Local encrypted keystores (V3 JSON, as geth writes them) behind the Signer seam.

For development and for users without KMS. The private key exists only decrypted in this
process's memory; no message, log line or repr ever carries it, its password, or the
decryption library's own exception text.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from signer_proxy.errors import KeyLoadFailed
from signer_proxy.jsonrpc import loads
from signer_proxy.keys.local import LocalKeySigner


class KeystoreSigner(LocalKeySigner):
    """Signs with the key decrypted from one keystore file; named by its path."""

    def __init__(self, private_key: bytes, path: str) -> None:
        super().__init__(private_key, name=path)

    def __repr__(self) -> str:  # never the key itself
        return f"KeystoreSigner({self.address}, {self.key_name})"


def read_password(path: str) -> bytes:
    """The password in `path`: its first line, as geth reads --password files."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise KeyLoadFailed(
            f"password file {path} cannot be read ({exc.strerror}): check the path and its "
            "permissions",
            "keystore",
        ) from None
    return data.split(b"\n", 1)[0].rstrip(b"\r")


def keystore_files(path: str) -> list[Path]:
    """The keystore files `path` names: itself, or the visible files of a directory, sorted."""
    target = Path(path)
    if target.is_dir():
        return sorted(p for p in target.iterdir() if p.is_file() and not p.name.startswith("."))
    if target.is_file():
        return [target]
    raise KeyLoadFailed(
        f"keystore {path} does not exist: check --keystore (a V3 keystore file or a "
        "directory of them)",
        "keystore",
    )


def fingerprint(data: bytes, password: bytes) -> bytes:
    """What decides whether a keystore must be decrypted again on reload (no secret in it)."""
    return hashlib.sha256(
        hashlib.sha256(data).digest() + hashlib.sha256(password).digest()
    ).digest()


def private_key_from_keystore(data: bytes, password: bytes, path: str) -> bytes:
    """The private key in the keystore JSON `data`; KeyLoadFailed naming `path` when it is not
    a V3 keystore or the password does not open it. Slow on purpose (scrypt): use a thread."""
    from eth_keyfile.keyfile import decode_keyfile_json

    try:
        keyfile = loads(data)
        if not isinstance(keyfile, dict):
            raise ValueError
    except (ValueError, UnicodeDecodeError):
        raise KeyLoadFailed(
            f"keystore {path} is not JSON: is it a V3 keystore file?", "keystore"
        ) from None
    if keyfile.get("version") != 3:
        raise KeyLoadFailed(
            f"keystore {path} is version {keyfile.get('version')!r}, not a V3 keystore",
            "keystore",
        )
    try:
        private_key = bytes(decode_keyfile_json(keyfile, password))
    except ValueError as exc:
        if "MAC mismatch" in str(exc):
            raise KeyLoadFailed(
                f"keystore {path}: the password does not open it (MAC mismatch): check its "
                "password file",
                "keystore",
            ) from None
        raise KeyLoadFailed(
            f"keystore {path} cannot be decrypted ({type(exc).__name__}): is it a V3 keystore?",
            "keystore",
        ) from None
    except (KeyError, TypeError, NotImplementedError) as exc:
        raise KeyLoadFailed(
            f"keystore {path} lacks what a V3 keystore holds ({type(exc).__name__}): is it one?",
            "keystore",
        ) from None
    recorded = str(keyfile.get("address") or "").lower().removeprefix("0x")
    try:
        signer = KeystoreSigner(private_key, path)
    except ValueError:
        raise KeyLoadFailed(f"keystore {path} holds no valid secp256k1 key", "keystore") from None
    if recorded and recorded != signer.address.lower()[2:]:
        raise KeyLoadFailed(
            f"keystore {path} says it is 0x{recorded} but its key is {signer.address}: the file "
            "is damaged or edited",
            "keystore",
        )
    return private_key


def decrypt_keystore(data: bytes, password: bytes, path: str) -> KeystoreSigner:
    """The signer of the keystore JSON `data` (see private_key_from_keystore)."""
    return KeystoreSigner(private_key_from_keystore(data, password, path), path)
