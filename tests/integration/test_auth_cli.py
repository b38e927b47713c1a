"""The CLI side of who may sign what, as real processes: `hash-api-key`, the refusal to serve
a non-loopback address without authentication, and `serve` with API keys, client
certificates, HTTPS (a renewed certificate picked up without a restart), an audit log and a
policy, signing through the KMS emulator onto anvil; plus an https:// node with a private CA.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import ssl
import time
from pathlib import Path
from typing import Any

import pytest

from signer_proxy.access.auth import Authenticator, Credentials, generate_api_key
from signer_proxy.dev.kms_emulator import KmsEmulator
from tests.auth_support import (
    API_KEYS,
    TestCa,
    receipt,
    write_api_keys_file,
    write_policy_file,
)
from tests.conftest import (
    REGION,
    Anvil,
    KeyFactory,
    ProxyFactory,
    proxy_settings,
    run_cli,
    start_api_key_proxy,
    start_proxy_process,
    stop,
)
from tests.integration.node_front import NodeFront

pytestmark = pytest.mark.integration

TO = "0x000000000000000000000000000000000000dEaD"


# --- hash-api-key -----------------------------------------------------------------------------


def test_hash_api_key_reads_stdin_and_prints_a_hash_that_verifies() -> None:
    key = API_KEYS["ci"]
    result = run_cli_input(["hash-api-key", "--client", "ci"], key + "\n")

    assert result.returncode == 0, result.stderr
    client, _, hashed = result.stdout.strip().partition(": ")
    assert client == "ci"
    assert key not in result.stdout + result.stderr
    identity = Authenticator({"ci": [hashed]}, required=True).authenticate(Credentials(key))
    assert identity.client == "ci"


def test_hash_api_key_generate_prints_the_key_then_its_hash() -> None:
    result = run_cli_input(["hash-api-key", "--generate"], "")

    assert result.returncode == 0, result.stderr
    first, second = result.stdout.strip().splitlines()
    key = first.rsplit(": ", 1)[1]
    assert key.startswith("spk_") and len(key) > 40
    authenticator = Authenticator({"new": [second]}, required=True)
    assert authenticator.authenticate(Credentials(key)).client == "new"


@pytest.mark.parametrize(
    ("args", "stdin", "fragment"),
    [
        pytest.param(["hash-api-key"], "short\n", "at least 32 characters", id="short-key"),
        pytest.param(["hash-api-key"], "", "at least 32 characters", id="no-key"),
        pytest.param(
            ["hash-api-key", "--client", "bad name"], generate_api_key(), "--client", id="name"
        ),
    ],
)
def test_hash_api_key_refusals_exit_2(args: list[str], stdin: str, fragment: str) -> None:
    result = run_cli_input(args, stdin)
    assert result.returncode == 2
    assert fragment in result.stderr


def run_cli_input(args: list[str], stdin: str) -> Any:
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "signer_proxy", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


# --- the loopback rule ------------------------------------------------------------------------


def test_serve_refuses_to_listen_beyond_loopback_without_authentication() -> None:
    # Refused while reading the settings: nothing binds, so no address but loopback is used.
    result = run_cli(
        "serve", "--listen", "0.0.0.0:8545", "--upstream", "http://127.0.0.1:9",
        "--kms-key", "alias/x",
    )  # fmt: skip
    assert result.returncode == 2
    assert "is not a loopback address and no authentication is configured" in result.stderr
    assert "--insecure-no-auth" in result.stderr


# --- serve with everything on -----------------------------------------------------------------


def https(url: str, context: ssl.SSLContext, payload: Any, headers: dict[str, str]) -> Any:
    """POST over a new TLS connection: (status, body, the server certificate's serial)."""
    host, port = url.removeprefix("https://").rsplit(":", 1)
    connection = http.client.HTTPSConnection(host, int(port), context=context, timeout=30)
    try:
        connection.request(
            "POST",
            "/",
            body=json.dumps(payload),
            headers={"Content-Type": "application/json", **headers},
        )
        response = connection.getresponse()
        serial = connection.sock.getpeercert()["serialNumber"]
        return response.status, json.loads(response.read()), int(serial, 16)
    finally:
        connection.close()


def call(method: str, params: Any = None) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}


