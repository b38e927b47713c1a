"""Operating `signer-proxy serve` as a real process: JSON logs traced by request id with no
secrets, SIGTERM draining an in-flight send, the separate metrics listener, `healthcheck`."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from signer_proxy.dev.kms_emulator import KmsEmulator
from tests.conftest import REGION, Anvil, KeyFactory, KmsKey, free_port, run_cli, stop
from tests.integration.node_front import NodeFront

pytestmark = pytest.mark.integration

DEAD = "0x000000000000000000000000000000000000dEaD"

# Planted where a real deployment keeps credentials; none may ever be written out.
URL_PASSWORD = "pw-Zq81LmVx"
URL_PATH_KEY = "pathkey0c1d2e3f4a5b"
URL_QUERY_KEY = "querykey9f8e7d6c5b4a"
AWS_ACCESS = "AKIAOPSTESTKEYID0001"
AWS_SECRET = "opsTestSecret/NeverLogged+0123456789abcd"
AWS_TOKEN = "opsTestSessionTokenNeverLogged0123456789"
SECRETS = (URL_PASSWORD, URL_PATH_KEY, URL_QUERY_KEY, AWS_ACCESS, AWS_SECRET, AWS_TOKEN)


@dataclass
class LoggedProxy:
    url: str
    process: subprocess.Popen[str]
    log: Path
    extra_stdout: list[str]

    def logs(self) -> str:
        return self.log.read_text()


def start_logged_proxy(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None, stdout_lines: int = 1
) -> LoggedProxy:
    """`signer-proxy serve` with its log (stderr) in a file, so nothing blocks on a full pipe."""
    log = tmp_path / f"proxy-{time.monotonic_ns()}.log"
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "signer_proxy", "serve", "--listen", "127.0.0.1:0", *args],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env={**os.environ, **(env or {})},
        )
    assert process.stdout is not None
    lines = [process.stdout.readline() for _ in range(stdout_lines)]
    if "listening on" not in lines[0]:
        stop(process)
        raise AssertionError(f"signer-proxy did not start: {lines} {log.read_text()}")
    return LoggedProxy(lines[0].split("listening on ")[1].strip(), process, log, lines[1:])


def post(url: str, payload: Any, timeout: float = 30, **headers: str) -> tuple[Any, Any]:
    """(decoded body, response headers) of a JSON POST."""
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json", **headers},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read()), response.headers


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def send_tx(key: KmsKey) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "eth_sendTransaction",
        "params": [{"from": key.address, "to": DEAD, "value": "0x1"}],
    }


def refuses_connections(url: str) -> bool:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return False
    except ConnectionRefusedError:
        return True


@pytest.fixture
def kms_args(kms: KmsEmulator) -> tuple[str, ...]:
    return ("--aws-region", REGION, "--aws-endpoint-url", kms.url)


@pytest.fixture
def front(anvil: Anvil) -> Iterator[NodeFront]:
    node = NodeFront(anvil.url, delays={"eth_sendRawTransaction": 2.0})
    yield node
    node.stop()


def test_json_logs_trace_a_send_by_request_id_and_never_show_secrets(
    tmp_path: Path,
    anvil: Anvil,
    make_key: KeyFactory,
    kms_args: tuple[str, ...],
) -> None:
    key = make_key()
    anvil.fund(key.address)
    node = NodeFront(anvil.url)
    upstream = (
        f"http://opsuser:{URL_PASSWORD}@127.0.0.1:{node.port}/v3/{URL_PATH_KEY}"
        f"?apikey={URL_QUERY_KEY}"
    )
    proxy = start_logged_proxy(
        tmp_path,
        "--upstream", upstream, *kms_args, "--kms-key", key.alias or key.arn,
        "--log-format", "json", "--log-level", "debug",
        env={
            "AWS_ACCESS_KEY_ID": AWS_ACCESS,
            "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
            "AWS_SESSION_TOKEN": AWS_TOKEN,
        },
    )  # fmt: skip
    seen: list[str] = []
    try:
        reply, headers = post(proxy.url, send_tx(key), **{"X-Request-Id": "ops-trace-1"})
        tx_hash = reply["result"]
        seen += [json.dumps(reply), str(headers)]
        seen.append(json.dumps(post(proxy.url, {"jsonrpc": "2.0", "id": 2, "method": "x_y"})[0]))
        seen += [get(proxy.url + "/ready")[1], get(proxy.url + "/metrics")[1]]
        node.stop()  # the node goes away: errors and readiness now talk about it
        down = post(proxy.url, {"jsonrpc": "2.0", "id": 3, "method": "eth_blockNumber"})[0]
        status, ready = get(proxy.url + "/ready")
        seen += [json.dumps(down), ready]
    finally:
        stop(proxy.process)
    logs = proxy.logs()
    lines = [json.loads(line) for line in logs.splitlines()]  # every line is one JSON object

    # The URL with its credentials was really used: the node saw the path, query and auth.
    assert node.paths[0] == f"/v3/{URL_PATH_KEY}?apikey={URL_QUERY_KEY}"
    assert node.authorizations[0] is not None
    assert "could not be reached" in down["error"]["message"]
    assert status == 503
    for secret in SECRETS:
        assert secret not in logs
        for text in seen:
            assert secret not in text
    traced = [line for line in lines if line.get("request_id") == "ops-trace-1"]
    signing = [line for line in traced if "digest" in line]
    assert len(signing) == 1
    assert signing[0]["level"] == "debug"
    assert signing[0]["key"] == key.arn
    assert re.fullmatch(r"0x[0-9a-f]{64}", signing[0]["digest"])
    sending, sent = [line for line in traced if line.get("tx_hash") == tx_hash]
    assert sending["message"].startswith("sending tx=")  # written before the node sees it
    # At info, the one line per send: everything needed to find the transaction.
    assert sending["level"] == "info" and sending["nonce"] == 0
    assert sending["key"] == key.arn and sending["from"] == key.address
    assert sent["level"] == "debug"
    assert sent["key"] == key.arn and sent["from"] == key.address
    assert anvil.call("eth_getTransactionReceipt", [tx_hash])["status"] == "0x1"


def test_sigterm_mid_send_finishes_the_send_then_exits_0(
    tmp_path: Path,
    anvil: Anvil,
    funded_key: KmsKey,
    kms_args: tuple[str, ...],
    front: NodeFront,
) -> None:
    proxy = start_logged_proxy(
        tmp_path, "--upstream", front.url, *kms_args, "--kms-key", funded_key.arn,
        "--shutdown-timeout", "20",
    )  # fmt: skip
    result: dict[str, Any] = {}

    def send() -> None:
        try:
            result["reply"] = post(proxy.url, send_tx(funded_key))[0]
        except Exception as exc:
            result["error"] = exc

    client = threading.Thread(target=send)
    client.start()
    try:
        assert front.seen["eth_sendRawTransaction"].wait(30), "the send never reached the node"
        proxy.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 1.5
        while not refuses_connections(proxy.url) and time.monotonic() < deadline:
            time.sleep(0.02)
        # No new connections while the signed transaction is still on its way to the node.
        assert refuses_connections(proxy.url)
        assert client.is_alive()
        client.join(30)
        code = proxy.process.wait(15)
    finally:
        stop(proxy.process)

    assert "error" not in result, result
    tx_hash = result["reply"]["result"]
    assert code == 0
    assert anvil.call("eth_getTransactionReceipt", [tx_hash])["status"] == "0x1"
    logs = proxy.logs()
    assert "waiting up to 20 s for 1 in-flight request(s)" in logs
    assert "in-flight requests finished" in logs


def test_sigterm_deadline_cancels_what_is_left_and_still_exits_0(
    tmp_path: Path,
    anvil: Anvil,
    funded_key: KmsKey,
    kms_args: tuple[str, ...],
) -> None:
    front = NodeFront(anvil.url, delays={"eth_sendRawTransaction": 30.0})
    proxy = start_logged_proxy(
        tmp_path, "--upstream", front.url, *kms_args, "--kms-key", funded_key.arn,
        "--shutdown-timeout", "0.5",
    )  # fmt: skip
    errors: list[Exception] = []

    def send() -> None:
        try:
            post(proxy.url, send_tx(funded_key))
        except Exception as exc:
            errors.append(exc)

    client = threading.Thread(target=send)
    client.start()
    try:
        assert front.seen["eth_sendRawTransaction"].wait(30)
        proxy.process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        code = proxy.process.wait(10)
        took = time.monotonic() - started
        client.join(10)
    finally:
        stop(proxy.process)
        front.stop()

    assert code == 0
    assert took < 4, f"exit took {took:.1f} s with a 0.5 s deadline"
    assert len(errors) == 1  # the client's connection was cut: it got no answer
    logs = proxy.logs()
    assert "shutdown deadline of 0.5 s reached: cancelling 1 request(s)" in logs
    assert re.search(r"sending tx=0x[0-9a-f]{64}", logs)  # the hash to look up afterwards


def test_metrics_listen_serves_ops_endpoints_apart_and_healthcheck_probes_health(
    tmp_path: Path, anvil: Anvil, funded_key: KmsKey, kms_args: tuple[str, ...]
) -> None:
    proxy = start_logged_proxy(
        tmp_path, "--upstream", anvil.url, *kms_args, "--kms-key", funded_key.arn,
        "--metrics-listen", "127.0.0.1:0", stdout_lines=2,
    )  # fmt: skip
    try:
        metrics_url = proxy.extra_stdout[0].split("metrics on ")[1].strip()
        ops_base = metrics_url.removesuffix("/metrics")
        post(proxy.url, send_tx(funded_key))
        metrics_status, metrics = get(metrics_url)
        ops_ready = get(ops_base + "/ready")[0]
        main_metrics = get(proxy.url + "/metrics")[0]
        main_health = get(proxy.url + "/health")[0]
        listen = proxy.url.removeprefix("http://")
        healthy = run_cli("healthcheck", "--listen", listen)
        dead = run_cli("healthcheck", "--listen", f"127.0.0.1:{free_port()}")
    finally:
        stop(proxy.process)

    assert metrics_status == 200
    assert (
        'signer_proxy_requests_total{chain="default",family="send_transaction",outcome="ok"} 1.0'
        in metrics
    )
    assert ops_ready == 200
    assert main_metrics == 404  # only the ops listener exposes metrics
    assert main_health == 200
    assert healthy.returncode == 0, healthy.stderr
    assert dead.returncode == 1
    assert "did not answer" in dead.stderr
    assert proxy.process.returncode == 0
