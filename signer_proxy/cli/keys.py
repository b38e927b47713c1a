"""`signer-proxy keys list|create|import|verify` and `signer-proxy address KEY`.

Human tables by default, `--json` for scripts. Exit status: 0 done, 1 the command could not
do its job (a key failed verification, KMS refused), 2 a usage or configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from signer_proxy.config import FIELDS, Settings, env_name, flag_name
from signer_proxy.errors import ConfigError, KeyCommandFailed, KeyLoadFailed
from signer_proxy.keys.sources import load_checked

Command = Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, tuple[Any, str]]]
KMS_FLAGS = (
    "aws_region", "aws_endpoint_url", "aws_sts_endpoint_url", "kms_timeout", "log_level",
    "pkcs11_module", "pkcs11_pin_file", "pkcs11_pin_env",
)  # fmt: skip
MAX_VALID_DAYS = 365  # AWS's limit for ValidTo


# --- parsers ------------------------------------------------------------------------------


def add_keys_commands(
    commands: Any, add_settings_flags: Callable[[argparse.ArgumentParser], None]
) -> None:
    """Register `keys …` and `address` on the top-level subcommands."""
    keys = commands.add_parser(
        "keys",
        help="list, create, import (BYOK) and verify signing keys",
        description="Key management. `keys list` and `keys verify` read the same settings as "
        "serve (--config, flags, environment).",
    )
    sub = keys.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")

    listing = sub.add_parser(
        "list", help="every key the configuration names: address, key, region, state, source"
    )
    add_settings_flags(listing)
    _json_flag(listing)
    listing.set_defaults(run_keys_command=_runner(_list, full_settings=True))

    create = sub.add_parser(
        "create",
        help="create an ECC_SECG_P256K1 SIGN_VERIFY key with an alias (or, --backend pkcs11, "
        "a non-extractable secp256k1 pair on a token); print its address",
    )
    _kms_flags(create)
    _backend_flags(create)
    create.add_argument(
        "--alias", default="", help="the KMS key's alias, e.g. alias/treasury (kms: required)"
    )
    _tag_flag(create)
    create.add_argument("--description", default="", help="the key's description in KMS")
    create.set_defaults(run_keys_command=_runner(_create))

    importing = sub.add_parser(
        "import",
        help="import a private key you hold into an EXTERNAL-origin KMS key (BYOK)",
        description="Create an EXTERNAL-origin key (or use --key-id), wrap the private key "
        "with KMS's import parameters, import it, and report success only once KMS proves "
        "it holds that key (same address, a test signature that recovers to it).",
    )
    _kms_flags(importing)
    _backend_flags(importing)
    importing.add_argument(
        "--key-id", help="an existing EXTERNAL-origin key (id, ARN or alias); else one is created"
    )
    importing.add_argument("--alias", default="", help="alias for the key created (no --key-id)")
    _tag_flag(importing)
    importing.add_argument("--description", default="", help="description of the key created")
    source = importing.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--private-key-file", metavar="FILE", help="the key as 64 hex digits or a PEM EC key"
    )
    source.add_argument("--keystore", metavar="FILE", help="a V3 keystore holding the key")
    importing.add_argument(
        "--password-file", metavar="FILE", help="the --keystore's password (its first line)"
    )
    importing.add_argument(
        "--wrapping-algorithm",
        choices=("RSAES_OAEP_SHA_256", "RSA_AES_KEY_WRAP_SHA_256"),
        default="RSAES_OAEP_SHA_256",
        help="how the key is wrapped for transport (default RSAES_OAEP_SHA_256; "
        "RSA_AES_KEY_WRAP_SHA_256 is not offered in China Regions)",
    )
    importing.add_argument(
        "--wrapping-key-spec",
        choices=("RSA_4096", "RSA_3072", "RSA_2048"),
        default="RSA_4096",
        help="size of KMS's RSA wrapping key (default RSA_4096)",
    )
    importing.add_argument(
        "--valid-to",
        metavar="TIME",
        help="ISO 8601 time (at most 365 days ahead) when KMS deletes the imported material; "
        "the key then stops signing until the same key is imported again. Default: the "
        "material does not expire",
    )
    importing.set_defaults(run_keys_command=_runner(_import))

    verify = sub.add_parser(
        "verify",
        help="run the start-up checks on keys (spec, usage, state, a test signature), "
        "with the fix for each failure",
    )
    add_settings_flags(verify)
    verify.add_argument(
        "key_refs",
        nargs="*",
        metavar="KEY",
        help="KMS keys (KEY?region=…&role_arn=… allowed) or other backends' sources "
        "(pkcs11:…) to check; default: every key the configuration names",
    )
    _json_flag(verify)
    verify.set_defaults(run_keys_command=_runner(_verify, full_settings=True))

    address = commands.add_parser(
        "address",
        help="print the checksummed Ethereum address of a key of any backend, and its name",
        description="One line per key: ADDRESS  KEY (the KMS key ARN, the PKCS#11 key's URI, "
        "the Key Vault key id, the Cloud KMS key version, the keystore file). A pkcs11: URI "
        "naming a token but no key lists every secp256k1 key on it.",
    )
    address.add_argument(
        "key_ref",
        metavar="KEY",
        help="a KMS key id, ARN or alias (options allowed, as --kms-key), a pkcs11:, "
        "azurekv:// or gcpkms:// source (as --key), or a V3 keystore file (its password: "
        "FILE?password_file=PW or --keystore-password-file)",
    )
    add_settings_flags(address)
    _json_flag(address)
    address.set_defaults(run_keys_command=_runner(_address, full_settings=True))


def _backend_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backend", choices=("kms", "pkcs11"), default="kms", help="where the key lives"
    )
    parser.add_argument("--token", default="", help="pkcs11: the token's label (or serial=SERIAL)")
    parser.add_argument("--label", default="", help="pkcs11: the key's CKA_LABEL")


def _pkcs11_spec(args: argparse.Namespace, settings: Settings) -> Any:
    from signer_proxy.keys.pkcs11_keys import parse_uri

    if not args.token or not args.label:
        raise ConfigError("--backend pkcs11 needs --token and --label")
    token = args.token if args.token.startswith("serial=") else f"token={args.token}"
    return parse_uri(f"pkcs11:{token}", settings)


async def _make_on_token(
    args: argparse.Namespace, settings: Settings, private_key: bytes | None
) -> tuple[Any, str]:
    from signer_proxy.keys.pkcs11_manage import make_key

    made = await make_key(_pkcs11_spec(args, settings), args.label, private_key)
    payload = {"address": made.address, "key": made.uri, "label": made.label, "id": made.id}
    text = table(["ADDRESS", "KEY"], [[made.address, made.uri]])
    verb = "imported" if private_key else "generated (non-extractable)"
    return payload, f"{text}\n\n{verb}; the token signs for {made.address} (test signature checked)"


def _json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _tag_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tag", action="append", default=[], metavar="K=V", help="a tag for the key (repeat)"
    )


def _kms_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", metavar="FILE", help="YAML config file (env: SIGNER_PROXY_CONFIG)"
    )
    for name in KMS_FLAGS:
        parser.add_argument(
            flag_name(name),
            dest=name,
            help=f"{FIELDS[name].metadata['help']} (env: {env_name(name)})",
        )
    _json_flag(parser)


# --- running ------------------------------------------------------------------------------


def _runner(command: Command, *, full_settings: bool = False) -> Callable[[Any], int]:
    def run(args: argparse.Namespace) -> int:
        names = FIELDS if full_settings else KMS_FLAGS
        try:
            settings = load_checked(
                {name: getattr(args, name, None) for name in names}, config_file=args.config
            )
            _configure_logging(settings)
            payload, text = asyncio.run(command(args, settings))
        except ConfigError as exc:
            print(f"signer-proxy: error: {exc}", file=sys.stderr)
            return 2
        except KeyCommandFailed as exc:
            print(f"signer-proxy: error: {exc}", file=sys.stderr)
            return 1
        print(json.dumps(payload, indent=2) if args.json else text)
        failed = isinstance(payload, dict) and payload.get("ok") is False
        return 1 if failed else 0

    return run


def _configure_logging(settings: Settings) -> None:
    from signer_proxy.ops.logs import configure, secrets_in_environment

    # Tables go to stdout; the log (warnings and up unless asked) to stderr.
    level = settings.log_level if settings.log_level != "info" else "warning"
    configure(level, "text", secrets_in_environment(os.environ))


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns, two spaces apart, under a header line."""
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]
    return "\n".join(
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [headers, *rows]
    )


