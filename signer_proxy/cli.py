"""The `signer-proxy` command: serve, dev, version."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time
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


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # botocore logs request details (including signed headers) at debug: keep it quiet.
    logging.getLogger("botocore").setLevel(logging.WARNING)
    logging.getLogger("aiobotocore").setLevel(logging.WARNING)


async def serve(settings: Settings) -> None:
    """Run until SIGINT or SIGTERM; startup problems raise ConfigError before listening."""
    from signer_proxy.app import create_app

    runner = web.AppRunner(create_app(settings), handle_signals=False, access_log=None)
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
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("stopping")
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    started = time.monotonic()
    args = build_parser().parse_args(argv)
    if args.command == "dev":
        return run_dev_command(args, started)
    if args.command == "version":
        print(f"signer-proxy {__version__}")
        return 0
    flags = {name: getattr(args, name) for name in FIELDS}
    try:
        settings = load_settings(flags, config_file=args.config)
        require_serve_settings(settings)
        configure_logging(settings.log_level)
        asyncio.run(serve(settings))
    except ConfigError as exc:
        print(f"signer-proxy: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0
