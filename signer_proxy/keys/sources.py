"""Where keys come from, as written in the settings: pure parsing, no I/O.

Three sources, combinable in one config:

- explicit KMS keys (`--kms-key`): an id, ARN, alias or alias ARN, optionally followed by its
  own options, `KEY?region=eu-west-1&role_arn=arn:aws:iam::222233334444:role/signer
  &endpoint_url=https://…`, so one proxy serves keys of several Regions and accounts;
- discovery in the default Region and account: tag filters (`--kms-tag K=V`, all must
  match) and/or alias prefixes (`--kms-alias-prefix alias/signer/`);
- local V3 keystores (`--keystore FILE|DIR[?password_file=PW]`);
- keys of the other backends (`--key SOURCE`: an RFC 7512 `pkcs11:` URI, `azurekv://…`,
  `gcpkms://…`), each parsed by the backend its scheme names (keys/backends.py), and their
  discovery (`--azure-vault`, `--gcp-key-ring`). An `azurekv://` or `gcpkms://` key written
  in --kms-key (as earlier versions took them) is that backend's too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from signer_proxy.config import Settings, load_settings
from signer_proxy.errors import ConfigError
from signer_proxy.keys.backends import (
    BackendSource,
    discovery_sources,
    is_backend_source,
    parse_key_source,
)

KMS_KEY_OPTIONS = ("region", "endpoint_url", "role_arn")
KEYSTORE_OPTIONS = ("password_file",)

_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")
_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$")
_TAG_KEY = re.compile(r"^[\w.:/=+@ -]{1,128}$")


@dataclass(frozen=True, slots=True)
class KmsKeySpec:
    """One `--kms-key`: the key as written, and where (Region, endpoint, role) to reach it."""

    ref: str
    region: str = ""
    endpoint_url: str = ""
    role_arn: str = ""

    @property
    def label(self) -> str:
        """The key as operators wrote it, options included (logs, errors, `keys list`)."""
        options = [
            f"{name}={getattr(self, name)}" for name in KMS_KEY_OPTIONS if getattr(self, name)
        ]
        return self.ref + ("?" + "&".join(options) if options else "")


@dataclass(frozen=True, slots=True)
class KeystoreSpec:
    """One `--keystore`: a V3 keystore file or a directory of them, and its password file."""

    path: str
    password_file: str


@dataclass(frozen=True, slots=True)
class DiscoverySpec:
    """Which keys discovery selects: every tag must match; any alias prefix may."""

    tags: tuple[tuple[str, str], ...] = ()
    alias_prefixes: tuple[str, ...] = ()

    @property
    def enabled(self) -> bool:
        return bool(self.tags or self.alias_prefixes)

    def describe(self) -> str:
        parts = [f"tag {k}={v}" for k, v in self.tags]
        parts += [f"alias prefix {p}" for p in self.alias_prefixes]
        return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class KeySources:
    """Every key source of one configuration."""

    kms: tuple[KmsKeySpec, ...] = ()
    discovery: DiscoverySpec = DiscoverySpec()
    keystores: tuple[KeystoreSpec, ...] = ()
    # (backend source name, parsed source) of every --key
    others: tuple[tuple[str, BackendSource], ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.kms or self.discovery.enabled or self.keystores or self.others)


def _split_options(text: str, what: str, known: tuple[str, ...]) -> tuple[str, dict[str, str]]:
    head, sep, query = text.partition("?")
    head = head.strip()
    if not head:
        raise ConfigError(f"{what} {text!r} names nothing before its options")
    options: dict[str, str] = {}
    if sep:
        try:
            pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
        except ValueError:
            raise ConfigError(
                f"{what} {text!r}: options must be NAME=VALUE joined with &, e.g. "
                f"{head}?{known[0]}=…"
            ) from None
        for name, value in pairs:
            if name not in known:
                raise ConfigError(
                    f"{what} {head} has an unknown option {name!r}; known: {', '.join(known)}"
                )
            if name in options:
                raise ConfigError(f"{what} {head} gives {name} twice")
            if not value:
                raise ConfigError(f"{what} {head}: option {name} is empty")
            options[name] = value
    return head, options


def parse_kms_key(text: str) -> KmsKeySpec:
    """`KEY[?region=R&endpoint_url=URL&role_arn=ARN]` as a KmsKeySpec; ConfigError naming it."""
    ref, options = _split_options(text, "--kms-key", KMS_KEY_OPTIONS)
    region = options.get("region", "")
    if region and not _REGION.match(region):
        raise ConfigError(f"--kms-key {ref}: region {region!r} is not a Region name like us-east-1")
    endpoint = options.get("endpoint_url", "")
    if endpoint and not re.match(r"^https?://[^/?#]+", endpoint):
        raise ConfigError(f"--kms-key {ref}: endpoint_url must be an http(s):// URL")
    role = options.get("role_arn", "")
    if role and not _ROLE_ARN.match(role):
        raise ConfigError(
            f"--kms-key {ref}: role_arn {role!r} is not an IAM role ARN like "
            "arn:aws:iam::222233334444:role/signer"
        )
    return KmsKeySpec(ref, region, endpoint, role)


def parse_keystore(text: str, default_password_file: str) -> KeystoreSpec:
    """`PATH[?password_file=PW]`; the default password file applies when none is given."""
    path, options = _split_options(text, "--keystore", KEYSTORE_OPTIONS)
    password_file = options.get("password_file", default_password_file)
    if not password_file:
        raise ConfigError(
            f"--keystore {path} has no password file: add ?password_file=FILE to it or set "
            "--keystore-password-file"
        )
    return KeystoreSpec(path, password_file)


def parse_tag(text: str) -> tuple[str, str]:
    """`KEY=VALUE` (the value may be empty) for --kms-tag."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--kms-tag {text!r} must be KEY=VALUE, e.g. env=prod")
    if not _TAG_KEY.match(key):
        raise ConfigError(f"--kms-tag {text!r}: {key!r} is not a valid KMS tag key")
    return key, value.strip()