def test_serve_with_api_keys_client_certificates_https_audit_and_policy(
    anvil: Anvil, kms: KmsEmulator, make_key: KeyFactory, tmp_path: Path
) -> None:
    key = make_key()
    anvil.fund(key.address)
    ca = TestCa(tmp_path)
    first, renewed = (
        ca.issue("localhost", server=True),
        ca.issue("localhost", server=True, file_stem="renewed"),
    )
    shutil.copy(first.cert, tmp_path / "tls.crt")
    shutil.copy(first.key, tmp_path / "tls.key")
    deployer = ca.issue("deployer.ci.example", server=False)
    stranger = ca.issue("stranger.example", server=False)
    client_ca = tmp_path / "clients-ca.pem"  # replaced below, as a Secret update does
    shutil.copy(ca.path, client_ca)
    policy = write_policy_file(
        tmp_path,
        {
            "defaults": {"max_value": "1 ether"},
            "clients": {"deployer": {"client_cert_names": ["deployer.ci.example"]}},
        },
    )
    audit = tmp_path / "audit.jsonl"
    proxy = start_proxy_process(
        "--upstream", anvil.url, "--aws-region", REGION, "--aws-endpoint-url", kms.url,
        "--kms-key", key.alias or key.arn, "--log-level", "debug",
        "--api-keys-file", str(write_api_keys_file(tmp_path)), "--policy-file", str(policy),
        "--audit-log", str(audit), "--tls-cert-file", str(tmp_path / "tls.crt"),
        "--tls-key-file", str(tmp_path / "tls.key"), "--tls-client-ca-file", str(client_ca),
        "--tls-reload-interval", "0.2",
    )  # fmt: skip
    try:
        assert proxy.url.startswith("https://127.0.0.1:")
        trusting = ssl.create_default_context(cafile=str(ca.path))
        with_cert = ssl.create_default_context(cafile=str(ca.path))
        with_cert.load_cert_chain(deployer.cert, deployer.key)
        with_stranger = ssl.create_default_context(cafile=str(ca.path))
        with_stranger.load_cert_chain(stranger.cert, stranger.key)

        status, body, serial = https(proxy.url, trusting, call("eth_accounts"), {})
        assert (status, body["error"]["code"]) == (401, -32040)
        assert serial == first.serial
        status, body, _ = https(proxy.url, with_stranger, call("eth_accounts"), {})
        assert status == 401 and "stranger.example) is not mapped" in body["error"]["message"]
        bearer = {"Authorization": f"Bearer {API_KEYS['ci']}"}
        status, body, _ = https(proxy.url, trusting, call("eth_accounts"), bearer)
        assert (status, body["result"]) == (200, [key.address])

        tx = {"from": key.address, "to": TO, "value": "0x1"}
        status, sent, _ = https(proxy.url, with_cert, call("eth_sendTransaction", [tx]), {})
        assert status == 200, sent
        assert receipt(anvil, sent["result"])["status"] == "0x1"
        too_much = {**tx, "value": hex(2 * 10**18)}
        _, denied, _ = https(proxy.url, with_cert, call("eth_sendTransaction", [too_much]), {})
        assert denied["error"]["data"] == {"rule": "max_value", "scope": "defaults"}

        # The container health check speaks HTTPS to its own listener.
        health = run_cli(
            "healthcheck", "--listen", proxy.url.removeprefix("https://"),
            "--tls-cert-file", str(tmp_path / "tls.crt"),
            "--tls-key-file", str(tmp_path / "tls.key"),
        )  # fmt: skip
        assert health.returncode == 0, health.stderr

        # A renewed certificate (cert-manager, a Secret update) is served without a restart.
        for name, source in (("tls.crt", renewed.cert), ("tls.key", renewed.key)):
            shutil.copy(source, tmp_path / f"{name}.new")
            os.replace(tmp_path / f"{name}.new", tmp_path / name)
        deadline = time.monotonic() + 10
        while https(proxy.url, trusting, call("eth_chainId"), bearer)[2] != renewed.serial:
            assert time.monotonic() < deadline, "the renewed certificate was not picked up"
            time.sleep(0.1)

        # So is a new client CA: the deployer's certificate from the new CA is accepted, the
        # one from the old CA no longer is.
        new_ca = TestCa(tmp_path, "second test CA")
        reissued = new_ca.issue("deployer.ci.example", server=False, file_stem="deployer-2")
        with_new_cert = ssl.create_default_context(cafile=str(ca.path))
        with_new_cert.load_cert_chain(reissued.cert, reissued.key)
        # An untrusted client certificate ends the handshake; over TLS 1.3 the client may learn
        # it only on its first read (the connection closed without a response).
        refused = (ssl.SSLError, ConnectionError)
        with pytest.raises(refused):  # the new CA is not trusted yet
            https(proxy.url, with_new_cert, call("eth_accounts"), {})
        shutil.copy(new_ca.path, tmp_path / "clients-ca.new")
        os.replace(tmp_path / "clients-ca.new", client_ca)
        deadline = time.monotonic() + 10
        while True:
            try:
                status, body, _ = https(proxy.url, with_new_cert, call("eth_accounts"), {})
                break
            except refused:
                assert time.monotonic() < deadline, "the new client CA was not picked up"
                time.sleep(0.1)
        assert (status, body["result"]) == (200, [key.address])
        with pytest.raises(refused):
            https(proxy.url, with_cert, call("eth_accounts"), {})
    finally:
        stop(proxy.process)
    assert proxy.process.returncode == 0

    lines = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [(e["client"], e["auth"], e["outcome"]) for e in lines] == [
        ("deployer", "client_cert", "allowed"),
        ("deployer", "client_cert", "denied"),
    ]
    assert lines[0]["key"] == key.arn  # the KMS key ARN, not the alias
    assert lines[0]["tx_hash"] == sent["result"]
    assert lines[0]["transport"] == "http"


