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
import socket
import threading
import time
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
from signer_proxy.transport.fast_lane import RpcSite
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
    """create_app on 127.0.0.1 behind the fast lane, in a thread of its own, as `serve` runs
    it."""

    def __init__(self, app: web.Application) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

        async def start() -> web.AppRunner:
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            # The listener `serve` uses: the fast lane first, aiohttp for what it hands over.
            await RpcSite(runner, "127.0.0.1", 0).start()
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


# --- hostile shapes (issue 22): deep nesting, duplicate and case-variant keys ---------------

# Nesting far past the parser's limit: in a string parameter (typed data given as a JSON
# string, a message) or as the params themselves.
deep_json_text = st.sampled_from(["[", '{"a":']).flatmap(
    lambda opener: st.integers(65, 120_000).map(
        lambda depth: opener * depth + "1" + ("]" if opener == "[" else "}") * depth
    )
)
STRING_PARAM_METHODS = [
    "eth_signTypedData_v4", "eth_signTypedData_v3", "eth_signTypedData", "personal_sign",
    "eth_sign", "eth_sendTransaction", "eth_getBalance", "eth_sendRawTransaction",
]  # fmt: skip


@st.composite
def deep_call(draw: st.DrawFn) -> bytes:
    """A call with deep JSON in each string position of its params, or as its params."""
    name = draw(st.sampled_from(STRING_PARAM_METHODS))
    text = draw(deep_json_text)
    where = draw(st.sampled_from(["first", "second", "both", "params"]))
    if where == "params":  # the nesting is the body's own, not inside a string
        depth = draw(st.integers(65, 120_000))
        params = "[" * depth + "]" * depth
    else:
        first = text if where in ("first", "both") else ADDRESS_A
        second = text if where in ("second", "both") else ADDRESS_A
        params = json.dumps([first, second])
    return f'{{"jsonrpc":"2.0","id":1,"method":"{name}","params":{params}}}'.encode()


# Members a Go node (case-insensitive, last wins) or a first-wins node would read differently
# from the proxy: a second method, spelled the same, in another case, or with an escape.
ALIASES = ["method", "Method", "METHOD", "m\\u0065thod", "meth\\u006fd", "\\u006dethod"]


@st.composite
def aliased_call(draw: st.DrawFn) -> bytes:
    seen = draw(st.sampled_from(["eth_blockNumber", "eth_chainId", "eth_accounts"]))
    hidden = draw(st.sampled_from(["eth_sendTransaction", "eth_sign", "personal_sign",
                                   "eth_sendRawTransaction"]))  # fmt: skip
    alias = draw(st.sampled_from(ALIASES))
    members = [
        '"jsonrpc":"2.0"',
        '"id":7',
        f'"method":"{seen}"',
        f'"{alias}":"{hidden}"',
        f'"params":[{{"from":"{ADDRESS_A}","to":"{TO}","value":"0x1"}}]',
    ]
    if draw(st.booleans()):
        members[2], members[3] = members[3], members[2]  # hidden first: first-wins nodes
    if draw(st.booleans()):
        members.append(f'"{draw(st.sampled_from(["Params", "ID", "Jsonrpc"]))}":[]')
    one = "{" + ",".join(members) + "}"
    return (one if draw(st.booleans()) else f"[{one}]").encode()


def forwarded_members(raw: bytes) -> list[list[str]]:
    """The member names of each request object in a body the node received, duplicates kept."""
    objects: list[list[str]] = []

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        if any(k.lower() in ("jsonrpc", "method") for k, _ in pairs):
            objects.append([k for k, _ in pairs])
        return dict(pairs)

    json.loads(raw, object_pairs_hook=hook)
    return objects


