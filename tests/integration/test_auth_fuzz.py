"""A fuzz test of the door: hypothesis throws random JSON-RPC payloads, batches, garbage bodies,
credentials, Host and Origin headers at a real server (create_app on a real socket, anvil
behind a recording node front, a recording Signer at our seam), and checks after every
request that:

- no request gets a 5xx, and the server keeps answering;
- a request without valid credentials (or from a refused Host/Origin) reaches neither the
  node nor the key;
- every signature that reached the key ran under a gate approval, for the client that
  authenticated, for a method and key its scope allows;
- nothing the server logged or audited contains an API key.
"""

from __future__ import annotations

import asyncio
import http.client
import io
import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp import web
from eth_account import Account
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signer_proxy.access.policy import MESSAGE_METHODS, SIGNING_METHODS
from signer_proxy.app import create_app
from tests.auth_support import API_KEYS, RecordingSigner, write_api_keys_file, write_policy_file
from tests.conftest import Anvil, proxy_settings
from tests.integration.node_front import NodeFront

pytestmark = pytest.mark.integration

KEY_A, KEY_B = b"\x0a" * 32, b"\x0b" * 32
ADDRESS_A, ADDRESS_B = Account.from_key(KEY_A).address, Account.from_key(KEY_B).address
TO = "0x000000000000000000000000000000000000dEaD"
ORIGIN = "https://app.example"
POLICY: dict[str, Any] = {
    "defaults": {"chain_ids": [31337], "max_value": "1 ether", "max_gas": 1_000_000},
    "clients": {
        "ci": {},
        "dapp": {"keys": [ADDRESS_A], "deny_methods": ["eth_sign"], "rules": {"max_value": 1000}},
        "reader": {"read_only": True, "rate_limit": {"per_second": 50, "burst": 5}},
    },
}


def allowed(client: str, method: str, address: str) -> bool:
    """What POLICY's scopes let `client` sign (the test's own reading of the policy)."""
    if client == "reader":
        return False
    if client == "dapp":
        return method != "eth_sign" and address == ADDRESS_A
    return client == "ci"


class ThreadedServer:
    """create_app on 127.0.0.1 in a thread of its own, as `serve` runs it."""

    def __init__(self, app: web.Application) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

        async def start() -> web.AppRunner:
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            return runner

        self.runner = asyncio.run_coroutine_threadsafe(start(), self.loop).result(60)
        self.port = int(self.runner.addresses[0][1])

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class World:
    def __init__(self, tmp_path: Path, anvil: Anvil) -> None:
        self.front = NodeFront(anvil.url)
        self.signers = [RecordingSigner(KEY_A, "key-a"), RecordingSigner(KEY_B, "key-b")]
        self.audit = tmp_path / "audit.jsonl"
        self.settings = proxy_settings(
            self.front.url,
            "http://127.0.0.1:9",
            api_keys_file=str(write_api_keys_file(tmp_path)),
            allow_api_key_in_query=True,
            policy_file=str(write_policy_file(tmp_path, POLICY)),
            audit_log=str(self.audit),
            cors_origins=(ORIGIN,),
            max_batch=20,
            # The tracker's own background calls to the node are not client requests: off,
            # so that every request the node sees was admitted by the door.
            track_transactions=False,
        )
        self.server = ThreadedServer(create_app(self.settings, signers=self.signers))

    def signatures(self) -> int:
        return sum(len(s.records) for s in self.signers)


@pytest.fixture
def world(tmp_path: Path, anvil: Anvil) -> Iterator[World]:
    for address in (ADDRESS_A, ADDRESS_B):
        anvil.fund(address, 10**24)
    world = World(tmp_path, anvil)
    yield world
    world.server.stop()
    world.front.stop()