def test_serve_logs_no_api_key_even_at_debug_with_query_keys(
    anvil: Anvil, kms: KmsEmulator, make_key: KeyFactory, tmp_path: Path
) -> None:
    key = make_key()
    proxy = start_proxy_process(
        "--upstream", anvil.url, "--aws-region", REGION, "--aws-endpoint-url", kms.url,
        "--kms-key", key.arn, "--log-level", "debug", "--log-format", "json",
        "--api-keys-file", str(write_api_keys_file(tmp_path)), "--allow-api-key-in-query",
        "--audit-log", "-",
    )  # fmt: skip
    wrong = "spk_wrong-key-0123456789abcdefghijklmnopqrstu"
    import urllib.error
    import urllib.request

    statuses = []
    try:
        for query in (f"?key={API_KEYS['ci']}", f"?key={wrong}", ""):
            for headers in ({}, {"Authorization": f"Bearer {API_KEYS['dapp']}"}):
                request = urllib.request.Request(
                    proxy.url + "/" + query,
                    data=json.dumps(call("personal_sign", ["0x68690a", key.address])).encode(),
                    headers={"Content-Type": "application/json", **headers},
                )
                try:
                    with urllib.request.urlopen(request, timeout=30) as response:
                        statuses.append(response.status)
                except urllib.error.HTTPError as exc:
                    statuses.append(exc.code)
    finally:
        proxy.process.terminate()
        output, errors = proxy.process.communicate(timeout=30)
    assert proxy.process.returncode == 0
    assert statuses == [200, 200, 401, 200, 401, 200]
    audit = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert [e["auth"] for e in audit] == ["api_key_query", "api_key", "api_key", "api_key"]
    assert "refused an unauthenticated request" in errors
    for secret in (*API_KEYS.values(), wrong):
        assert secret not in output
        assert secret not in errors


