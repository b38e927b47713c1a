"""Persist the KMS emulator's dev keys in a directory and restore them into moto at start.

moto keeps keys in process memory only, so `signer-proxy dev --state-dir DIR` records each
key it creates in DIR/kms-keys.json: alias, key id, address and the private key as PKCS#8 PEM
(the file is created 0600 in a 0700 directory; it is a *dev* secret, in the clear, like
anvil's well-known keys). At the next start every recorded key is put back into moto's KMS
backend under the same key id, so its ARN, alias and address are unchanged. Restoring writes
moto's in-process backend directly (KMS has no API that imports an asymmetric private key
into moto), so the emulator must run in this process.

Private keys never leave this module except into moto and the state file: `SavedKey` hides
its PEM from repr, and errors name the file, never its contents.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from signer_proxy.errors import ConfigError

STATE_FILE = "kms-keys.json"
STATE_VERSION = 1
KEY_SPEC = "ECC_SECG_P256K1"
KEY_USAGE = "SIGN_VERIFY"


@dataclass(frozen=True)
class SavedKey:
    """One recorded dev key; `private_key_pem` is secret and kept out of repr."""

    alias: str
    key_id: str
    address: str
    private_key_pem: str = field(repr=False)


def state_path(state_dir: Path) -> Path:
    return state_dir / STATE_FILE


def parse_state(text: str, source: str) -> list[SavedKey]:
    """The keys recorded in a state file's text; ConfigError naming `source` if malformed."""

    def bad(why: str) -> ConfigError:
        return ConfigError(
            f"{source} is not a signer-proxy dev state file ({why}): move it away or choose "
            "another --state-dir"
        )

    try:
        loaded = json.loads(text)
    except ValueError:
        raise bad("not JSON") from None
    if not isinstance(loaded, dict) or loaded.get("version") != STATE_VERSION:
        raise bad(f"expected an object with version {STATE_VERSION}")
    entries = loaded.get("keys")
    if not isinstance(entries, list):
        raise bad('"keys" must be a list')
    keys: list[SavedKey] = []
    for index, entry in enumerate(entries):
        names = ("alias", "key_id", "address", "private_key_pem")
        if not isinstance(entry, dict) or not all(isinstance(entry.get(n), str) for n in names):
            raise bad(f"key {index} needs the string fields {', '.join(names)}")
        if not entry["alias"].startswith("alias/"):
            raise bad(f"key {index}: alias must start with alias/")
        keys.append(SavedKey(*(entry[n] for n in names)))
    if len({k.alias for k in keys}) != len(keys) or len({k.key_id for k in keys}) != len(keys):
        raise bad("an alias or key id appears twice")
    return keys


def render_state(keys: Sequence[SavedKey]) -> str:
    """The state file's text for `keys`."""
    entries = [
        {"alias": k.alias, "key_id": k.key_id, "address": k.address,
         "private_key_pem": k.private_key_pem}
        for k in keys
    ]  # fmt: skip
    return json.dumps({"version": STATE_VERSION, "keys": entries}, indent=2) + "\n"


def load_state(state_dir: Path) -> list[SavedKey]:
    """The keys recorded in `state_dir` ([] when it has none yet)."""
    path = state_path(state_dir)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    return parse_state(text, str(path))


def save_state(state_dir: Path, keys: Sequence[SavedKey]) -> None:
    """Write the state file atomically, readable by its owner only."""
    path = state_path(state_dir)
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(render_state(keys))
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, path)
    except OSError as exc:
        raise ConfigError(
            f"cannot write {path}: {exc.strerror}; check --state-dir is writable"
        ) from None


def _backend(region: str) -> Any:
    from moto.core.models import DEFAULT_ACCOUNT_ID
    from moto.kms.models import kms_backends

    # Requests signed with the dev credentials ("testing") land in moto's default account.
    return kms_backends[DEFAULT_ACCOUNT_ID][region]


def export_key(region: str, alias: str, key_id: str, address: str) -> SavedKey:
    """Read one key's private key out of the in-process emulator, for the state file."""
    from cryptography.hazmat.primitives import serialization

    key = _backend(region).keys[key_id]
    pem = key.private_key.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return SavedKey(alias=alias, key_id=key_id, address=address, private_key_pem=pem.decode())


def restore_key(region: str, saved: SavedKey) -> None:
    """Put a recorded key back into the in-process emulator: same key id, alias and key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        private_key = serialization.load_pem_private_key(saved.private_key_pem.encode(), None)
    except (ValueError, TypeError):
        raise ConfigError(
            f"the state file's key {saved.alias} does not hold a readable private key: "
            "move the state file away to start with new keys"
        ) from None
    if not isinstance(private_key, ec.EllipticCurvePrivateKey) or not isinstance(
        private_key.curve, ec.SECP256K1
    ):
        raise ConfigError(f"the state file's key {saved.alias} is not a secp256k1 key")
    backend = _backend(region)
    # moto offers no way to choose a key id or key material: create a key of the right
    # shape, then give it the recorded id and private key before anything can see it.
    key = backend.create_key(None, KEY_USAGE, KEY_SPEC, "signer-proxy dev key", None)
    del backend.keys[key.id]
    key.id = saved.key_id
    key.arn = key.arn.rsplit("/", 1)[0] + "/" + saved.key_id
    key.private_key.private_key = private_key
    backend.keys[saved.key_id] = key
    backend.create_alias(saved.key_id, saved.alias)