body = st.one_of(
    call().map(lambda c: json.dumps(c).encode()),
    st.lists(st.one_of(call(), call(), json_values), min_size=1, max_size=6).map(
        lambda cs: json.dumps(cs).encode()
    ),
    st.lists(call(), min_size=21, max_size=22).map(lambda cs: json.dumps(cs).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=80),
    st.just(b"[]"),
    deep_call(),
    aliased_call(),
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


# The deep-nesting shapes make reprs of hundreds of kB: hypothesis warns about the cost of
# printing them (only on failure), which is not what this test is about.
@pytest.mark.filterwarnings("ignore:Generating overly large repr")
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
        # HTTP/1.1 without Host is refused before our code runs or by the door.
        door_open = host in ("ok", "localhost") and origin in (None, ORIGIN) and client is not None
        forwards, signatures = len(world.front.bodies), world.signatures()
        records_before = [len(s.records) for s in world.signers]

        try:
            status, reply = post(port, headers, path, payload)
        except (ConnectionResetError, BrokenPipeError):
            # A request refused on its head with over 64 KiB of body still to come is answered
            # and closed unread (docs/security.md): the client may see a reset, not the 401.
            assert not door_open, "an admitted request's connection was reset"
            seen["requests"] += 1
            seen["refused"] += 1
            assert len(world.front.bodies) == forwards, "an unadmitted request reached the node"
            assert world.signatures() == signatures, "an unadmitted request reached the key"
            return

        if host is None and status not in (400, 401, 403):
            # The fast lane does not check Host yet (issue 22, item 8, another branch): a
            # Host-less HTTP/1.1 request is served as one with a local Host; judge it so.
            door_open = origin in (None, ORIGIN) and client is not None
        seen["requests"] += 1
        assert status in (200, 204, 400, 401, 403, 413, 429), (status, reply[:300])
        if not door_open:
            seen["refused"] += 1
            # Without Host: aiohttp's parser says 400, the fast lane's door 401/403.
            assert status in ((400, 401, 403) if host is None else (401, 403)), (
                status,
                reply[:300],
            )
            assert len(world.front.bodies) == forwards, "an unadmitted request reached the node"
            assert world.signatures() == signatures, "an unadmitted request reached the key"
            return
        assert status != 400, reply[:300]
        if status == 200:
            decoded = json.loads(reply)
            for item in decoded if isinstance(decoded, list) else [decoded]:
                error = item.get("error") if isinstance(item, dict) else None
                assert error is None or isinstance(error.get("code"), int), item
        # What the node received names each member once, spelled exactly: no Go node can
        # read a method other than the one the proxy checked.
        for forwarded in world.front.bodies[forwards:]:
            for members in forwarded_members(forwarded):
                assert len(members) == len(set(members)), forwarded[:300]
                assert set(members) <= {"jsonrpc", "id", "method", "params"}, forwarded[:300]
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


def test_pipelining_without_reading_does_not_stall_other_clients(world: World) -> None:
    """A client writes hundreds of requests back to back (hostile shapes among them) and
    never reads a reply: the others are still answered, and the node only ever receives
    unambiguous request objects (issue 22)."""
    port = world.server.port
    shapes = [
        b'{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","Method":"eth_sendRawTransaction",'
        b'"params":["0x00"]}',  # Go would run the second
        b'{"jsonrpc":"2.0","id":2,"method":"eth_sendRawTransaction","method":"eth_blockNumber",'
        b'"params":["0x00"]}',  # a first-wins node would run the first
        b'{"jsonrpc":"2.0","id":3,"m\\u0065thod":"eth_sendRawTransaction","method":'
        b'"eth_blockNumber","params":["0x00"]}',
        b'{"jsonrpc":"2.0","id":4,"method":"eth_signTypedData_v4","params":["'
        + ADDRESS_A.encode()
        + b'","'
        + b"[" * 100_000
        + b"]" * 100_000
        + b'"]}',
        b'{"jsonrpc":"2.0","id":5,"method":"eth_blockNumber","params":[]}',
    ]
    head = f"POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
    head += f"Authorization: Bearer {API_KEYS['reader']}\r\n"
    requests = b"".join(
        head.encode() + f"Content-Length: {len(b)}\r\n\r\n".encode() + b for b in shapes * 60
    )
    forwards = len(world.front.bodies)
    hog = socket.create_connection(("127.0.0.1", port))
    hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    hog.settimeout(5)
    written = 0
    try:
        while written < len(requests):
            written += hog.send(requests[written : written + 65536])
    except (TimeoutError, OSError):
        pass  # the server stopped reading us: what it should do to a non-reader
    try:
        started = time.monotonic()
        status, reply = post(
            port,
            {"Host": f"127.0.0.1:{port}", "Content-Type": "application/json",
             "Authorization": f"Bearer {API_KEYS['ci']}"},
            "/",
            b'{"jsonrpc":"2.0","id":2,"method":"eth_chainId","params":[]}',
        )  # fmt: skip
        assert status == 200 and json.loads(reply)["result"] == hex(31337), reply
        assert time.monotonic() - started < 5
    finally:
        hog.close()
    assert world.signatures() == 0  # a read-only client signs nothing, however it asks
    for forwarded in world.front.bodies[forwards:]:
        for members in forwarded_members(forwarded):
            assert sorted(members) == sorted(set(members)), forwarded[:300]
            assert set(members) <= {"jsonrpc", "id", "method", "params"}, forwarded[:300]
            assert b"eth_send" not in forwarded, forwarded[:300]
