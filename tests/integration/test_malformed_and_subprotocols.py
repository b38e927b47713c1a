"""What anyone can send before the door: malformed HTTP requests (one counted debug line each,
no traceback) and WebSocket subprotocols carrying an API key (never logged)."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import aiohttp
import pytest

from tests.auth_support import API_KEYS, write_api_keys_file
from tests.conftest import Anvil, KmsEmulator, KmsKey, start_proxy_process, stop

pytestmark = pytest.mark.integration

MALFORMED = [
    b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: abc\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n",
]


def test_malformed_requests_are_counted_not_logged_as_errors(
    tmp_path: Path, anvil: Anvil, kms: KmsEmulator, funded_key: KmsKey
) -> None:
    keys_file = write_api_keys_file(tmp_path)
    proxy = start_proxy_process(
        "--upstream", anvil.url, "--aws-region", "us-east-1", "--aws-endpoint-url", kms.url,
        "--kms-key", funded_key.alias or funded_key.arn, "--api-keys-file", str(keys_file),
    )  # fmt: skip
    host, port = proxy.url.removeprefix("http://").rsplit(":", 1)
    try:
        for _ in range(10):
            for payload in MALFORMED:
                with socket.create_connection((host, int(port))) as conn:
                    conn.sendall(payload)
                    assert conn.recv(100).startswith(b"HTTP/1.")
        request = urllib.request.Request(
            f"{proxy.url}/metrics", headers={"Authorization": f"Bearer {API_KEYS['ci']}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            metrics = response.read().decode()
    finally:
        log = stopped_log(proxy.process)
    counted = [line for line in metrics.splitlines() if line.startswith("signer_proxy_malformed")]
    # The first two kinds; TLS on the plain port is answered 400 without any log line.
    assert counted[0] == "signer_proxy_malformed_requests_total 20.0", counted
    assert "Traceback" not in log and "Error handling request" not in log, log[-2000:]


def stopped_log(process: subprocess.Popen[str]) -> str:
    """Stop the proxy; what it wrote to stderr."""
    process.terminate()
    _, err = process.communicate(timeout=20)
    stop(process)
    return err


async def open_ws(url: str, protocols: tuple[str, ...], headers: dict[str, str]) -> int | str:
    async with aiohttp.ClientSession() as session:
        try:
            async with session.ws_connect(url, protocols=protocols, headers=headers) as ws:
                await ws.send_str('{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}')
                return str((await ws.receive()).data)
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status


def test_an_api_key_offered_as_a_subprotocol_is_never_logged(
    tmp_path: Path, anvil: Anvil, kms: KmsEmulator, funded_key: KmsKey
) -> None:
    keys_file = write_api_keys_file(tmp_path)
    proxy = start_proxy_process(
        "--upstream", anvil.url, "--aws-region", "us-east-1", "--aws-endpoint-url", kms.url,
        "--kms-key", funded_key.alias or funded_key.arn, "--api-keys-file", str(keys_file),
        "--log-level", "debug",
    )  # fmt: skip
    url = proxy.url.replace("http://", "ws://")
    key = API_KEYS["dapp"]
    try:
        # A browser's workaround: the key as a subprotocol, no header. Refused at the door.
        assert asyncio.run(open_ws(url, (key,), {})) == 401
        # With the key in the header too: served; the offered subprotocol is not echoed in logs.
        reply = asyncio.run(open_ws(url, (key,), {"Authorization": f"Bearer {key}"}))
        assert '"result":"0x7a69"' in str(reply)
        time.sleep(0.2)
    finally:
        log = stopped_log(proxy.process)
    assert key not in log
    assert "Client protocols [redacted]" in log  # aiohttp did warn, scrubbed
