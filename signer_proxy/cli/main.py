"""The `signer-proxy` command: serve, dev, healthcheck, version, one-shot signing with one KMS
key (sign-authorization, hedera-key, hedera-sign), and key management (keys …, address: in
cli_keys.py)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import importlib.util
import json
import logging
import os
import signal
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp import web

from signer_proxy import __version__
from signer_proxy.cli.keys import add_keys_commands
from signer_proxy.config import (
    FIELDS,
    Settings,
    _is_tuple,
    env_name,
    field_type,
    flag_name,
    load_settings,
    require_serve_settings,
    upstream_urls,
)
from signer_proxy.errors import ConfigError, InvalidParams, SignerProxyError
from signer_proxy.keys.sources import load_checked
from signer_proxy.ops.logs import configure as configure_logs
from signer_proxy.ops.logs import secrets_in_environment, secrets_in_url

log = logging.getLogger("signer_proxy")


def _add_settings_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", metavar="FILE", help="YAML config file (env: SIGNER_PROXY_CONFIG)"
    )
    for name, f in FIELDS.items():
        # argparse formats help as %-strings: a literal % (a PKCS#11 id=%01) is written %%.
        help_text = f"{f.metadata['help']} (env: {env_name(name)})".replace("%", "%%")
        if _is_tuple(field_type(name)):
            parser.add_argument(flag_name(name), dest=name, action="append", help=help_text)
        elif field_type(name) is bool:  # `--insecure-no-auth` alone means true
            parser.add_argument(flag_name(name), dest=name, nargs="?", const="true", help=help_text)
        else:
            parser.add_argument(flag_name(name), dest=name, help=help_text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="signer-proxy",
        description="JSON-RPC signing proxy for Ethereum/EVM chains with keys in AWS KMS.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve", help="serve JSON-RPC, signing with KMS keys and forwarding the rest upstream"
    )
    _add_settings_flags(serve)
    commands.add_parser("version", help="print the version")
    healthcheck = commands.add_parser(
        "healthcheck",
        help="exit 0 if the proxy at --listen answers GET /health (for container health checks)",
    )
    _add_settings_flags(healthcheck)
    _add_dev_parser(commands)
    _add_key_commands(commands)
    add_keys_commands(commands, _add_settings_flags)
    hash_key = commands.add_parser(
        "hash-api-key",
        help="hash a client API key for --api-keys-file (the key is read from stdin)",
        description="Read an API key from standard input (never from the command line, where "
        "it would land in shell history and ps) and print its salted hash for the API keys "
        "file. --generate makes a new random key instead and prints the key, then the hash.",
    )
    hash_key.add_argument(
        "--generate", action="store_true", help="generate a new random key (256 bits)"
    )
    hash_key.add_argument(
        "--client", help="print a ready API keys file line, `CLIENT: HASH`, for this client"
    )
    return parser


def hash_api_key_command(args: argparse.Namespace) -> int:
    """`signer-proxy hash-api-key`: 0 with the hash on stdout, 2 for an unusable key."""
    from signer_proxy.access.auth import CLIENT_NAME_RE, generate_api_key, hash_api_key

    if args.client is not None and not CLIENT_NAME_RE.match(args.client):
        print(
            "signer-proxy: error: --client must be letters, digits and ._@- (at most 64)",
            file=sys.stderr,
        )
        return 2
    key = generate_api_key() if args.generate else sys.stdin.readline().strip()
    try:
        hashed = hash_api_key(key)
    except ValueError as exc:
        print(f"signer-proxy: error: {exc}", file=sys.stderr)
        return 2
    if args.generate:
        print(f"API key (give it to the client; it is not stored anywhere): {key}")
    print(f"{args.client}: {hashed}" if args.client else hashed)
    return 0


def _add_dev_parser(commands: Any) -> None:
    dev = commands.add_parser(
        "dev",
        help="everything on one machine: KMS emulator, dev chain and the proxy, funded keys",
        description="Start a KMS emulator with --keys secp256k1 keys (alias/dev-0, ...), an "
        "embedded dev chain (or use --upstream), fund every key address, and run the proxy "
        "in front on 127.0.0.1:--port. Ctrl-C stops everything.",
    )
    dev.add_argument("--port", type=int, default=8545, help="proxy port (default 8545; 0: free)")
    dev.add_argument("--keys", type=int, default=3, help="how many KMS keys (default 3)")
    dev.add_argument(
        "--upstream",
        metavar="URL",
        default="",
        help="use this node instead of the embedded chain (anvil, Hardhat: funded with "
        "anvil_setBalance / hardhat_setBalance)",
    )
    dev.add_argument(
        "--state-dir",
        metavar="DIR",
        type=Path,
        help="keep the KMS keys in DIR so addresses survive a restart (default: memory only)",
    )
    dev.add_argument(
        "--backend",
        choices=("kms", "softhsm", "azure", "gcp"),
        default="kms",
        help="where the keys live: kms (the AWS KMS emulator, default), softhsm (a SoftHSM2 "
        "token in --state-dir/softhsm or a temporary directory, served through PKCS#11), azure "
        "or gcp (a local Azure Key Vault or Google Cloud KMS emulator)",
    )
    dev.add_argument("--chain-id", type=int, default=1337, help="embedded chain id (1337)")
    dev.add_argument("--chain-port", type=int, default=0, help="embedded chain port (0: free)")
    dev.add_argument(
        "--chains",
        type=int,
        default=1,
        metavar="N",
        help="how many embedded chains, 1 to 4 (default 1): chain ids --chain-id, +1 …, served "
        "as /chain/dev1, /chain/dev2 … (dev1 also on /); with --chain-port, consecutive ports",
    )
    dev.add_argument("--kms-port", type=int, default=0, help="KMS emulator port (0: free)")
    dev.add_argument("--log-level", default="info", help="debug, info, warning or error")


# What `signer-proxy dev` runs beside the proxy, from the `dev` extra (not in the image).
DEV_MODULES = ("moto", "eth_tester", "web3", "boto3")
DEV_INSTALL = "pip install 'signer-proxy[dev]'"


def missing_dev_modules() -> list[str]:
    """The dev extra's modules this environment lacks."""
    return [name for name in DEV_MODULES if importlib.util.find_spec(name) is None]


