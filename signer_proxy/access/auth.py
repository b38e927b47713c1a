"""Who is calling: API keys (kept only as salted hashes) and client certificates, each mapped
to a client name. Pure: the transport extracts `Credentials` from a request
(`transport.access.authenticate`) and asks the `Authenticator`.

API keys are random tokens, not passwords: `signer-proxy hash-api-key --generate` makes one
with 256 bits of entropy, and shorter keys than MIN_API_KEY_LENGTH are refused. For such keys
a salted SHA-256 is as strong as a slow hash, and it keeps an unauthenticated request cheap
(a slow hash would let every bad request burn tens of milliseconds of CPU per configured key).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from signer_proxy.errors import ConfigError, Unauthorized

HASH_SCHEME = "sha256"
MIN_API_KEY_LENGTH = 32
API_KEY_PREFIX = "spk_"
_SALT_BYTES = 16
_HASH_RE = re.compile(r"^sha256\$([0-9a-f]{32})\$([0-9a-f]{64})$")
CLIENT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
ANONYMOUS = "anonymous"


@dataclass(frozen=True, slots=True)
class Identity:
    """An authenticated caller: the client name and how it proved it."""

    client: str
    method: str  # "api_key", "api_key_query", "client_cert" or "none" (no auth configured)


ANONYMOUS_IDENTITY = Identity(ANONYMOUS, "none")


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a request offers: a Bearer token, a ?key= value, a verified client certificate."""

    bearer: str | None = None
    query_key: str | None = None
    cert_names: tuple[str, ...] = ()  # subject CN and SAN values of a CA-verified certificate


def generate_api_key() -> str:
    """A new random API key (256 bits, URL-safe, recognisable by its prefix)."""
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str, salt: bytes | None = None) -> str:
    """sha256$<salt hex>$<sha256(salt ‖ key) hex>; ValueError for a key too short to be random."""
    if len(key) < MIN_API_KEY_LENGTH:
        raise ValueError(
            f"an API key must be at least {MIN_API_KEY_LENGTH} characters of random data; "
            "generate one with `signer-proxy hash-api-key --generate`"
        )
    salt = secrets.token_bytes(_SALT_BYTES) if salt is None else salt
    digest = hashlib.sha256(salt + key.encode()).hexdigest()
    return f"{HASH_SCHEME}${salt.hex()}${digest}"


def is_api_key_hash(text: str) -> bool:
    return _HASH_RE.match(text) is not None


def _parse_hash(stored: str) -> tuple[bytes, bytes]:
    match = _HASH_RE.match(stored)
    if match is None:
        raise ValueError("not a sha256$<salt>$<hash> API key hash")
    return bytes.fromhex(match.group(1)), bytes.fromhex(match.group(2))


def cert_names(peercert: Mapping[str, Any] | None) -> tuple[str, ...]:
    """The subject common names and subjectAltName values of ssl's getpeercert() dict."""
    if not peercert:
        return ()
    names: list[str] = []
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                names.append(str(value))
    for _kind, value in peercert.get("subjectAltName", ()):
        names.append(str(value))
    return tuple(names)


