"""Request members against a node that decodes JSON as geth does (Go's encoding/json: keys
matched case-insensitively, the last duplicate wins): a client's scope check and the node
must see the same method."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.auth_support import API_KEYS, write_api_keys_file, write_policy_file
from tests.conftest import ROOT, ProxyFactory, proxy_settings

pytestmark = pytest.mark.integration

SOURCE = ROOT / "tests" / "fixtures" / "go_jsonrpc"


@pytest.fixture(scope="module")
def go_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    go = shutil.which("go")
    if go is None:
        pytest.fail("go not found: run `make tools` (Debian golang-go)")
    out = tmp_path_factory.mktemp("go-node")
    binary = out / "go-node"
    subprocess.run(
        [go, "build", "-o", str(binary), "main.go"],
        cwd=SOURCE,
        check=True,
        capture_output=True,
        timeout=240,
        env={**os.environ, "GO111MODULE": "off", "GOCACHE": str(out / "cache")},
    )
    process = subprocess.Popen([str(binary)], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    address = process.stdout.readline().strip()
    yield f"http://{address}"
    process.terminate()
    process.wait(10)
    process.stdout.close()


async def reader_proxy(
    start_proxy: ProxyFactory, tmp_path: Path, upstream: str, kms: Any, key: Any
) -> Any:
    policy = write_policy_file(tmp_path, {"clients": {"reader": {"read_only": True}}})
    settings = proxy_settings(
        upstream,
        kms.url,
        key.alias,
        api_keys_file=str(write_api_keys_file(tmp_path)),
        policy_file=str(policy),
    )
    return await start_proxy(settings)


READ = "eth_blockNumber"
WRITE = "eth_sendRawTransaction"


@pytest.mark.parametrize(
    ("body", "outcome"),
    [
        pytest.param(
            f'{{"jsonrpc":"2.0","id":1,"method":"{READ}","Method":"{WRITE}","params":[]}}',
            "invalid",
            id="case-variant-key",
        ),
        pytest.param(
            f'{{"jsonrpc":"2.0","id":1,"method":"{READ}","METHOD":"{WRITE}","params":[]}}',
            "invalid",
            id="upper-case-key",
        ),
        pytest.param(
            f'{{"jsonrpc":"2.0","id":1,"method":"{WRITE}","method":"{READ}","params":[]}}',
            READ,
            id="duplicate-last-wins",
        ),
        pytest.param(
            f'{{"jsonrpc":"2.0","id":1,"\\u006dethod":"{WRITE}","method":"{READ}","params":[]}}',
            READ,
            id="escaped-then-plain",
        ),
        pytest.param(
            f'{{"jsonrpc":"2.0","id":1,"method":"{READ}","\\u006dethod":"{WRITE}","params":[]}}',
            "denied",
            id="plain-then-escaped",
        ),
        pytest.param(
            f'{{"jsonrpc":"2.0","id":1,"method":"{READ}","params":[],"extra":1}}',
            "invalid",
            id="unknown-member",
        ),
        pytest.param(
            f'[{{"jsonrpc":"2.0","id":1,"method":"{READ}","Method":"{WRITE}","params":[]}}]',
            "invalid",
            id="batch-case-variant",
        ),
        pytest.param(f'{{"jsonrpc":"2.0","id":1,"method":"{READ}","params":[]}}', READ, id="plain"),
    ],
)
async def test_the_go_node_runs_only_what_the_scope_check_saw(
    start_proxy: ProxyFactory,
    tmp_path: Path,
    go_node: str,
    kms: Any,
    make_key: Any,
    body: str,
    outcome: str,
) -> None:
    proxy = await reader_proxy(start_proxy, tmp_path, go_node, kms, make_key())
    response = await proxy.client.post(
        "/",
        data=body.encode(),
        headers={
            "Content-Type": "application/json",
            "Authorization": f"Bearer {API_KEYS['reader']}",
        },
    )
    reply = await response.json()
    reply = reply[0] if isinstance(reply, list) else reply
    if outcome == "invalid":
        assert reply["error"]["code"] == -32600, reply
        assert "only the members jsonrpc, id, method and params" in reply["error"]["message"]
    elif outcome == "denied":
        assert reply["error"]["code"] == -32043, reply  # read-only: the write is refused
    else:
        assert reply.get("result") == outcome, reply  # what the Go node decoded and ran