@pytest.fixture
def server_log() -> Iterator[io.StringIO]:
    """Everything logged, unscrubbed: what our code writes, before the scrubber's help."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield stream
    root.removeHandler(handler)
    root.setLevel(old_level)


# --- strategies -------------------------------------------------------------------------------

SAFE_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60)
CLIENTS = sorted(API_KEYS)
# (value, the client it authenticates as or None)
Credential = tuple[str | None, str | None]
valid_key = st.sampled_from(CLIENTS).map(lambda c: (API_KEYS[c], c))
bad_key = SAFE_TEXT.filter(lambda t: t.strip() not in API_KEYS.values()).map(lambda t: (t, None))
header: st.SearchStrategy[Credential] = st.one_of(
    st.just((None, None)),
    valid_key.map(lambda k: (f"Bearer {k[0]}", k[1])),
    bad_key.map(lambda k: (f"Bearer {k[0]}", None)),
    bad_key,  # anything at all in the Authorization header
)
query: st.SearchStrategy[Credential] = st.one_of(st.just((None, None)), valid_key, bad_key)

hex_quantity = st.integers(0, 2**70).map(hex)
address = st.one_of(
    st.sampled_from([ADDRESS_A, ADDRESS_B, TO]),
    st.binary(min_size=20, max_size=20).map(lambda b: "0x" + b.hex()),
)
tx = st.fixed_dictionaries(
    {"from": address},
    optional={
        "to": st.one_of(address, st.none()),
        "value": st.one_of(st.sampled_from(["0x0", "0x1", hex(10**18), hex(2 * 10**18)]),
                           hex_quantity),
        "gas": st.one_of(st.sampled_from(["0x5208", hex(2_000_000)]), hex_quantity),
        "data": st.binary(max_size=40).map(lambda b: "0x" + b.hex()),
        "chainId": st.sampled_from(["0x7a69", "0x1", "0x0"]),
        "nonce": st.sampled_from(["0x0", "0xffff"]),
        "type": st.sampled_from(["0x0", "0x1", "0x2", "0x9"]),
    },
)  # fmt: skip
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64) | SAFE_TEXT,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(SAFE_TEXT, children, max_size=3)
    ),
    max_leaves=8,
)
typed = st.fixed_dictionaries(
    {
        "types": st.just({"EIP712Domain": [{"name": "chainId", "type": "uint256"}],
                          "M": [{"name": "x", "type": "uint256"}]}),
        "primaryType": st.just("M"),
        "domain": st.fixed_dictionaries({"chainId": st.sampled_from([31337, 1])}),
        "message": st.fixed_dictionaries({"x": st.integers(0, 2**64)}),
    }
)  # fmt: skip


def params_for(method: str) -> st.SearchStrategy[Any]:
    message = st.one_of(st.binary(max_size=40).map(lambda b: "0x" + b.hex()), SAFE_TEXT)
    structured: dict[str, st.SearchStrategy[Any]] = {
        "eth_sendTransaction": st.tuples(tx).map(list),
        "eth_signTransaction": st.tuples(tx).map(list),
        "personal_sign": st.tuples(message, address).map(list),
        "eth_sign": st.tuples(address, message).map(list),
        "eth_signTypedData_v4": st.tuples(address, typed).map(list),
        "eth_signTypedData": st.tuples(address, typed).map(list),
        "signer_signAuthorization": st.tuples(
            address, st.fixed_dictionaries({"address": address, "chainId": hex_quantity})
        ).map(list),
        "eth_getBalance": st.tuples(address, st.just("latest")).map(list),
    }
    base = structured.get(method, st.just([]))
    return st.one_of(base, base, json_values)


METHODS = [
    *sorted(SIGNING_METHODS), "eth_accounts", "eth_chainId", "eth_blockNumber",
    "eth_getBalance", "net_version", "eth_sendRawTransaction", "web3_clientVersion",
]  # fmt: skip
method = st.one_of(st.sampled_from(METHODS), SAFE_TEXT.map(lambda t: "x_" + t))


@st.composite
def call(draw: st.DrawFn) -> Any:
    name = draw(method)
    obj: dict[str, Any] = {"jsonrpc": draw(st.sampled_from(["2.0", "2.0", "2.0", "1.0"]))}
    obj["method"] = name
    obj["params"] = draw(params_for(name))
    ident = draw(st.one_of(st.integers(0, 10**6), SAFE_TEXT, st.none(), st.just("absent")))
    if ident != "absent":
        obj["id"] = ident
    return obj


body = st.one_of(
    call().map(lambda c: json.dumps(c).encode()),
    st.lists(st.one_of(call(), call(), json_values), min_size=1, max_size=6).map(
        lambda cs: json.dumps(cs).encode()
    ),
    st.lists(call(), min_size=21, max_size=22).map(lambda cs: json.dumps(cs).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=80),
    st.just(b"[]"),
)


def post(port: int, headers: dict[str, str], path: str, payload: bytes) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.putrequest("POST", path, skip_host=True, skip_accept_encoding=True)
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.putheader("Content-Length", str(len(payload)))
        connection.endheaders(payload)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


# --- the test ---------------------------------------------------------------------------------


def test_fuzz_nothing_reaches_node_or_key_without_auth_and_policy(
    world: World, server_log: io.StringIO
) -> None:
    port = world.server.port
    seen: dict[str, int] = {"requests": 0, "signed": 0, "refused": 0}

    @settings(
        max_examples=300,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(
        auth=header,
        key=query,
        host=st.sampled_from(["ok", "ok", "ok", "ok", "localhost", "evil.example", None]),
        origin=st.sampled_from([None, None, None, ORIGIN, "https://evil.example", "null"]),
        payload=body,
        request_id=st.one_of(st.none(), SAFE_TEXT),
    )
    def one_request(
        auth: Credential,
        key: Credential,
        host: str | None,
        origin: str | None,
        payload: bytes,
        request_id: str | None,
    ) -> None:
        headers = {"Content-Type": "application/json"}
        if host is not None:
            headers["Host"] = f"127.0.0.1:{port}" if host == "ok" else host
        if origin is not None:
            headers["Origin"] = origin
        if auth[0] is not None:
            headers["Authorization"] = auth[0]
        if request_id is not None:
            headers["X-Request-Id"] = request_id
        path = "/" if key[0] is None else "/?" + urlencode({"key": key[0]})
        client = auth[1] if auth[0] is not None else key[1]
        # HTTP/1.1 without Host is refused by aiohttp's parser (400) before our code runs.
        door_open = host in ("ok", "localhost") and origin in (None, ORIGIN) and client is not None
        forwards, signatures = len(world.front.bodies), world.signatures()
        records_before = [len(s.records) for s in world.signers]

        status, reply = post(port, headers, path, payload)

        seen["requests"] += 1
        assert status in (200, 204, 400, 401, 403, 413, 429), (status, reply[:300])
        if not door_open:
            seen["refused"] += 1
            assert status in ((400,) if host is None else (401, 403)), (status, reply[:300])
            assert len(world.front.bodies) == forwards, "an unadmitted request reached the node"
            assert world.signatures() == signatures, "an unadmitted request reached the key"
            return
        assert status != 400, reply[:300]
        if status == 200:
            decoded = json.loads(reply)
            for item in decoded if isinstance(decoded, list) else [decoded]:
                error = item.get("error") if isinstance(item, dict) else None
                assert error is None or isinstance(error.get("code"), int), item
        for signer, before in zip(world.signers, records_before, strict=True):
            for record in signer.records[before:]:
                approval = record.approval
                assert approval is not None, "a signature without a gate approval"
                assert approval.client == client
                assert approval.address == signer.address
                assert allowed(client, approval.method, signer.address), approval
                seen["signed"] += 1

    one_request()

    # The server still answers, and something of each kind happened.
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", "/health")
    assert connection.getresponse().status == 200
    connection.close()
    assert seen["requests"] >= 300
    assert seen["refused"] > 20
    assert seen["signed"] > 0, seen
    # Audit lines are whole JSON objects for authenticated clients only.
    lines = [json.loads(line) for line in world.audit.read_text().splitlines()]
    assert lines
    assert {e["client"] for e in lines} <= set(CLIENTS)
    for entry in lines:
        if entry["outcome"] == "allowed" and entry["result"] == "ok":
            assert entry.get("tx_hash") or entry.get("digest"), entry
        assert entry["method"] in SIGNING_METHODS | MESSAGE_METHODS
    logged = server_log.getvalue() + world.audit.read_text()
    assert "refused an unauthenticated request" in logged
    for secret in API_KEYS.values():
        assert secret not in logged