# --- an https:// node with a private CA -----------------------------------------------------


async def test_upstream_over_https_with_a_private_ca(
    start_proxy: ProxyFactory, anvil: Anvil, tmp_path: Path
) -> None:
    from signer_proxy.keys.local import LocalKeySigner

    ca = TestCa(tmp_path, "node CA")
    server = ca.issue("localhost", server=True)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(server.cert, server.key)
    front = NodeFront(anvil.url, tls=tls)
    try:
        signers = [LocalKeySigner(b"\x01" * 32)]
        trusted = await start_proxy(
            proxy_settings(front.url, "http://127.0.0.1:9", upstream_ca_file=str(ca.path)),
            signers=signers,
        )
        untrusted = await start_proxy(
            proxy_settings(front.url, "http://127.0.0.1:9"), signers=signers
        )

        assert (await trusted.call("eth_chainId"))["result"] == "0x7a69"
        refused = await untrusted.call("eth_chainId")
    finally:
        front.stop()
    assert front.url.startswith("https://")
    assert refused["error"]["code"] == -32020
    assert "Certificate" in refused["error"]["message"]


def test_cast_send_through_an_authenticated_proxy_with_its_header(
    anvil: Anvil, kms: KmsEmulator, make_key: KeyFactory, tmp_path: Path
) -> None:
    import subprocess

    from tests.conftest import tool

    key = make_key()
    anvil.fund(key.address)
    proxy = start_api_key_proxy(anvil, kms, key.arn, tmp_path)
    send = [tool("cast"), "send", "--unlocked", "--from", key.address, "--rpc-url", proxy.url,
            TO, "--value", "1", "--json"]  # fmt: skip
    try:
        refused = subprocess.run(send, capture_output=True, text=True, timeout=60)
        sent = subprocess.run(
            [*send, "--rpc-headers", f"Authorization: Bearer {API_KEYS['ci']}"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        stop(proxy.process)
    # (the npm wrapper of cast 1.7.1 exits 0 even on this error: judge by what it printed)
    assert "HTTP error 401" in refused.stderr
    assert "-32040" in refused.stderr
    assert refused.stdout == ""
    assert sent.returncode == 0, sent.stderr
    assert receipt(anvil, json.loads(sent.stdout)["transactionHash"])["status"] == "0x1"


def test_ethers_sends_its_api_key_in_a_fetch_request_header(
    kms: KmsEmulator, make_key: KeyFactory, anvil: Anvil, tmp_path: Path
) -> None:
    import shutil as which
    import subprocess

    from tests.conftest import ROOT

    node = which.which("node")
    assert node is not None, "node is required (make test installs ethers with npm)"
    key = make_key()
    proxy = start_api_key_proxy(anvil, kms, key.arn, tmp_path)
    script = [node, str(ROOT / "tests" / "fixtures" / "ethers_api_key.cjs"), proxy.url]
    env = {**os.environ, "NODE_PATH": str(ROOT / ".tools" / "node_modules")}
    try:
        good = subprocess.run(
            script,
            env={**env, "SIGNER_PROXY_API_KEY": API_KEYS["dapp"]},
            capture_output=True,
            text=True,
            timeout=60,
        )
        bad = subprocess.run(
            script,
            env={**env, "SIGNER_PROXY_API_KEY": "spk_" + "z" * 40},
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        stop(proxy.process)
    assert good.returncode == 0, good.stdout + good.stderr
    assert json.loads(good.stdout) == {"address": key.address, "recovered": key.address}
    assert bad.returncode == 1
    assert json.loads(bad.stdout.splitlines()[-1]) == {"error": "server response 401 Unauthorized"}
