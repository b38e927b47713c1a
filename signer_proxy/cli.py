"""The `signer-proxy` command: serve, dev, version."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

from signer_proxy import __version__
from signer_proxy.config import (
    FIELDS,
    Settings,
    _is_tuple,
    env_name,
    field_type,
    flag_name,
    load_settings,
    require_serve_settings,
)
from signer_proxy.errors import ConfigError
from signer_proxy.logs import configure as configure_logs
from signer_proxy.logs import secrets_in_environment, secrets_in_url

log = logging.getLogger("signer_proxy")


def _add_settings_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", metavar="FILE", help="YAML config file (env: SIGNER_PROXY_CONFIG)"
    )
    for name, f in FIELDS.items():
        help_text = f"{f.metadata['help']} (env: {env_name(name)})"
        if _is_tuple(field_type(name)):
            parser.add_argument(flag_name(name), dest=name, action="append", help=help_text)
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
    return parser


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
    dev.add_argument("--chain-id", type=int, default=1337, help="embedded chain id (1337)")
    dev.add_argument("--chain-port", type=int, default=0, help="embedded chain port (0: free)")
    dev.add_argument("--kms-port", type=int, default=0, help="KMS emulator port (0: free)")
    dev.add_argument("--log-level", default="info", help="debug, info, warning or error")


def run_dev_command(args: argparse.Namespace, started: float) -> int:
    """`signer-proxy dev`: 0 after Ctrl-C, 2 when something cannot start."""
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
    )
    try:
        if args.log_level.lower() not in ("debug", "info", "warning", "error"):
            raise ConfigError("--log-level must be debug, info, warning or error")
        configure_logging(args.log_level)
        use_dev_credentials()
        asyncio.run(run_dev(options, started=started))
    except ConfigError as exc:
        print(f"signer-proxy: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


def configure_logging(level: str, log_format: str = "text", upstream: str = "") -> None:
    """Logging to stderr; the upstream URL's credentials and AWS keys are scrubbed from it."""
    secrets = [*secrets_in_url(upstream), *secrets_in_environment(os.environ)]
    configure_logs(level, log_format, secrets)


async def serve(settings: Settings) -> None:
    """Run until SIGINT or SIGTERM; startup problems raise ConfigError before listening."""
    from signer_proxy.app import create_app
    from signer_proxy.shutdown import IN_FLIGHT, drain
    from signer_proxy.transport.ops import start_ops_listener

    app = create_app(settings)
    # Draining happens in drain(); past its deadline aiohttp cancels what is left within 1 s.
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
    ops_runner: web.AppRunner | None = None
    await runner.setup()
    try:
        host, port = settings.listen_host_port()
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            raise ConfigError(f"cannot listen on {settings.listen}: {exc.strerror}") from None
        bound = runner.addresses[0]
        print(f"signer-proxy listening on http://{bound[0]}:{bound[1]}", flush=True)
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
        if ops_runner is not None:
            await ops_runner.cleanup()
        log.info("stopped")


def main(argv: Sequence[str] | None = None) -> int:
    started = time.monotonic()
    args = build_parser().parse_args(argv)
    if args.command == "dev":
        return run_dev_command(args, started)
    if args.command == "version":
        print(f"signer-proxy {__version__}")
        return 0
    flags = {name: getattr(args, name) for name in FIELDS}
    if args.command == "healthcheck":
        return healthcheck(flags, args.config)
    try:
        settings = load_settings(flags, config_file=args.config)
        require_serve_settings(settings)
        configure_logging(settings.log_level, settings.log_format, settings.upstream)
        asyncio.run(serve(settings))
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
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}/health"
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
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
