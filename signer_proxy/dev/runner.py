"""`signer-proxy dev`: start the KMS emulator, the dev chain and the proxy; stop them in reverse.

The proxy is the production one (`create_app`, aioboto3 against the emulator's endpoint), so
dev mode exercises the same KMS code path as a deployment. Everything listens on loopback only
(the proxy has no authentication yet). Each part is registered for shutdown as soon as it has
started, so a failed start, SIGINT or SIGTERM leave no thread or port behind.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from aiohttp import web

from signer_proxy.config import ChainConfig, Settings, require_serve_settings, validate
from signer_proxy.dev.banner import Account, BannerInfo, DevChainLine, render_banner
from signer_proxy.dev.chain import DEFAULT_CHAIN_ID
from signer_proxy.dev.funding import fund_or_explain
from signer_proxy.errors import ConfigError, SignerProxyError
from signer_proxy.eth.hexdata import parse_quantity
from signer_proxy.upstream.http import HttpUpstream

log = logging.getLogger(__name__)

REGION = "us-east-1"
HOST = "127.0.0.1"
MAX_KEYS = 100
MAX_CHAINS = 4
# The emulator accepts any credentials; these keep the developer's real AWS ones out of play.
DEV_AWS_ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_REGION": REGION,
    "AWS_DEFAULT_REGION": REGION,
    "AWS_EC2_METADATA_DISABLED": "true",
}
DROPPED_AWS_ENVIRONMENT = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")


@dataclass(frozen=True)
class DevOptions:
    """The `signer-proxy dev` flags."""

    port: int = 8545
    keys: int = 3
    upstream: str = ""
    state_dir: Path | None = None
    chain_id: int = DEFAULT_CHAIN_ID
    chain_port: int = 0
    kms_port: int = 0
    log_level: str = "info"
    backend: str = "kms"  # kms (the emulator) | softhsm (SoftHSM2) | azure | gcp (emulators)
    chains: int = 1  # embedded chains: chain ids chain_id, chain_id + 1, …; served as dev1, dev2 …


def chain_name(index: int) -> str:
    """The name (path /chain/NAME) of the embedded chain number `index` (0-based) of several."""
    return f"dev{index + 1}"


def chain_ports(options: DevOptions) -> list[int]:
    """The embedded chains' ports: --chain-port and the next ones, or all free (0)."""
    return [options.chain_port + i if options.chain_port else 0 for i in range(options.chains)]


def check_options(options: DevOptions) -> None:
    """ConfigError naming the flag when an option cannot work."""
    if not 1 <= options.keys <= MAX_KEYS:
        raise ConfigError(f"--keys must be from 1 to {MAX_KEYS}, got {options.keys}")
    for flag, port in (
        ("--port", options.port),
        ("--chain-port", options.chain_port),
        ("--kms-port", options.kms_port),
    ):
        if not 0 <= port <= 65535:
            raise ConfigError(f"{flag} must be a TCP port (0 picks a free one), got {port}")
    if not 1 <= options.chains <= MAX_CHAINS:
        raise ConfigError(f"--chains must be from 1 to {MAX_CHAINS}, got {options.chains}")
    if options.upstream and options.chains > 1:
        raise ConfigError(
            "--chains runs several embedded chains; it has no use with --upstream (for several "
            "nodes of your own, run `signer-proxy serve` with a chains: config, docs/chains.md)"
        )
    if options.chain_port and options.chain_port + options.chains - 1 > 65535:
        raise ConfigError(
            f"--chain-port {options.chain_port} leaves no room for {options.chains} chains "
            "(they take consecutive ports); choose a lower one"
        )
    if not 1 <= options.chain_id < 2**64 - options.chains + 1:
        raise ConfigError(f"--chain-id must be a positive integer, got {options.chain_id}")
    if options.upstream and options.chain_port:
        raise ConfigError("--chain-port is for the embedded chain; it has no use with --upstream")
    if options.upstream:  # the same URL rules as `serve --upstream`
        require_serve_settings(Settings(upstream=options.upstream, kms_keys=("alias/dev-0",)))
    if (
        options.state_dir is not None
        and options.state_dir.exists()
        and not options.state_dir.is_dir()
    ):
        raise ConfigError(f"--state-dir {options.state_dir} exists and is not a directory")