def _tags(pairs: Sequence[str]) -> dict[str, str]:
    from signer_proxy.keys.sources import parse_tag

    return dict(parse_tag(pair) for pair in pairs)


def _alias(alias: str) -> str:
    if alias and (not alias.startswith("alias/") or alias.startswith("alias/aws/")):
        raise ConfigError(f"--alias {alias!r} must start with alias/ (and not alias/aws/)")
    return alias


# --- keys list ----------------------------------------------------------------------------


def _state(status: Any) -> str:
    if status.state == "loaded":
        return "unlocked" if status.source == "keystore" else "Enabled"
    if status.state == "duplicate":
        return "duplicate"
    return f"{status.state} ({status.reason})"


async def _list(args: argparse.Namespace, settings: Settings) -> tuple[Any, str]:
    from signer_proxy.keys.aws_clients import KmsClients
    from signer_proxy.keys.loading import load_keys
    from signer_proxy.keys.sources import from_settings

    sources = from_settings(settings)
    if sources.empty:
        raise ConfigError(
            "no keys configured: give --kms-key, --kms-tag, --kms-alias-prefix, --keystore, "
            "--key, --azure-vault or --gcp-key-ring (or --config with the serve configuration)"
        )
    async with KmsClients(settings) as clients:
        load = await load_keys(sources, clients, concurrency=settings.kms_load_concurrency)
    statuses = list(load.statuses)
    payload = {
        "keys": [
            {
                "address": s.address,
                "key": s.key,
                "name": s.ref,
                "region": s.region,
                "state": _state(s),
                "source": s.source,
                **({"message": s.message} if s.message else {}),
            }
            for s in statuses
        ],
        "skipped": dict(load.skipped),
    }
    rows = [
        [s.address or "-", s.key or "-", s.ref, s.region or "-", _state(s), s.source]
        for s in statuses
    ]
    lines = [table(["ADDRESS", "KEY", "NAME", "REGION", "STATE", "SOURCE"], rows)]
    notes = [f"  {s.ref}: {s.message}" for s in statuses if s.message]
    if notes:
        lines += ["", "Not loaded or not used:", *notes]
    if load.skipped:
        skipped = ", ".join(f"{n} {reason}" for reason, n in sorted(load.skipped.items()))
        lines += ["", f"Discovery skipped: {skipped}"]
    return payload, "\n".join(lines)