class Authenticator:
    """Maps credentials to a client: API key hashes per client, certificate names per client."""

    def __init__(
        self,
        api_keys: Mapping[str, Iterable[str]],
        cert_clients: Mapping[str, str] | None = None,
        *,
        required: bool,
        allow_query_key: bool = False,
    ) -> None:
        self._keys: list[tuple[str, bytes, bytes]] = []
        self._cert_clients: dict[str, str] = {}
        self.update(api_keys, cert_clients)
        self.required = required
        self.allow_query_key = allow_query_key

    def update(
        self, api_keys: Mapping[str, Iterable[str]], cert_clients: Mapping[str, str] | None
    ) -> None:
        """Serve these API keys and certificate names from now on (a reload): each is
        replaced in one assignment, so a call sees the old set or the new one."""
        keys = []
        for client, hashes in api_keys.items():
            for stored in hashes:
                salt, digest = _parse_hash(stored)
                keys.append((client, salt, digest))
        self._keys, self._cert_clients = keys, dict(cert_clients or {})

    @property
    def clients(self) -> frozenset[str]:
        """Every client name that can authenticate (by key or certificate)."""
        return frozenset(c for c, _, _ in self._keys) | frozenset(self._cert_clients.values())

    def _client_for_key(self, key: str) -> str | None:
        encoded = key.encode()
        found: str | None = None
        # Every stored hash is compared (no early exit), so timing does not tell which matched.
        for client, salt, digest in self._keys:
            if hmac.compare_digest(hashlib.sha256(salt + encoded).digest(), digest):
                found = found or client
        return found

    def authenticate(self, credentials: Credentials) -> Identity:
        """The caller's identity; Unauthorized saying what to send when nothing valid is given."""
        if not self.required:
            return ANONYMOUS_IDENTITY
        if credentials.bearer is not None:
            client = self._client_for_key(credentials.bearer)
            if client is None:
                raise Unauthorized("the API key is not valid; check the key you were given")
            return Identity(client, "api_key")
        if credentials.query_key is not None:
            if not self.allow_query_key:
                raise Unauthorized(
                    "API keys in the URL (?key=) are not accepted by this proxy; send the key "
                    "in an Authorization: Bearer header"
                )
            client = self._client_for_key(credentials.query_key)
            if client is None:
                raise Unauthorized("the API key is not valid; check the key you were given")
            return Identity(client, "api_key_query")
        for name in credentials.cert_names:
            client = self._cert_clients.get(name)
            if client is not None:
                return Identity(client, "client_cert")
        if credentials.cert_names:
            raise Unauthorized(
                f"the client certificate ({credentials.cert_names[0]}) is not mapped to a "
                "client; ask the operator to add it to a client's client_cert_names"
            )
        raise Unauthorized(
            "authentication required: send an API key as Authorization: Bearer <key>"
            + (" (or ?key=<key>)" if self.allow_query_key else "")
            + " or present a client certificate"
        )


def load_api_keys(path: str) -> dict[str, tuple[str, ...]]:
    """Client → API key hashes from a YAML file (client: hash or [hashes]) or a directory
    (a Kubernetes Secret mount: one file per client, one hash per line)."""
    source = Path(path)
    entries: dict[str, list[str]] = {}
    try:
        if source.is_dir():
            for item in sorted(source.iterdir()):
                if item.name.startswith(".") or not item.is_file():
                    continue  # Kubernetes' ..data links and hidden files
                lines = item.read_text().splitlines()
                entries[item.name] = [
                    line.strip() for line in lines if line.strip() and not line.startswith("#")
                ]
        else:
            loaded = yaml.safe_load(source.read_text()) or {}
            if not isinstance(loaded, dict):
                raise ConfigError(
                    f"API keys file {path} must map each client name to a hash or a list of hashes"
                )
            for client, value in loaded.items():
                values = value if isinstance(value, list) else [value]
                if not all(isinstance(v, str) for v in values):
                    raise ConfigError(
                        f"API keys file {path}: client {client}'s hashes must be strings"
                    )
                entries[str(client)] = [v.strip() for v in values]
    except OSError as exc:
        raise ConfigError(f"API keys file {path} cannot be read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"API keys file {path} is not valid YAML: {exc}") from None
    result: dict[str, tuple[str, ...]] = {}
    for client, hashes in entries.items():
        if not CLIENT_NAME_RE.match(client):
            raise ConfigError(
                f"API keys file {path}: {client!r} is not a valid client name (letters, digits, "
                "._@- and at most 64 characters)"
            )
        for stored in hashes:
            if not is_api_key_hash(stored):
                raise ConfigError(
                    f"API keys file {path}: client {client} has an entry that is not a "
                    "sha256$<salt>$<hash> hash; store hashes from `signer-proxy hash-api-key`, "
                    "never the keys themselves"
                )
        result[client] = tuple(hashes)
    return result