async def _chain_id(node: HttpUpstream) -> int:
    """The node's chain id; ConfigError naming the node when it does not answer."""
    try:
        return parse_quantity(await node.call("eth_chainId", []), "eth_chainId")
    except SignerProxyError as exc:
        raise ConfigError(f"the node at {node.display_url}: {exc.message}") from None


def check_port_free(flag: str, port: int) -> None:
    """Fail fast, before anything starts, when a chosen port is taken (0 is always free)."""
    if port == 0:
        return
    with socket.socket() as probe:
        try:
            probe.bind((HOST, port))
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {HOST}:{port}: {exc.strerror}; choose another {flag}"
            ) from None


def use_dev_credentials() -> None:
    """Dummy AWS credentials for this process: the emulator needs some, real ones stay unused."""
    for name in DROPPED_AWS_ENVIRONMENT:
        os.environ.pop(name, None)
    os.environ.update(DEV_AWS_ENVIRONMENT)


async def _softhsm_keys(
    stack: AsyncExitStack, options: DevOptions
) -> tuple[list[Any], dict[str, object]]:
    """Keys on a SoftHSM2 token in --state-dir/softhsm (kept) or a temporary directory."""
    import tempfile
    from types import SimpleNamespace

    from signer_proxy.dev.softhsm import dev_token_keys

    if options.state_dir is not None:
        directory = options.state_dir / "softhsm"
    else:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="softhsm-")))
    token, made = await dev_token_keys(directory, options.keys)
    keys = [SimpleNamespace(alias=uri, address=address) for uri, address in made]
    return keys, {
        "key_sources": ("pkcs11:token=dev",),
        "pkcs11_module": token.module,
        "pkcs11_pin_file": str(token.pin_file),
    }


