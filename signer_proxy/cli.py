"""The `signer-proxy` command: serve, version."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

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
    return parser


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
    args = build_parser().parse_args(argv)
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
