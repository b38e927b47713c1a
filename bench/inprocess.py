"""The proxy's own Python per call, in one process, with no sockets: the real app behind a
fake client transport, its node and KMS connections answered by fakes whose own work is
timed and subtracted. Steadier than a load run on a noisy VM, and it leaves out the system
calls; docs/design.md ("Fast") quotes both.

    .venv/bin/python -m bench.inprocess passthrough [N]   # eth_blockNumber: µs per call
    .venv/bin/python -m bench.inprocess signing [N]       # eth_sendTransaction, gas given:
                                                          # µs per transaction, layer by layer

One request runs at a time, so the wall time spent inside a layer is its CPU; each figure is
the best of 5 rounds of N requests. The KMS key is loaded at startup from the benchmark's KMS
stand-in (bench/kms_server.py, started here on a free loopback port); after that the fakes
answer. Tracking is off: it has its own rows in bench/run.py and bench/tracking.py.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import uvloop
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from bench.kms_server import N as CURVE_ORDER
from bench.kms_server import alias_name, make_keys
from bench.run import BLOCK_NUMBER, address_from_public_key, free_port, send_body
from signer_proxy.access import gate
from signer_proxy.app import create_app
from signer_proxy.chain import signing
from signer_proxy.config import Settings
from signer_proxy.eth.ecdsa import keccak256
from signer_proxy.keys import aws_kms, kms_sign
from signer_proxy.methods import transactions
from signer_proxy.ops import metrics
from signer_proxy.transport.fast_lane import FAST_LANE, FastLaneProtocol
from signer_proxy.upstream import http_pool

ROOT = Path(__file__).resolve().parent.parent
ROUNDS = 5
KEY = make_keys(1)[0]
_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: %s\r\ncontent-length: %d\r\n\r\n"


class Fakes:
    """The node and KMS answers, and the time spent making them (taken off every figure)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.sent = 0
        self.signs = 0

    def node(self, body: bytes) -> bytes:
        request = orjson.loads(body)
        method = request["method"]
        result: Any = None
        if method == "eth_sendRawTransaction":
            result = "0x" + keccak256(bytes.fromhex(request["params"][0][2:])).hex()
            self.sent += 1
        elif method == "eth_getTransactionCount":
            result = hex(self.sent)
        elif method == "eth_chainId":
            result = "0x7a69"
        elif method == "eth_blockNumber":
            result = "0x1"
        out = orjson.dumps({"jsonrpc": "2.0", "id": request["id"], "result": result})
        return _HEAD % (b"application/json", len(out)) + out

    def kms(self, body: bytes) -> bytes:
        request = orjson.loads(body)
        digest = base64.b64decode(request["Message"])
        raw = KEY.private.sign_recoverable(digest, hasher=None)
        r, s = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:64], "big")
        self.signs += 1
        if self.signs % 2 == 0:  # like KMS (and the stand-in), half come back high-S
            s = CURVE_ORDER - s
        signature = base64.b64encode(encode_dss_signature(r, s)).decode()
        out = orjson.dumps(
            {"KeyId": KEY.arn, "Signature": signature, "SigningAlgorithm": "ECDSA_SHA_256"}
        )
        return _HEAD % (b"application/x-amz-json-1.1", len(out)) + out


class FakePeer(asyncio.Transport):
    """The node's (or KMS's) side of a pool connection: answers each request on the loop."""

    def __init__(self, connection: Any, answer: Callable[[bytes], bytes], fakes: Fakes) -> None:
        super().__init__()
        self._connection = connection
        self._answer = answer
        self._fakes = fakes
        self._loop = asyncio.get_running_loop()

    def write(self, data: Any) -> None:
        started = time.perf_counter()
        answer = self._answer(bytes(data).split(b"\r\n\r\n", 1)[1])
        self._fakes.seconds += time.perf_counter() - started
        self._loop.call_soon(self._connection.data_received, answer)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass


class FakeClient(asyncio.Transport):
    """A keep-alive client that sends `request` again as soon as the reply is written."""

    def __init__(self, request: bytes, count: int) -> None:
        super().__init__()
        self.request = request
        self.count = count
        self.replies = 0
        self.last = b""
        self.protocol: FastLaneProtocol | None = None
        self.done = asyncio.get_running_loop().create_future()

    def write(self, data: Any) -> None:
        self._replied(bytes(data))

    def writelines(self, parts: Any) -> None:
        self._replied(b"".join(parts))

    def _replied(self, data: bytes) -> None:
        self.last = data
        self.replies += 1
        if self.replies < self.count:
            assert self.protocol is not None
            asyncio.get_running_loop().call_soon(self.protocol.data_received, self.request)
        elif not self.done.done():
            self.done.set_result(None)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass


