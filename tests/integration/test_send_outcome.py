"""One eth_sendTransaction never becomes two transactions, even when the node answers the
send too late and then cannot say whether it has it (nonces/outcome.py)."""

from __future__ import annotations

import json
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.conftest import Anvil, KmsEmulator, KmsKey, ProxyFactory, proxy_settings

pytestmark = pytest.mark.integration

UPSTREAM_TIMEOUT = 1.0
RECIPIENT = "0x" + "cd" * 20


class SlowToAnswerFront:
    """In front of anvil: the first time it sees given raw transaction bytes it passes them on
    (anvil mines them) but answers only after the proxy's upstream timeout; every
    eth_getTransactionByHash is answered late too. Everything else is relayed."""

    def __init__(self, upstream: str, hold: float) -> None:
        self.raw_seen: list[str] = []
        self.lookups = 0
        self._release = threading.Event()
        front = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                call = json.loads(body)
                late = False
                if isinstance(call, dict) and call.get("method") == "eth_sendRawTransaction":
                    raw = call["params"][0]
                    late = raw not in front.raw_seen
                    front.raw_seen.append(raw)
                elif isinstance(call, dict) and call.get("method") == "eth_getTransactionByHash":
                    front.lookups += 1
                    late = True
                request = urllib.request.Request(
                    upstream, data=body, headers={"Content-Type": "application/json"}
                )
                with urllib.request.urlopen(request, timeout=30) as response:
                    answer = response.read()
                if late:
                    front._release.wait(hold)
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                except OSError:
                    pass  # the proxy gave up waiting

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()


async def test_a_send_whose_outcome_stays_unknown_is_signed_once(
    start_proxy: ProxyFactory, anvil: Anvil, kms: KmsEmulator, funded_key: KmsKey
) -> None:
    front = SlowToAnswerFront(anvil.url, hold=UPSTREAM_TIMEOUT * 2.5)
    try:
        settings = proxy_settings(
            front.url,
            kms.url,
            funded_key.alias,
            upstream_timeout=UPSTREAM_TIMEOUT,
            request_deadline=15.0,
        )
        proxy = await start_proxy(settings)
        reply = await proxy.call(
            "eth_sendTransaction", [{"from": funded_key.address, "to": RECIPIENT, "value": "0x1"}]
        )
    finally:
        front.stop()
    # The client is told the outcome is unknown, with the hash to look up.
    assert reply["error"]["code"] == -32020, reply
    assert "may still be mined" in reply["error"]["message"]
    tx_hash = reply["error"]["data"]["txHash"]
    # Exactly one transaction was ever signed for the request: only its bytes were sent.
    assert len(set(front.raw_seen)) == 1, front.raw_seen
    assert front.lookups >= 1  # the proxy asked, and the lookup timed out too
    # And it is the one anvil mined; nothing else left the address.
    assert anvil.call("eth_getTransactionCount", [funded_key.address, "latest"]) == "0x1"
    assert anvil.call("eth_getTransactionReceipt", [tx_hash])["status"] == "0x1"