def run_dev_command(args: argparse.Namespace, started: float) -> int:
    """`signer-proxy dev`: 0 after Ctrl-C, 2 when something cannot start."""
    missing = missing_dev_modules()
    if missing:
        print(
            f"signer-proxy: error: `signer-proxy dev` needs its emulators and dev chain "
            f"({', '.join(missing)} are not installed): {DEV_INSTALL}",
            file=sys.stderr,
        )
        return 2
    from signer_proxy.dev.runner import DevOptions, run_dev, use_dev_credentials

    options = DevOptions(
        port=args.port,
        keys=args.keys,
        upstream=args.upstream,
        state_dir=args.state_dir,
        chain_id=args.chain_id,
        chain_port=args.chain_port,
        kms_port=args.kms_port,
        log_level=args.log_level,
        backend=args.backend,
        chains=args.chains,
    )
    try:
        if args.log_level.lower() not in ("debug", "info", "warning", "error"):
            raise ConfigError("--log-level must be debug, info, warning or error")
        configure_logging(args.log_level)
        use_dev_credentials()
        run_event_loop(run_dev(options, started=started))
    except ConfigError as exc:
        print(f"signer-proxy: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


def header_secrets(headers: tuple[str, ...]) -> list[str]:
    """The values of --upstream-header (validated by load_settings), for the log scrubber."""
    from signer_proxy.upstream.credentials import HeaderSpec

    return [HeaderSpec.parse(text).resolve() for text in headers]


def node_secrets(settings: Settings) -> list[str]:
    """Every node credential the log must never show: each chain's header values and the
    userinfo and query keys of its node URLs."""
    secrets: list[str] = []
    for chain in settings.chain_list():
        own = settings.for_chain(chain)
        secrets += header_secrets(own.upstream_headers)
        for url in (*upstream_urls(own.upstream), own.upstream_ws):
            secrets += secrets_in_url(url)
    return secrets


def configure_logging(
    level: str,
    log_format: str = "text",
    upstream: str = "",
    upstream_ws: str = "",
    extra_secrets: list[str] | None = None,
) -> None:
    """Logging to stderr; the node URLs' credentials and AWS keys are scrubbed from it."""
    secrets = [
        *(extra_secrets or ()),
        *secrets_in_url(upstream),
        *secrets_in_url(upstream_ws),
        *secrets_in_environment(os.environ),
    ]
    configure_logs(level, log_format, secrets)


def run_event_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run the server's coroutine on uvloop where it is installed (Linux, macOS): its event
    loop and transports are written in C and roughly halve the per-request CPU."""
    try:
        import uvloop
    except ImportError:  # e.g. Windows
        asyncio.run(main)
    else:
        uvloop.run(main)


async def serve(settings: Settings, reload_settings: Callable[[], Settings] | None = None) -> None:
    """Run until SIGINT or SIGTERM (SIGHUP reloads the keys); startup problems raise
    ConfigError before listening."""
    from signer_proxy.app import KEYRING, create_app
    from signer_proxy.ops import tracing
    from signer_proxy.ops.shutdown import IN_FLIGHT, drain
    from signer_proxy.ops.tls import SERVER_TLS
    from signer_proxy.transport.fast_lane import RpcSite
    from signer_proxy.transport.ops import start_ops_listener

    if tracing.configure():  # OTEL_* in the environment (docs/operations.md, "Traces")
        log.info("traces on: OpenTelemetry, exported as OTEL_* says")
    app = create_app(settings, reload_settings=reload_settings)
    # From the start: SIGHUP's default action would end the process while keys still load.
    asyncio.get_running_loop().add_signal_handler(
        signal.SIGHUP, app[KEYRING].reload_in_background, "sighup"
    )
    # Draining happens in drain(); past its deadline aiohttp cancels what is left within 1 s.
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
    ops_runner: web.AppRunner | None = None
    await runner.setup()
    # What startup built (botocore's models, the keys, the app) lives as long as the process:
    # out of the collector's sight, a full collection no longer walks it (pauses of tens of ms).
    gc.collect()
    gc.freeze()
    # Each call allocates a few dozen containers (a task, its coroutines, dicts): at the
    # default threshold (700) the young generation was collected every ~15 calls, and more
    # objects in flight (concurrency 64) got promoted and walked again. Rarer collections cost
    # less per call (interleaved runs, same code: 0.95x CPU per pass-through call at
    # concurrency 16 and 64); reference counting still frees everything without a cycle.
    gc.set_threshold(20_000, 50, 100)
    try:
        host, port = settings.listen_host_port()
        tls = app.get(SERVER_TLS)
        site = RpcSite(runner, host, port, ssl_context=tls.context if tls else None)
        try:
            await site.start()
        except OSError as exc:
            raise ConfigError(f"cannot listen on {settings.listen}: {exc.strerror}") from None
        bound = runner.addresses[0]
        scheme = "https" if tls else "http"
        print(f"signer-proxy listening on {scheme}://{bound[0]}:{bound[1]}", flush=True)
        if settings.metrics_listen:
            ops_runner, ops_url = await start_ops_listener(app, settings.metrics_listen)
            print(f"signer-proxy metrics on {ops_url}/metrics", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("stopping: no new connections; finishing in-flight requests")
        await drain(runner, app[IN_FLIGHT], settings.shutdown_timeout)
    finally:
        await runner.cleanup()
        await asyncio.to_thread(tracing.shutdown)  # flush the spans still buffered
        if ops_runner is not None:
            await ops_runner.cleanup()
        log.info("stopped")


def main(argv: Sequence[str] | None = None) -> int:
    started = time.monotonic()
    args = build_parser().parse_args(argv)
    if args.command == "dev":
        return run_dev_command(args, started)
    if args.command in KEY_COMMANDS:
        return _run_key_command(args)
    if hasattr(args, "run_keys_command"):  # keys …, address: signer_proxy/cli/keys.py
        return int(args.run_keys_command(args))
    if args.command == "hash-api-key":
        return hash_api_key_command(args)
    if args.command == "version":
        print(f"signer-proxy {__version__}")
        return 0
    flags = {name: getattr(args, name) for name in FIELDS}
    if args.command == "healthcheck":
        return healthcheck(flags, args.config)
    try:
        settings = load_checked(flags, config_file=args.config)
        require_serve_settings(settings)
        configure_logging(
            settings.log_level, settings.log_format, extra_secrets=node_secrets(settings)
        )
        run_event_loop(serve(settings, lambda: load_checked(flags, config_file=args.config)))
    except ConfigError as exc:
        print(f"signer-proxy: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


def healthcheck(flags: dict[str, object], config_file: str | None) -> int:
    """GET /health on the --listen address; 0 when it answers 200, else 1 with the reason."""
    try:
        settings = load_settings(flags, config_file=config_file)
    except ConfigError as exc:
        print(f"signer-proxy: error: {exc}", file=sys.stderr)
        return 2
    host, port = settings.listen_host_port()
    if host in ("0.0.0.0", "::", ""):  # listening everywhere: ask over loopback
        host = "127.0.0.1" if host != "::" else "::1"
    scheme = "https" if settings.tls_cert_file else "http"
    url = f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}/health"
    # Our own listener over loopback: its certificate names the service, not this address.
    context = ssl._create_unverified_context() if settings.tls_cert_file else None
    try:
        with urllib.request.urlopen(url, timeout=3, context=context) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except OSError as exc:
        print(f"signer-proxy healthcheck: {url} did not answer: {exc}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"signer-proxy healthcheck: {url} answered HTTP {status}", file=sys.stderr)
        return 1
    return 0


# --- one-shot commands with one KMS key ----------------------------------------------------


def _add_key_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", metavar="FILE", help="YAML config file (env: SIGNER_PROXY_CONFIG)"
    )
    parser.add_argument(
        "--kms-key", required=True, help="the KMS key: key id, key ARN, alias or alias ARN"
    )
    for name in ("aws_region", "aws_endpoint_url", "kms_timeout", "log_level"):
        parser.add_argument(
            flag_name(name),
            dest=name,
            help=f"{FIELDS[name].metadata['help']} (env: {env_name(name)})",
        )


def _add_key_commands(commands: Any) -> None:
    auth = commands.add_parser(
        "sign-authorization",
        help="sign an EIP-7702 authorization with a KMS key; prints it as JSON",
        description="Sign keccak(0x05 || rlp([chainId, address, nonce])) with the key and print "
        "{chainId, address, nonce, yParity, r, s}, ready for a type 0x4 authorizationList.",
    )
    _add_key_flags(auth)
    auth.add_argument("--address", required=True, help="the contract to delegate the code to")
    auth.add_argument(
        "--chain-id", required=True, help="chain id (decimal or 0x-hex); 0 = valid on any chain"
    )
    auth.add_argument(
        "--nonce", required=True, help="the key's account nonce when the authorization is used"
    )
    hedera_key = commands.add_parser(
        "hedera-key", help="print a KMS key's public key in the forms Hedera accounts use"
    )
    _add_key_flags(hedera_key)
    hedera_sign = commands.add_parser(
        "hedera-sign",
        help="sign Hedera transaction bytes with a KMS key (keccak-256, 64-byte r||s)",
        description="Sign keccak-256 of the transaction body bytes and print the 64-byte r||s "
        "signature and the compressed public key, as JSON.",
    )
    _add_key_flags(hedera_sign)
    source = hedera_sign.add_mutually_exclusive_group(required=True)
    source.add_argument("--hex", help="the transaction bytes as hex (0x optional)")
    source.add_argument("--file", help="a file holding the raw transaction bytes; - for stdin")
    source.add_argument(
        "--transaction",
        metavar="FILE",
        help="a serialized Hedera SDK transaction (Transaction.to_bytes / toBytes), frozen; - for "
        'stdin: prints it back as hex in "transaction" with this key\'s signature added to '
        "every body",
    )


def _integer(value: str, name: str) -> int:
    try:
        number = int(value, 16) if value.lower().startswith("0x") else int(value)
    except ValueError:
        raise InvalidParams(
            f"--{name} must be a decimal or 0x-hex integer, got {value!r}"
        ) from None
    if number < 0:
        raise InvalidParams(f"--{name} must not be negative")
    return number


def _key_settings(args: argparse.Namespace) -> Settings:
    flags = {
        name: getattr(args, name) for name in ("aws_region", "aws_endpoint_url", "kms_timeout")
    }
    flags["log_level"] = args.log_level
    return load_checked({**flags, "kms_keys": [args.kms_key]}, config_file=args.config)


@asynccontextmanager
async def _kms_signer(settings: Settings, key_ref: str) -> AsyncIterator[Any]:
    """A KmsSigner for one key, checked as `serve` checks its keys (spec, usage, state)."""
    from signer_proxy.keys.aws_kms import KmsSigner, load_key
    from signer_proxy.keys.reload import kms_client

    async with kms_client(settings) as client:
        yield KmsSigner(client, await load_key(client, key_ref, client.meta.region_name))


async def _sign_authorization(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    from signer_proxy.access.gate import OPERATOR
    from signer_proxy.access.setup import operator_gate
    from signer_proxy.eth.hexdata import parse_address
    from signer_proxy.eth.tx_encoding import authorization_digest
    from signer_proxy.methods.authorizations import sign_authorization

    address = parse_address(args.address, "--address")
    chain_id, nonce = _integer(args.chain_id, "chain-id"), _integer(args.nonce, "nonce")
    digest = authorization_digest(chain_id, address, nonce)
    async with _kms_signer(settings, args.kms_key) as signer:
        with operator_gate(settings, signer) as gate:
            async with gate.authorization(OPERATOR, signer, chain_id, address, nonce, digest):
                authorization = await sign_authorization(signer, chain_id, address, nonce)
    return {"authority": signer.address, **authorization.to_json()}


def _hedera_key_json(public_key: bytes) -> dict[str, str]:
    from signer_proxy.eth.ecdsa import address_from_public_key, compressed_public_key
    from signer_proxy.keys.hedera import HEDERA_ECDSA_DER_PREFIX

    compressed = compressed_public_key(public_key)
    return {
        "publicKey": compressed.hex(),
        "publicKeyDer": (HEDERA_ECDSA_DER_PREFIX + compressed).hex(),
        "evmAddress": address_from_public_key(public_key),
    }


async def _hedera_key(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    async with _kms_signer(settings, args.kms_key) as signer:
        return _hedera_key_json(signer.info.public_key)


def _transaction_bytes(args: argparse.Namespace) -> bytes:
    if args.hex is not None:
        text = args.hex[2:] if args.hex.lower().startswith("0x") else args.hex
        try:
            return bytes.fromhex(text)
        except ValueError:
            raise InvalidParams("--hex must be the transaction bytes as hex") from None
    if args.file == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(args.file).read_bytes()
    except OSError as exc:
        raise InvalidParams(f"--file {args.file} cannot be read: {exc.strerror}") from None


async def _hedera_sign(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    from signer_proxy.access.setup import operator_gate
    from signer_proxy.eth.hexdata import to_data
    from signer_proxy.keys.hedera import hedera_digest, sign_hedera

    if args.transaction is not None:
        return await _hedera_sign_transaction(args, settings)
    body = _transaction_bytes(args)
    async with _kms_signer(settings, args.kms_key) as signer:
        details = {"digest": to_data(hedera_digest(body)), "bytes": len(body)}
        with operator_gate(settings, signer) as gate:
            async with gate.by_operator("hedera-sign", signer, details):
                result = await sign_hedera(signer, body)
        key = _hedera_key_json(signer.info.public_key)
    return {"digest": result.digest.hex(), "signature": result.signature.hex(), **key}


async def _hedera_sign_transaction(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    from signer_proxy.access.setup import operator_gate
    from signer_proxy.keys.hedera_sdk import HederaSdkSigner

    args.file, args.hex = args.transaction, None
    serialized = _transaction_bytes(args)
    async with _kms_signer(settings, args.kms_key) as signer:
        key = _hedera_key_json(signer.info.public_key)
        sdk_signer = await HederaSdkSigner.create(signer, bytes.fromhex(key["publicKey"]))
        details = {
            "transaction_sha256": hashlib.sha256(serialized).hexdigest(),
            "bytes": len(serialized),
        }
        with operator_gate(settings, signer) as gate:
            async with gate.by_operator("hedera-sign", signer, details):
                try:
                    signed = await sdk_signer.sign_transaction_bytes(serialized)
                except ValueError as exc:
                    raise InvalidParams(str(exc)) from None
    return {"transaction": signed.hex(), **key}


KEY_COMMANDS: dict[str, Callable[[argparse.Namespace, Settings], Any]] = {
    "sign-authorization": _sign_authorization,
    "hedera-key": _hedera_key,
    "hedera-sign": _hedera_sign,
}


def _run_key_command(args: argparse.Namespace) -> int:
    """Run a one-shot key command; JSON on stdout, errors on stderr (2: usage, 1: signing)."""
    try:
        settings = _key_settings(args)
        configure_logging(settings.log_level)
        result = asyncio.run(KEY_COMMANDS[args.command](args, settings))
    except (ConfigError, InvalidParams) as exc:
        print(f"signer-proxy: error: {exc}", file=sys.stderr)
        return 2
    except SignerProxyError as exc:
        print(f"signer-proxy: error: {exc.message}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0