# --- keys create --------------------------------------------------------------------------


async def _create(args: argparse.Namespace, settings: Settings) -> tuple[Any, str]:
    from signer_proxy.keys.aws_clients import KmsClients
    from signer_proxy.keys.management import DEFAULT_DESCRIPTION, create_signing_key

    if args.backend == "pkcs11":
        return await _make_on_token(args, settings, None)
    if not args.alias:
        raise ConfigError("keys create needs --alias (e.g. alias/treasury)")
    alias = _alias(args.alias)
    tags = _tags(args.tag)
    async with KmsClients(settings) as clients:
        location = clients.location()
        client = await clients.get(location)
        arn, address = await create_signing_key(
            client, alias, tags, args.description or DEFAULT_DESCRIPTION
        )
    payload = {"alias": alias, "arn": arn, "address": address, "region": location.region}
    text = table(["ADDRESS", "ALIAS", "KEY", "REGION"], [[address, alias, arn, location.region]])
    return payload, text


# --- keys import --------------------------------------------------------------------------


def _valid_to(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"--valid-to {text!r} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    now = datetime.now(UTC)
    if not now < moment <= now + timedelta(days=MAX_VALID_DAYS):
        raise ConfigError(
            f"--valid-to must be in the future and at most {MAX_VALID_DAYS} days ahead"
        )
    return moment


def _private_key(args: argparse.Namespace) -> bytes:
    from signer_proxy.keys.byok import private_key_from_text
    from signer_proxy.keys.keystore import private_key_from_keystore, read_password

    if args.private_key_file:
        try:
            data = Path(args.private_key_file).read_bytes()
        except OSError as exc:
            raise ConfigError(
                f"--private-key-file {args.private_key_file} cannot be read: {exc.strerror}"
            ) from None
        return private_key_from_text(data, f"--private-key-file {args.private_key_file}")
    if not args.password_file:
        raise ConfigError("--keystore needs --password-file")
    try:
        password = read_password(args.password_file)
        data = Path(args.keystore).read_bytes()
        return private_key_from_keystore(data, password, args.keystore)
    except OSError as exc:
        raise ConfigError(f"--keystore {args.keystore} cannot be read: {exc.strerror}") from None
    except KeyLoadFailed as exc:
        raise KeyCommandFailed(str(exc)) from None


async def _import(args: argparse.Namespace, settings: Settings) -> tuple[Any, str]:
    from signer_proxy.keys.aws_clients import KmsClients
    from signer_proxy.keys.byok import create_external_key, import_private_key

    if args.backend == "pkcs11":
        return await _make_on_token(args, settings, await asyncio.to_thread(_private_key, args))
    if args.key_id and (args.alias or args.tag):
        raise ConfigError("--alias and --tag name a key to create: leave them out with --key-id")
    alias = _alias(args.alias)
    tags = _tags(args.tag)
    valid_to = _valid_to(args.valid_to)
    private_key = await asyncio.to_thread(_private_key, args)
    async with KmsClients(settings) as clients:
        location = clients.location()
        client = await clients.get(location)
        key = args.key_id
        created = ""
        if not key:
            key = created = await create_external_key(
                client, alias, tags, args.description or "Ethereum signing key, imported (BYOK)"
            )
        try:
            result = await import_private_key(
                client,
                key,
                private_key,
                algorithm=args.wrapping_algorithm,
                wrapping_key_spec=args.wrapping_key_spec,
                valid_to=valid_to,
            )
        except KeyCommandFailed as exc:
            if created:
                raise KeyCommandFailed(
                    f"{exc}. The new key {created} stays PendingImport: run the import again "
                    f"with --key-id {created}, or schedule its deletion"
                ) from None
            raise
    payload = {
        "arn": result.key_arn,
        "alias": alias,
        "address": result.address,
        "region": location.region,
        "expiration_model": result.expiration_model,
        "valid_to": result.valid_to,
        "imported": result.imported,
    }
    outcome = "imported" if result.imported else "already held this key: nothing imported"
    text = table(
        ["ADDRESS", "KEY", "REGION", "EXPIRATION"],
        [[result.address, result.key_arn, location.region,
          result.valid_to or result.expiration_model]],
    )  # fmt: skip
    return payload, f"{text}\n\n{outcome}; KMS signs for {result.address} (test signature checked)"


# --- keys verify --------------------------------------------------------------------------


async def _verify(args: argparse.Namespace, settings: Settings) -> tuple[Any, str]:
    from signer_proxy.keys.aws_clients import KmsClients
    from signer_proxy.keys.backends import is_backend_source, parse_key_source
    from signer_proxy.keys.loading import load_keys
    from signer_proxy.keys.sources import KeySources, from_settings, parse_kms_key
    from signer_proxy.keys.verify import Check, KeyReport, signature_check, verify_kms_key

    if args.key_refs:
        sources = KeySources(
            kms=tuple(parse_kms_key(k) for k in args.key_refs if not is_backend_source(k)),
            others=tuple(
                parse_key_source(k, settings) for k in args.key_refs if is_backend_source(k)
            ),
        )
    else:
        sources = from_settings(settings)
        if sources.empty:
            raise ConfigError("no keys to verify: name them, or give the serve configuration")
    reports: list[KeyReport] = []
    async with KmsClients(settings) as clients:
        for spec in sources.kms:
            location = clients.location(spec.region, spec.endpoint_url, spec.role_arn)
            try:
                client = await clients.get(location)
            except ConfigError as exc:
                report = KeyReport(spec.label, "kms", location.region)
                report.checks.append(Check("found", False, str(exc), "configure AWS credentials"))
                reports.append(report)
                continue
            report = await verify_kms_key(client, spec.ref, location.region)
            report.key = spec.label
            reports.append(report)
        rest = KeySources(
            discovery=sources.discovery, keystores=sources.keystores, others=sources.others
        )
        if not rest.empty:
            load = await load_keys(rest, clients, concurrency=settings.kms_load_concurrency)
            client = await clients.get(clients.location()) if rest.discovery.enabled else None
            for status in load.statuses:
                if not status.ok:
                    report = KeyReport(status.ref, status.source, status.region, status.key)
                    report.checks.append(
                        Check("load", False, status.message, "fix what the message names")
                    )
                elif status.source == "discovery":
                    report = await verify_kms_key(client, status.key, status.region, "discovery")
                    report.key = status.ref
                else:
                    report = KeyReport(
                        status.ref, status.source, status.region, status.key, status.address
                    )
                    report.checks.append(
                        Check("decrypt", True, "the password opens it")
                        if status.source == "keystore"
                        else Check("found", True, f"{status.key} holds {status.address}")
                    )
                    report.checks.append(
                        await signature_check(load.by_origin[(status.source, status.ref)])
                    )
                reports.append(report)
    ok = all(r.ok for r in reports)
    payload = {"ok": ok, "keys": [r.to_json() for r in reports]}
    lines = []
    for r in reports:
        lines.append(f"{'ok  ' if r.ok else 'FAIL'}  {r.key}  {r.address or '-'}  ({r.source})")
        for c in r.checks:
            lines.append(f"        {'ok  ' if c.ok else 'FAIL'}  {c.name}: {c.detail}")
            if not c.ok and c.fix:
                lines.append(f"              fix: {c.fix}")
    verdict = "every key passed" if ok else f"{sum(not r.ok for r in reports)} key(s) failed"
    lines += ["", f"{len(reports)} key(s) checked: {verdict}"]
    return payload, "\n".join(lines)


# --- address ------------------------------------------------------------------------------


async def _address(args: argparse.Namespace, settings: Settings) -> tuple[Any, str]:
    """The address of one key of any backend, with the key's name; KMS keys by one
    GetPublicKey, the others through the same load as `serve` (keys/backends.py)."""
    from signer_proxy.keys.aws_clients import KmsClients
    from signer_proxy.keys.backends import is_backend_source, parse_key_source
    from signer_proxy.keys.loading import load_keys
    from signer_proxy.keys.management import key_identity
    from signer_proxy.keys.sources import KeySources, parse_keystore, parse_kms_key

    ref = args.key_ref.strip()
    if is_backend_source(ref):
        sources = KeySources(others=(parse_key_source(ref, settings),))
    elif os.path.isfile(ref.partition("?")[0]):  # noqa: ASYNC240 - one stat, CLI only
        sources = KeySources(keystores=(parse_keystore(ref, settings.keystore_password_file),))
    else:
        spec = parse_kms_key(ref)
        async with KmsClients(settings) as clients:
            location = clients.location(spec.region, spec.endpoint_url, spec.role_arn)
            address, arn = await key_identity(await clients.get(location), spec.ref)
        found = {"key": spec.label, "address": address, "arn": arn, "region": location.region}
        return found, f"{address}  {arn}"
    async with KmsClients(settings) as clients:
        load = await load_keys(sources, clients, concurrency=settings.kms_load_concurrency)
    failed = load.failures()
    if failed or not load.statuses:
        reason = failed[0].message if failed else f"{ref} holds no secp256k1 signing key"
        raise KeyCommandFailed(reason)
    keys = [
        {"key": s.ref, "name": s.key, "address": s.address, "source": s.source}
        for s in load.statuses
    ]
    payload: Any = keys[0] if len(keys) == 1 else {"keys": keys}
    return payload, "\n".join(f"{k['address']}  {k['name'] or k['key']}" for k in keys)