class Layers:
    """Wall time inside chosen methods, less the fakes' time spent within them."""

    def __init__(self, fakes: Fakes) -> None:
        self.fakes = fakes
        self.seconds: Counter[str] = Counter()

    def time_async(self, owner: Any, name: str, label: str) -> None:
        inner = getattr(owner, name)
        fakes, seconds = self.fakes, self.seconds

        @functools.wraps(inner)
        async def timed(*args: Any, **kwargs: Any) -> Any:
            fake, started = fakes.seconds, time.perf_counter()
            try:
                return await inner(*args, **kwargs)
            finally:
                seconds[label] += time.perf_counter() - started - (fakes.seconds - fake)

        setattr(owner, name, timed)

    def time_sync(self, owner: Any, name: str, label: str) -> None:
        inner = getattr(owner, name)
        seconds = self.seconds

        @functools.wraps(inner)
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                seconds[label] += time.perf_counter() - started

        setattr(owner, name, timed)


def signing_layers(layers: Layers) -> None:
    """The layers of an eth_sendTransaction, outermost first (docs/design.md's table)."""
    methods = transactions.TransactionMethods
    layers.time_async(methods, "eth_sendTransaction", "eth_sendTransaction")
    layers.time_sync(transactions, "parse_tx_request", "parse_tx_request")
    layers.time_async(methods, "_prepare", "_prepare (fill)")
    layers.time_async(gate.SigningGate, "_ended", "the gate's close (audit)")
    layers.time_async(methods, "_sign_and_send", "_sign_and_send")
    layers.time_async(methods, "_sign_leased", "_sign_leased")
    layers.time_async(gate.GuardedSigner, "sign_digest", "GuardedSigner.sign_digest")
    layers.time_async(metrics.MeteredSigner, "sign_digest", "MeteredSigner.sign_digest")
    layers.time_async(aws_kms.KmsSigner, "sign_digest", "KmsSigner.sign_digest")
    layers.time_async(aws_kms.KmsCalls, "run", "KmsCalls.run (slot, attempt timeout)")
    layers.time_async(kms_sign.LeanKmsClient, "sign", "the KMS Sign exchange")
    layers.time_sync(aws_kms, "canonical_signature", "canonical_signature (proof)")
    layers.time_sync(signing, "signing_digest", "signing_digest")
    layers.time_sync(signing, "sign_with", "sign_with")
    layers.time_async(methods, "_deliver", "_deliver (eth_sendRawTransaction)")


async def measure(mode: str, count: int, kms_url: str, kms_port: int) -> None:
    fakes = Fakes()

    async def connect(pool: http_pool.HttpPool) -> http_pool._Connection:
        connection = http_pool._Connection()
        answer = fakes.kms if pool._port == kms_port else fakes.node
        connection.connection_made(FakePeer(connection, answer, fakes))
        return connection

    http_pool.HttpPool._connect = connect  # type: ignore[method-assign]
    layers = Layers(fakes)
    if mode == "signing":
        signing_layers(layers)
        address = address_from_public_key(KEY.private.public_key.format(False))
        body, keys = send_body(address, True), (alias_name(0),)
    else:
        body, keys = BLOCK_NUMBER, ()
    request = (
        b"POST / HTTP/1.1\r\nHost: 127.0.0.1:8545\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    settings = Settings(
        upstream="http://127.0.0.1:8545",
        aws_region="us-east-1",
        aws_endpoint_url=kms_url,
        kms_keys=keys,
        track_transactions=False,
        log_level="warning",
    )
    app = create_app(settings, signers=None if keys else [])
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        best: tuple[float, Counter[str]] | None = None
        for _ in range(ROUNDS):
            client = FakeClient(request, count)
            protocol = FastLaneProtocol(app[FAST_LANE], lambda: None)
            client.protocol = protocol
            protocol.connection_made(client)
            fakes.seconds = 0.0
            layers.seconds.clear()
            started = time.process_time()
            protocol.data_received(request)
            await client.done
            total = time.process_time() - started - fakes.seconds
            assert b"200 OK" in client.last and b'"result"' in client.last, client.last[-200:]
            if best is None or total < best[0]:
                best = (total, Counter(layers.seconds))
        assert best is not None
        total, seconds = best
        print(f"{mode}: {total / count * 1e6:.1f} µs per request (best of {ROUNDS} x {count})")
        for label, spent in seconds.items():
            print(f"  {label:40s} {spent / count * 1e6:7.1f} µs")
    finally:
        await runner.cleanup()


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else "passthrough"
    if mode not in ("passthrough", "signing"):
        raise SystemExit(__doc__)
    count = int(sys.argv[2]) if len(sys.argv) > 2 else (20_000 if mode == "passthrough" else 3_000)
    port = free_port()
    stand_in = subprocess.Popen(
        [sys.executable, "-m", "bench.kms_server", "--port", str(port), "--keys", "1"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_EC2_METADATA_DISABLED="true"
    )
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        uvloop.run(measure(mode, count, f"http://127.0.0.1:{port}", port))
    finally:
        stand_in.terminate()
        stand_in.wait()


if __name__ == "__main__":
    main()