def parse_alias_prefix(text: str) -> str:
    """An alias prefix for discovery: starts with alias/, not an AWS-managed alias."""
    prefix = text.strip()
    if not prefix.startswith("alias/") or prefix == "alias/":
        raise ConfigError(
            f"--kms-alias-prefix {text!r} must start with alias/ and name something, "
            "e.g. alias/signer/"
        )
    if prefix.startswith("alias/aws/"):
        raise ConfigError(
            f"--kms-alias-prefix {text!r} selects AWS managed keys, which cannot sign"
        )
    return prefix


def key_sources(
    kms_keys: tuple[str, ...],
    tags: tuple[str, ...] = (),
    alias_prefixes: tuple[str, ...] = (),
    keystores: tuple[str, ...] = (),
    keystore_password_file: str = "",
    others: tuple[str, ...] = (),
    settings: Settings | None = None,
) -> KeySources:
    """All sources of a configuration, parsed and checked; ConfigError names the bad entry."""
    parsed_tags = tuple(parse_tag(t) for t in tags)
    keys = [k for k, _ in parsed_tags]
    duplicated = sorted({k for k in keys if keys.count(k) > 1})
    if duplicated:
        raise ConfigError(
            f"--kms-tag gives {', '.join(duplicated)} more than once: a key has one value "
            "per tag, so no key could match"
        )
    # An azurekv:// or gcpkms:// key in --kms-key belongs to its backend (as with --key).
    moved = tuple(k for k in kms_keys if is_backend_source(k))
    return KeySources(
        kms=tuple(parse_kms_key(k) for k in kms_keys if k not in moved),
        discovery=DiscoverySpec(parsed_tags, tuple(parse_alias_prefix(p) for p in alias_prefixes)),
        keystores=tuple(parse_keystore(k, keystore_password_file) for k in keystores),
        others=tuple(parse_key_source(text, settings) for text in (*moved, *others))
        + tuple(discovery_sources(settings) if settings is not None else ()),
    )


def from_settings(settings: Settings) -> KeySources:
    """The key sources a Settings names."""
    return key_sources(
        settings.kms_keys,
        settings.kms_discover_tags,
        settings.kms_discover_alias_prefixes,
        settings.keystores,
        settings.keystore_password_file,
        settings.key_sources,
        settings,
    )


def load_checked(
    flags: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
    config_file: str | None = None,
) -> Settings:
    """`config.load_settings`, then every key source parsed, so that a malformed key, tag,
    prefix or keystore names its flag at load time, before anything starts."""
    settings = load_settings(flags, environ, config_file)
    from_settings(settings)
    return settings
