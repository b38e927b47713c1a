"""`signer-proxy dev --backend azure|gcp` in this process: the keys live in the Azure Key Vault
or Cloud KMS emulator, and a transaction from the first account is signed and mined."""

from __future__ import annotations

import asyncio
import io
import os
import re

import aiohttp
import pytest

from signer_proxy.dev.runner import DevOptions, run_dev

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
    finally:
        stop.set()
        await asyncio.wait_for(dev, 30)
