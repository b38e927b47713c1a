"""`signer-proxy dev --backend azure|gcp` in this process: the keys live in the Azure Key Vault
or Cloud KMS emulator, and a transaction from the first account is signed and mined."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re

import aiohttp
import pytest

from signer_proxy.dev.runner import DevOptions, run_dev
from tests.conftest import tool

pytestmark = pytest.mark.integration


class BannerOut(io.StringIO):
    def __init__(self, ready: asyncio.Event) -> None:
        super().__init__()
        self.ready = ready

    def flush(self) -> None:
        self.ready.set()


async def rpc(
    session: aiohttp.ClientSession, url: str, method: str, params: list[object]
) -> object:
    async with session.post(
        url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    ) as response:
        body = await response.json()
    assert "error" not in body, body
    return body["result"]


@pytest.mark.parametrize("backend", ["azure", "gcp"])
async def test_dev_backend_signs_with_the_cloud_emulator(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("IDENTITY_ENDPOINT", "IDENTITY_HEADER", "GOOGLE_APPLICATION_CREDENTIALS"):
        monkeypatch.setenv(name, os.environ.get(name, ""))  # restored after the test
    stop, ready = asyncio.Event(), asyncio.Event()
    out = BannerOut(ready)
    dev = asyncio.create_task(
        run_dev(DevOptions(port=0, keys=1, backend=backend), stop=stop, out=out)
    )
    try:
        await asyncio.wait_for(ready.wait(), 60)
        banner = out.getvalue()
        scheme = "azurekv://" if backend == "azure" else "gcpkms://"
        assert scheme in banner
        # The banner names the backend the keys are in, not KMS (issue 16, item 7).
        name = "Azure Key Vault" if backend == "azure" else "Google Cloud KMS"
        assert f"signed by the {name} emulator through the proxy" in banner
        assert f"Key store                   the {name} emulator: " in banner
        assert "\n  KMS emulator" not in banner and "in the emulator's memory only" in banner
        url = re.search(r"Proxy \(JSON-RPC\)\s+(http://\S+)", banner)
        account = re.search(r"(0x[0-9a-fA-F]{40})", banner.split("Accounts", 1)[1])
        assert url and account
        async with aiohttp.ClientSession() as session:
            accounts = await rpc(session, url.group(1), "eth_accounts", [])
            assert accounts == [account.group(1)]
            tx = {
                "from": account.group(1),
                "to": "0x000000000000000000000000000000000000dEaD",
                "value": "0x1",
            }
            tx_hash = await rpc(session, url.group(1), "eth_sendTransaction", [tx])
            receipt = None
            for _ in range(100):
                receipt = await rpc(session, url.group(1), "eth_getTransactionReceipt", [tx_hash])
                if receipt:
                    break
                await asyncio.sleep(0.05)
            assert isinstance(receipt, dict) and receipt["status"] == "0x1"
            assert receipt["from"].lower() == account.group(1).lower()
        # The banner's cast command works as printed.
        command = re.search(r"^\s+(cast send .+)$", banner, re.MULTILINE)
        assert command, banner
        words = command.group(1).split()
        process = await asyncio.create_subprocess_exec(
            tool("cast"), *words[1:], "--json",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out_bytes, err_bytes = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0, err_bytes.decode()
        assert json.loads(out_bytes)["status"] in ("0x1", 1)
    finally:
        stop.set()
        await asyncio.wait_for(dev, 30)
