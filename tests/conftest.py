"""Real parts for the tests: anvil and cast (npm), the KMS emulator, our CLI as a subprocess.

Nothing here talks to AWS: every KMS client points at the loopback emulator, with dummy
credentials set for the whole session.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from signer_proxy.dev.kms_emulator import KmsEmulator, start_kms_emulator
from signer_proxy.eth.ecdsa import address_from_public_key, public_key_from_spki

ROOT = Path(__file__).resolve().parent.parent
REGION = "us-east-1"
# anvil's first default account (the well-known test mnemonic): funds the KMS addresses.
ANVIL_FUNDER = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"

# Dummy credentials, so no test can reach real AWS with a developer's own.
for _name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
    os.environ.pop(_name, None)
os.environ.update(
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
    AWS_DEFAULT_REGION=REGION,
    AWS_REGION=REGION,
    AWS_EC2_METADATA_DISABLED="true",
)


def tool(name: str) -> str:
    """Path of an npm-installed Foundry tool (anvil, cast); `make test` installs them."""
    local = ROOT / ".tools" / "node_modules" / ".bin" / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found: run `make test` (it installs @foundry-rs/{name} from npm)")
    return found


async def start_app(app: Any) -> tuple[int, Any]:
    """An aiohttp `app` served on a free loopback port: (port, runner); `runner.cleanup()` it."""
    from aiohttp import web

    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner.addresses[0][1], runner


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rpc_call(url: str, method: str, params: Any = None, timeout: float = 10.0) -> Any:
    """A blocking JSON-RPC call; returns the whole response object."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []})
    request = urllib.request.Request(
        url, data=body.encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


@dataclass
class Anvil:
    url: str
    process: subprocess.Popen[bytes]

    def call(self, method: str, params: Any = None) -> Any:
        response = rpc_call(self.url, method, params)
        if "error" in response:
            raise AssertionError(f"anvil {method} failed: {response['error']}")
        return response["result"]

    def fund(self, address: str, wei: int = 10**21) -> None:
        self.call("anvil_setBalance", [address, hex(wei)])


def start_anvil(*extra: str) -> Anvil:
    port = free_port()
    process = subprocess.Popen(
        [tool("anvil"), "--host", "127.0.0.1", "--port", str(port), "--silent", *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"anvil exited with {process.returncode}")
        try:
            rpc_call(url, "eth_chainId", timeout=1)
            return Anvil(url, process)
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("anvil did not start within 20 s")


def stop(process: subprocess.Popen[Any]) -> None:
    """SIGTERM, then SIGKILL after 10 s; closes the pipes."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for pipe in (process.stdout, process.stderr):
        if pipe is not None:
            pipe.close()


@pytest.fixture
def anvil() -> Iterator[Anvil]:
    """A fresh anvil per test (reusing one across heavy bursts has hung it)."""
    node = start_anvil()
    yield node
    stop(node.process)


@pytest.fixture
def paused() -> Iterator[Anvil]:
    """A fresh anvil that mines only when told (evm_mine)."""
    node = start_anvil("--no-mining")
    yield node
    stop(node.process)


@pytest.fixture(scope="session")
def kms() -> Iterator[KmsEmulator]:
    emulator = start_kms_emulator()
    yield emulator
    emulator.stop()


@pytest.fixture(scope="session")
def kms_client(kms: KmsEmulator) -> Any:
    return boto3.client("kms", region_name=REGION, endpoint_url=kms.url)


@dataclass(frozen=True)
class KmsKey:
    arn: str
    key_id: str
    address: str
    alias: str | None


KeyFactory = Callable[..., KmsKey]


@pytest.fixture(scope="session")
def make_key(kms_client: Any) -> KeyFactory:
    """Create a KMS key in the emulator (secp256k1 SIGN_VERIFY unless told otherwise)."""
    counter = iter(range(1, 1_000_000))

    def make(
        alias: str | None = None,
        key_spec: str = "ECC_SECG_P256K1",
        key_usage: str = "SIGN_VERIFY",
    ) -> KmsKey:
        metadata = kms_client.create_key(KeySpec=key_spec, KeyUsage=key_usage)["KeyMetadata"]
        if alias is None:
            alias = f"alias/test-{next(counter)}-{metadata['KeyId'][:8]}"
        kms_client.create_alias(AliasName=alias, TargetKeyId=metadata["KeyId"])
        address = ""
        if key_spec == "ECC_SECG_P256K1":
            der = kms_client.get_public_key(KeyId=metadata["Arn"])["PublicKey"]
            address = address_from_public_key(public_key_from_spki(der))
        return KmsKey(metadata["Arn"], metadata["KeyId"], address, alias)

    return make


@dataclass
class ProxyProcess:
    url: str
    process: subprocess.Popen[str]


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run `signer-proxy ARGS` to completion (for commands that exit, e.g. a refused start)."""
    return subprocess.run(
        [sys.executable, "-m", "signer_proxy", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def start_proxy_process(*args: str, env: dict[str, str] | None = None) -> ProxyProcess:
    """`signer-proxy serve ARGS --listen 127.0.0.1:0` as a subprocess, once it is listening."""
    process = subprocess.Popen(
        [sys.executable, "-m", "signer_proxy", "serve", "--listen", "127.0.0.1:0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if "listening on" not in line:
        stop(process)
        stderr = process.stderr.read() if process.stderr else ""
        raise AssertionError(f"signer-proxy did not start: {line!r} {stderr}")
    return ProxyProcess(line.split("listening on ")[1].strip(), process)


# --- In-process proxy (create_app under aiohttp's test client) -----------------------------


@contextlib.contextmanager
def serving(anvil: Anvil, kms: KmsEmulator, key_ref: str) -> Iterator[ProxyProcess]:
    """`signer-proxy serve` (a real process) for one key in front of `anvil`; stopped after,
    and it must then exit 0."""
    proxy = start_proxy_process(
        "--upstream", anvil.url, "--aws-region", REGION,
        "--aws-endpoint-url", kms.url, "--kms-key", key_ref,
    )  # fmt: skip
    try:
        yield proxy
    finally:
        stop(proxy.process)
    assert proxy.process.returncode == 0


def start_api_key_proxy(
    anvil: Anvil, kms: KmsEmulator, key_ref: str, directory: Path
) -> ProxyProcess:
    """`signer-proxy serve` for one key in front of `anvil`, requiring one of the test API
    keys (tests/auth_support.API_KEYS, their hashes written to `directory`)."""
    from tests.auth_support import write_api_keys_file

    return start_proxy_process(
        "--upstream", anvil.url, "--aws-region", REGION, "--aws-endpoint-url", kms.url,
        "--kms-key", key_ref, "--api-keys-file", str(write_api_keys_file(directory)),
    )  # fmt: skip


def proxy_settings(upstream: str, kms_url: str, *keys: str, **overrides: Any) -> Any:
    """Settings for an in-process proxy against `upstream` and the KMS emulator."""
    from signer_proxy.config import Settings

    return Settings(
        upstream=upstream,
        aws_region=REGION,
        aws_endpoint_url=kms_url,
        kms_keys=keys,
        **overrides,
    )


@dataclass
class InProcessProxy:
    """An aiohttp test client around `create_app(settings)`, with JSON-RPC helpers."""

    client: Any  # aiohttp.test_utils.TestClient

    async def post(self, payload: Any, path: str = "/") -> tuple[int, Any]:
        """POST a JSON payload (or raw bytes); (HTTP status, decoded body or None if empty)."""
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        response = await self.client.post(
            path, data=data, headers={"Content-Type": "application/json"}
        )
        body = await response.read()
        return response.status, (json.loads(body) if body else None)

    async def call(
        self, method: str, params: Any = None, call_id: Any = 1, path: str = "/"
    ) -> dict[str, Any]:
        """One call (to the chain of `path`); the whole response object (asserts HTTP 200)."""
        status, body = await self.post(
            {"jsonrpc": "2.0", "id": call_id, "method": method, "params": params or []}, path
        )
        assert status == 200, (status, body)
        assert isinstance(body, dict)
        return body

    async def result(self, method: str, params: Any = None, path: str = "/") -> Any:
        """One call's result; fails the test on a JSON-RPC error."""
        response = await self.call(method, params, path=path)
        assert "error" not in response, f"{method} failed: {response['error']}"
        return response["result"]


ProxyFactory = Callable[..., Any]


def fast_lane_server(app: Any) -> Any:
    """aiohttp's TestServer for `app`, listening through the fast lane as `serve` does (so
    the in-process tests take the same path as real clients)."""
    from aiohttp import web
    from aiohttp.test_utils import TestServer
    from yarl import URL

    from signer_proxy.transport.fast_lane import RpcSite

    class FastLaneTestServer(TestServer):
        async def start_server(self, loop: Any = None, **kwargs: Any) -> None:
            if self.runner:
                return
            self._loop = loop
            self.runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
            await self.runner.setup()
            sock = self.socket_factory(self.host, 0, socket.AF_INET)
            await RpcSite(self.runner, sock=sock).start()
            self.host, self.port = sock.getsockname()[:2]
            self.scheme = "http"
            self._root = URL(f"http://{self.host}:{self.port}")

    return FastLaneTestServer(app)


@pytest.fixture
def start_proxy(aiohttp_client: Any) -> ProxyFactory:
    """`await start_proxy(settings, signers=None)`: an InProcessProxy, closed after the test."""
    from signer_proxy.app import create_app

    async def start(settings: Any, signers: Any = None) -> InProcessProxy:
        app = create_app(settings, signers=signers)
        return InProcessProxy(await aiohttp_client(fast_lane_server(app)))

    return start


@pytest.fixture
def funded_key(anvil: Anvil, make_key: KeyFactory) -> KmsKey:
    """A fresh KMS key whose address holds 1000 ETH on this test's anvil."""
    key = make_key()
    anvil.fund(key.address)
    return key


@pytest.fixture
async def proxy(
    start_proxy: ProxyFactory, anvil: Anvil, kms: KmsEmulator, funded_key: KmsKey
) -> InProcessProxy:
    """An in-process proxy holding `funded_key`, forwarding to this test's anvil."""
    proxy: InProcessProxy = await start_proxy(
        proxy_settings(anvil.url, kms.url, funded_key.alias or funded_key.arn)
    )
    return proxy


@pytest.fixture
def eth_account_kzg(monkeypatch: pytest.MonkeyPatch) -> None:
    """eth-account reloads the 2-5 s KZG trusted setup for every blob and property it computes
    (signing, or merely parsing, a blob transaction with blobs); hand it the one signer_proxy
    loaded (the same file) so a blob oracle costs seconds, not a minute."""
    import eth_account.typed_transactions.base as eth_account_blobs

    from signer_proxy.eth.blobs import trusted_setup

    monkeypatch.setattr(eth_account_blobs, "load_trusted_setup", lambda *_: trusted_setup())


# --- Redis: the replicas' shared nonce store ----------------------------------------------


@dataclass
class RedisServer:
    url: str
    process: subprocess.Popen[bytes]

    def flush(self) -> None:
        import redis

        client = redis.Redis.from_url(self.url)
        try:
            client.flushall()
        finally:
            client.close()


def redis_server_binary() -> str:
    """The Debian package's redis-server; `make test` installs it when missing."""
    found = shutil.which("redis-server") or shutil.which("redis-server", path="/usr/bin:/usr/sbin")
    if found is None:
        pytest.fail("redis-server not found: run `make test` (it installs the Debian package)")
    return found


def start_redis_server(*extra: str, auth: str = "") -> RedisServer:
    """redis-server on a free loopback port, nothing persisted; `extra` config arguments, and
    `auth` ("user:password@" or ":password@") for the URL when they require a login."""
    import redis

    port = free_port()
    process = subprocess.Popen(
        [
            redis_server_binary(),
            "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", "/tmp", "--dbfilename", f"signer-proxy-test-{port}.rdb", *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://{auth}127.0.0.1:{port}/0"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited with {process.returncode}")
        client = redis.Redis.from_url(url, socket_timeout=1)
        try:
            client.ping()
            return RedisServer(url, process)
        except redis.RedisError:
            time.sleep(0.05)
        finally:
            client.close()
    process.kill()
    raise RuntimeError("redis-server did not start within 20 s")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = start_redis_server()
    yield server
    stop(server.process)


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's redis-server, emptied for this test."""
    redis_server.flush()
    return redis_server.url