async def run_dev(
    options: DevOptions,
    stop: asyncio.Event | None = None,
    out: TextIO = sys.stdout,
    started: float | None = None,
) -> None:
    """Start everything, print the banner to `out`, run until `stop` is set (or SIGINT /
    SIGTERM when `stop` is None), then stop everything; ConfigError if it cannot start.
    `started` (time.monotonic()) is when the command began, for the banner's ready time."""
    started = time.monotonic() if started is None else started
    check_options(options)
    check_port_free("--port", options.port)
    for port in chain_ports(options):
        check_port_free("--chain-port", port)
    check_port_free("--kms-port", options.kms_port)
    loop = asyncio.get_running_loop()
    if stop is None:
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    async with AsyncExitStack() as stack:
        if stop.is_set():
            return
        chain_id = 0
        if options.upstream:  # a node that does not answer stops us before anything starts
            node = HttpUpstream(options.upstream, 30)
            stack.push_async_callback(node.aclose)
            chain_id = await _chain_id(node)

        from signer_proxy.dev.kms_emulator import create_dev_keys, start_kms_emulator

        try:
            kms = start_kms_emulator(HOST, options.kms_port)
        except OSError:
            raise ConfigError(
                f"the KMS emulator cannot listen on {HOST}:{options.kms_port}; "
                "choose another --kms-port"
            ) from None
        stack.callback(kms.stop)
        token_settings: dict[str, Any] = {}
        keys: list[Any] = []
        kms_keys: tuple[str, ...] = ()
        signed_by, key_store = "the KMS emulator", ""  # the banner's names for the backend
        if options.backend in ("kms", "softhsm"):  # azure/gcp keys live in their emulators
            keys = create_dev_keys(kms.url, options.keys, REGION, options.state_dir)
            kms_keys = tuple(key.alias for key in keys)
        if options.backend == "softhsm":  # the keys live on a SoftHSM2 token instead
            keys, token_settings = await _softhsm_keys(stack, options)
            kms_keys = ()
            signed_by = "a SoftHSM2 token (PKCS#11)"
            key_store = f"pkcs11:token=dev through {token_settings['pkcs11_module']}"
        elif options.backend in ("azure", "gcp"):  # in the Key Vault / Cloud KMS emulator
            from signer_proxy.dev.cloud_dev import start_cloud_keys
            from signer_proxy.dev.kms_emulator import DevKey

            cloud = await start_cloud_keys(options.backend, options.keys, stack)
            keys = [DevKey(r, "", a) for r, a in zip(cloud.refs, cloud.addresses, strict=True)]
            token_settings = {**cloud.settings, "key_sources": cloud.refs}
            signed_by = cloud.name
            key_store = f"{cloud.url} (its credentials are set for this process only)"

        chain_url = ""
        embedded: list[tuple[str, HttpUpstream]] = []  # (its URL, a client of it)
        if not options.upstream:
            embedded = await _start_chains(stack, options)
            chain_url, node = embedded[0]
            chain_id = await _chain_id(node)

        several = len(embedded) > 1
        settings = Settings(
            listen=f"{HOST}:{options.port}",
            upstream="" if several else options.upstream or chain_url,
            aws_region=REGION,
            aws_endpoint_url=kms.url,
            kms_keys=kms_keys,
            log_level=options.log_level,
            chains=chains_config(options, [url for url, _ in embedded]) if several else (),
            **token_settings,
        )
        validate(settings)
        nodes = [n for _, n in embedded] or [node]
        fundings: list[str] = []
        per_chain: list[tuple[int, ...]] = []
        for each in nodes:
            try:
                text, amounts = await fund_or_explain(each, [key.address for key in keys])
            except SignerProxyError as exc:
                raise ConfigError(f"the node at {each.display_url}: {exc.message}") from None
            fundings.append(text)
            per_chain.append(amounts)
        funding, balances = fundings[0], per_chain[0]
        if several:  # each chain says how, unless they all say the same
            names = [c.name for c in settings.chains]
            funding = (
                f"{funding}, on each chain"
                if len(set(fundings)) == 1
                else "; ".join(f"{n}: {f}" for n, f in zip(names, fundings, strict=True))
            )

        from signer_proxy.app import create_app
        from signer_proxy.transport.fast_lane import RpcSite

        runner = web.AppRunner(create_app(settings), handle_signals=False, access_log=None)
        await runner.setup()  # loads the KMS keys through aioboto3, as `serve` does
        stack.push_async_callback(runner.cleanup)
        try:
            await RpcSite(runner, HOST, options.port).start()
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {HOST}:{options.port}: {exc.strerror}; choose another --port"
            ) from None
        bound_host, bound_port = runner.addresses[0][:2]
        proxy_url = f"http://{bound_host}:{bound_port}"

        chain_lines = (
            [
                DevChainLine(c.name, c.chain_id or 0, f"{proxy_url}/chain/{c.name}", url)
                for c, (url, _) in zip(settings.chains, embedded, strict=True)
            ]
            if several
            else []
        )
        info = BannerInfo(
            proxy_url=proxy_url,
            node_url=node.display_url,
            chain_url=chain_url,
            chain_id=chain_id,
            kms_url=kms.url,
            region=REGION,
            accounts=[
                Account(key.alias, key.address, balance, tuple(b[i] for b in per_chain))
                for i, (key, balance) in enumerate(zip(keys, balances, strict=True))
            ],
            funding=funding,
            state_dir=str(options.state_dir)
            if options.state_dir and options.backend in ("kms", "softhsm")
            else "",
            ready_seconds=time.monotonic() - started,
            signed_by=signed_by,
            key_store=key_store,
            can_keep=options.backend in ("kms", "softhsm"),
            chains=chain_lines,
        )
        out.write(render_banner(info))
        out.flush()
        await stop.wait()
        log.info("stopping")


async def _start_chains(
    stack: AsyncExitStack, options: DevOptions
) -> list[tuple[str, HttpUpstream]]:
    """Start --chains embedded chains (chain ids --chain-id, +1 …); each one's URL and a
    client of it, every part registered on `stack` for shutdown as soon as it runs."""
    from signer_proxy.dev.chain_server import ChainServer

    started: list[tuple[str, HttpUpstream]] = []
    for i, port in enumerate(chain_ports(options)):
        server = ChainServer(options.chain_id + i, HOST, port)
        stack.push_async_callback(server.stop)
        try:
            await server.start()
        except OSError as exc:
            raise ConfigError(
                f"the dev chain cannot listen on {HOST}:{port} "
                f"({exc.strerror}); choose another --chain-port"
            ) from None
        node = HttpUpstream(server.url, 30)
        stack.push_async_callback(node.aclose)
        started.append((server.url, node))
    return started


def chains_config(options: DevOptions, urls: list[str]) -> tuple[ChainConfig, ...]:
    """The `chains:` config of several embedded chains: dev1 (the default, also on /), dev2 …"""
    return tuple(
        ChainConfig(
            chain_name(i), options.chain_id + i, default=i == 0, overrides=(("upstream", url),)
        )
        for i, url in enumerate(urls)
    )
