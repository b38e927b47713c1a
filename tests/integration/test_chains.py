"""Several chains behind one proxy (issue 17): two anvils with different chain ids, the real
CLI with a `chains:` config, the KMS emulator, and for replicas a real redis-server.

Proves: concurrent sends split over both chains from the same two addresses are all mined on
the right chain with contiguous nonces per chain (one process, and three replicas sharing
Redis); a client scoped to one chain cannot sign on the other (HTTP, batch, WebSocket); a
start whose node reports another chain id (or two entries on one chain) exits 2 naming both;
a transaction or typed data naming the other chain is refused; the paths, /ready and metrics
name each chain; a chain's keys: list narrows who signs there.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.auth_support import API_KEYS, write_api_keys_file, write_policy_file
from tests.conftest import (
    REGION,
    Anvil,
    KeyFactory,
    KmsKey,
    run_cli,
    start_anvil,
    stop,
)
from tests.integration.test_replicas import Replica, anvil_batch, wait_until_mined

pytestmark = pytest.mark.integration

SINK = "0x000000000000000000000000000000000000dEaD"
BURST = 300
IN_FLIGHT = 48
IDS = {"alpha": 31337, "beta": 31338}


def chain_anvil(chain_id: int) -> Anvil:
    # Interval mining: see tests/integration/test_replicas.py's anvil fixture (foundry#10122).
    return start_anvil("--chain-id", str(chain_id), "--block-time", "1")


@pytest.fixture
def anvils() -> Iterator[dict[str, Anvil]]:
    nodes = {name: chain_anvil(chain_id) for name, chain_id in IDS.items()}
    yield nodes
    for node in nodes.values():
        stop(node.process)


@pytest.fixture
def keys(anvils: dict[str, Anvil], make_key: KeyFactory) -> list[KmsKey]:
    made = [make_key(), make_key()]
    for key in made:
        for node in anvils.values():
            node.fund(key.address)
    return made


def write_config(directory: Path, anvils: dict[str, Anvil], **entries: dict[str, Any]) -> Path:
    """A --config file with one chains: entry per anvil (extra keys per entry by name)."""
    chains = [
        {"name": name, "upstream": node.url, "chain_id": IDS[name], **entries.get(name, {})}
        for name, node in anvils.items()
    ]
    path = directory / "chains.yaml"
    path.write_text(yaml.safe_dump({"chains": chains}))
    return path


def proxy_args(kms_url: str, keys: list[KmsKey], config: Path, *extra: str) -> list[str]:
    args = ["--config", str(config), "--aws-region", REGION, "--aws-endpoint-url", kms_url]
    args += ["--log-level", "warning", *extra]
    for key in keys:
        args += ["--kms-key", key.arn]
    return args


def start(kms_url: str, keys: list[KmsKey], config: Path, *extra: str) -> Replica:
    from tests.conftest import start_proxy_process

    replica = Replica(start_proxy_process(*proxy_args(kms_url, keys, config, *extra)))
    replica.drain()
    return replica


@dataclass
class Sent:
    """Acknowledged hashes per (chain, sender), and failures."""

    acknowledged: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)


async def burst_over_chains(urls: list[str], senders: list[str], count: int) -> Sent:
    """`count` eth_sendTransaction alternating chains, then senders, round-robin over `urls`
    (proxy base URLs; each call goes to URL/chain/NAME)."""
    names = list(IDS)
    sent = Sent({(c, s): [] for c in names for s in senders})
    slots = asyncio.Semaphore(IN_FLIGHT)

    async def one(session: aiohttp.ClientSession, i: int) -> None:
        chain = names[i % 2]
        sender = senders[(i // 2) % len(senders)]
        url = f"{urls[i % len(urls)]}/chain/{chain}"
        body = {
            "jsonrpc": "2.0",
            "id": i,
            "method": "eth_sendTransaction",
            "params": [{"from": sender, "to": SINK, "value": hex(i + 1)}],
        }
        async with slots:
            try:
                async with session.post(url, json=body) as response:
                    reply = json.loads(await response.read())
            except (aiohttp.ClientError, TimeoutError) as exc:
                sent.failed.append(f"{url}: {type(exc).__name__}")
                return
        if "result" in reply:
            sent.acknowledged[(chain, sender)].append(reply["result"])
        else:
            sent.failed.append(f"{url}: {reply['error']}")

    timeout = aiohttp.ClientTimeout(total=90)
    connector = aiohttp.TCPConnector(limit=IN_FLIGHT)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        await asyncio.gather(*(one(session, i) for i in range(count)))
    return sent


def assert_each_chain_mined_its_own(anvils: dict[str, Anvil], sent: Sent) -> None:
    """Every acknowledged tx is mined on its chain (and unknown to the other), signed for that
    chain id; per chain and sender the nonces are 0..n-1, none twice, nothing left pending."""
    assert sum(len(h) for h in sent.acknowledged.values()) == BURST
    for (chain, sender), hashes in sent.acknowledged.items():
        node = anvils[chain]
        other = anvils[next(c for c in IDS if c != chain)]
        receipts = wait_until_mined(node, hashes, 30)
        assert all(r["status"] == "0x1" for r in receipts)
        txs = anvil_batch(node, "eth_getTransactionByHash", [[h] for h in hashes])
        assert {int(tx["chainId"], 16) for tx in txs} == {IDS[chain]}
        assert all(tx["from"] == sender.lower() for tx in txs)
        nonces = sorted(int(tx["nonce"], 16) for tx in txs)
        assert nonces == list(range(len(hashes))), (chain, sender, nonces[:10])
        crossed = anvil_batch(other, "eth_getTransactionByHash", [[h] for h in hashes])
        assert crossed == [None] * len(hashes), f"{chain} transactions found on the other chain"
        pending = int(node.call("eth_getTransactionCount", [sender, "pending"]), 16)
        assert pending == len(hashes)


async def test_a_burst_split_over_two_chains_is_mined_on_each_in_order(
    anvils: dict[str, Anvil], keys: list[KmsKey], kms: Any, tmp_path: Path
) -> None:
    proxy = start(kms.url, keys, write_config(tmp_path, anvils))
    try:
        sent = await burst_over_chains([proxy.url], [k.address for k in keys], BURST)
        assert sent.failed == []
        assert_each_chain_mined_its_own(anvils, sent)
    finally:
        stop(proxy.proxy.process)
    assert not any("Traceback" in line for line in proxy.log), proxy.log


async def test_three_replicas_with_redis_keep_each_chains_nonces_apart(
    anvils: dict[str, Anvil], keys: list[KmsKey], kms: Any, redis_url: str, tmp_path: Path
) -> None:
    config = write_config(tmp_path, anvils)
    replicas = await asyncio.gather(
        *(
            asyncio.to_thread(start, kms.url, keys, config, "--nonce-store", redis_url)
            for _ in range(3)
        )
    )
    try:
        sent = await burst_over_chains([r.url for r in replicas], [k.address for k in keys], BURST)
        assert sent.failed == []
        assert_each_chain_mined_its_own(anvils, sent)
    finally:
        for replica in replicas:
            stop(replica.proxy.process)
    import redis

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:  # one counter per (chain id, address): the two chains' never shared a key
        for key in keys:
            for chain_id in IDS.values():
                prefix = f"signer-proxy:nonce:{{{chain_id}:{key.address.lower()}}}:"
                assert client.get(prefix + "next") == str(BURST // 4)
    finally:
        client.close()


def post(url: str, body: Any, api_key: str | None = None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if api_key is not None:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def call(method: str, params: list[Any], id: int = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id, "method": method, "params": params}


@pytest.fixture
def scoped(
    anvils: dict[str, Anvil], keys: list[KmsKey], kms: Any, tmp_path: Path
) -> Iterator[Replica]:
    """A proxy with API keys: client "ci" may use chain alpha only, "dapp" both; beta's keys:
    list holds the first key only; alpha is the default chain."""
    policy = write_policy_file(tmp_path, {"clients": {"ci": {"chains": ["alpha"]}}})
    config = write_config(
        tmp_path, anvils, alpha={"default": True}, beta={"keys": [keys[0].address]}
    )
    extra = ["--api-keys-file", str(write_api_keys_file(tmp_path)), "--policy-file", str(policy)]
    proxy = start(kms.url, keys, config, *extra)
    yield proxy
    stop(proxy.proxy.process)


def test_a_client_scoped_to_one_chain_cannot_sign_on_the_other_over_http_and_batch(
    scoped: Replica, keys: list[KmsKey], anvils: dict[str, Anvil]
) -> None:
    send = call("eth_sendTransaction", [{"from": keys[0].address, "to": SINK, "value": "0x1"}])
    ci, dapp = API_KEYS["ci"], API_KEYS["dapp"]

    status, reply = post(f"{scoped.url}/chain/beta", send, ci)
    assert status == 200
    assert reply["error"]["code"] == -32043
    assert reply["error"]["data"]["rule"] == "chains"
    assert "may not use chain beta" in reply["error"]["message"]
    # Reads on the other chain are refused too: the scope is the chain, not a method.
    _, reply = post(f"{scoped.url}/chain/31338", call("eth_blockNumber", []), ci)
    assert reply["error"]["code"] == -32043
    # A batch on beta: every member refused, nothing sent.
    _, replies = post(f"{scoped.url}/chain/beta", [send, {**send, "id": 2}], ci)
    assert [r["error"]["code"] for r in replies] == [-32043, -32043]
    assert anvils["beta"].call("eth_getTransactionCount", [keys[0].address, "pending"]) == "0x0"

    # Its own chain works, by name, by id, and on / (alpha is the default).
    for path in ("/chain/alpha", "/chain/31337", "/"):
        _, reply = post(f"{scoped.url}{path}", send, ci)
        assert "result" in reply, (path, reply)
    # Another client may use beta.
    _, reply = post(f"{scoped.url}/chain/beta", send, dapp)
    assert "result" in reply, reply
    assert anvils["beta"].call("eth_getTransactionCount", [keys[0].address, "pending"]) == "0x1"


async def test_a_client_scoped_to_one_chain_cannot_sign_on_the_other_over_websocket(
    scoped: Replica, keys: list[KmsKey]
) -> None:
    ws_url = scoped.url.replace("http://", "ws://")
    headers = {"Authorization": f"Bearer {API_KEYS['ci']}"}
    send = call("eth_sendTransaction", [{"from": keys[0].address, "to": SINK, "value": "0x1"}])
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{ws_url}/chain/beta", headers=headers) as ws:
            await ws.send_str(json.dumps(send))
            reply = json.loads(await ws.receive_str(timeout=30))
            assert reply["error"]["code"] == -32043
            await ws.send_str(json.dumps([send, {**send, "id": 2}]))
            replies = json.loads(await ws.receive_str(timeout=30))
            assert [r["error"]["code"] for r in replies] == [-32043, -32043]
        async with session.ws_connect(f"{ws_url}/chain/alpha", headers=headers) as ws:
            await ws.send_str(json.dumps(call("eth_chainId", [])))
            assert json.loads(await ws.receive_str(timeout=30))["result"] == hex(IDS["alpha"])
            await ws.send_str(json.dumps(send))
            assert "result" in json.loads(await ws.receive_str(timeout=30))


def test_each_path_reaches_its_own_chain_and_unknown_paths_are_refused(
    scoped: Replica, keys: list[KmsKey]
) -> None:
    key = API_KEYS["dapp"]
    for path, chain_id in (
        ("/", IDS["alpha"]),
        ("/chain/alpha", IDS["alpha"]),
        ("/chain/31337", IDS["alpha"]),
        ("/chain/beta", IDS["beta"]),
        ("/chain/0x7a6a", IDS["beta"]),
        ("/chain/beta/", IDS["beta"]),
    ):
        _, reply = post(f"{scoped.url}{path}", call("eth_chainId", []), key)
        assert reply["result"] == hex(chain_id), path
    status, reply = post(f"{scoped.url}/chain/gamma", call("eth_chainId", []), key)
    assert status == 404
    assert reply["error"]["code"] == -32060
    assert "/chain/alpha (chain id 31337)" in reply["error"]["message"]
    # beta's keys: list holds the first key only.
    _, reply = post(f"{scoped.url}/chain/beta", call("eth_accounts", []), key)
    assert reply["result"] == [keys[0].address]
    _, reply = post(f"{scoped.url}/chain/alpha", call("eth_accounts", []), key)
    assert sorted(reply["result"]) == sorted(k.address for k in keys)
    send = call("eth_sendTransaction", [{"from": keys[1].address, "to": SINK}])
    _, reply = post(f"{scoped.url}/chain/beta", send, key)
    assert reply["error"]["code"] == -32602
    assert "does not sign on chain beta" in reply["error"]["message"]


def test_a_transaction_or_typed_data_naming_the_other_chain_is_refused(
    scoped: Replica, keys: list[KmsKey], anvils: dict[str, Anvil]
) -> None:
    key = API_KEYS["dapp"]
    address = keys[0].address
    send = call(
        "eth_sendTransaction",
        [{"from": address, "to": SINK, "value": "0x1", "chainId": hex(IDS["alpha"])}],
    )
    _, reply = post(f"{scoped.url}/chain/beta", send, key)
    assert reply["error"]["code"] == -32602
    assert str(IDS["alpha"]) in reply["error"]["message"]
    typed = {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "chainId", "type": "uint256"},
            ],
            "Mail": [{"name": "contents", "type": "string"}],
        },
        "primaryType": "Mail",
        "domain": {"name": "x", "chainId": IDS["alpha"]},
        "message": {"contents": "hi"},
    }
    _, reply = post(f"{scoped.url}/chain/beta", call("eth_signTypedData_v4", [address, typed]), key)
    assert reply["error"]["code"] == -32602
    _, reply = post(
        f"{scoped.url}/chain/alpha", call("eth_signTypedData_v4", [address, typed]), key
    )
    assert "result" in reply, reply
    assert anvils["beta"].call("eth_getTransactionCount", [address, "pending"]) == "0x0"


def test_ready_metrics_and_audit_name_each_chain(
    anvils: dict[str, Anvil], keys: list[KmsKey], kms: Any, tmp_path: Path
) -> None:
    audit = tmp_path / "audit.jsonl"
    proxy = start(kms.url, keys, write_config(tmp_path, anvils), "--audit-log", str(audit))
    try:
        send = call("eth_sendTransaction", [{"from": keys[0].address, "to": SINK}])
        _, reply = post(f"{proxy.url}/chain/beta", send)
        assert "result" in reply, reply
        # No chain is marked default and there are two: / names the paths instead.
        status, reply = post(f"{proxy.url}/", call("eth_chainId", []))
        assert (status, reply["error"]["code"]) == (404, -32060)
        assert "none is the default" in reply["error"]["message"]

        with urllib.request.urlopen(f"{proxy.url}/ready", timeout=10) as response:
            ready = json.loads(response.read())
        names = set(ready["checks"])
        assert {"upstream:alpha", "upstream:beta", "chain_id:alpha", "chain_id:beta"} <= names
        with urllib.request.urlopen(f"{proxy.url}/metrics", timeout=10) as response:
            metrics = response.read().decode()
        assert (
            'signer_proxy_requests_total{chain="beta",family="send_transaction",outcome="ok"} 1.0'
            in metrics
        )
        with urllib.request.urlopen(f"{proxy.url}/operator/status.json", timeout=10) as response:
            board = json.loads(response.read())
        assert [(c["name"], c["nodes"][0]["chain_id"]) for c in board["chains"]] == [
            ("alpha", IDS["alpha"]),
            ("beta", IDS["beta"]),
        ]
        lines = [json.loads(line) for line in audit.read_text().splitlines()]
        assert [(e["chain"], e["chain_id"]) for e in lines] == [("beta", IDS["beta"])]

        stop(anvils["beta"].process)  # beta's node goes: the replica is not ready, alpha is fine
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"{proxy.url}/ready", timeout=10):
                    pass
            except urllib.error.HTTPError as exc:
                body = json.loads(exc.read())
                failed = {name for name, c in body["checks"].items() if not c["ok"]}
                assert "upstream:beta" in failed and "upstream:alpha" not in failed
                break
            assert time.monotonic() < deadline
            time.sleep(0.5)
    finally:
        stop(proxy.proxy.process)


def test_a_node_on_another_chain_than_its_entry_refuses_the_start_with_exit_2(
    anvils: dict[str, Anvil], keys: list[KmsKey], kms: Any, tmp_path: Path
) -> None:
    config = write_config(tmp_path, anvils, beta={"chain_id": 5})
    result = run_cli("serve", "--listen", "127.0.0.1:0", *proxy_args(kms.url, keys, config))
    assert result.returncode == 2, result.stderr
    assert "chain beta: the node" in result.stderr
    assert "reports chain id 31338 but the configuration says chain_id 5" in result.stderr


def test_without_chain_ids_each_chain_is_served_on_the_id_its_node_reports(
    anvils: dict[str, Anvil], keys: list[KmsKey], kms: Any, tmp_path: Path
) -> None:
    chains = [{"name": name, "upstream": node.url} for name, node in anvils.items()]
    config = tmp_path / "learned.yaml"
    config.write_text(yaml.safe_dump({"chains": chains}))
    proxy = start(kms.url, keys, config)
    try:
        for name, chain_id in IDS.items():
            _, reply = post(f"{proxy.url}/chain/{chain_id}", call("eth_chainId", []))
            assert reply["result"] == hex(chain_id), name
    finally:
        stop(proxy.proxy.process)


def test_two_entries_reaching_one_chain_refuse_the_start(
    anvils: dict[str, Anvil], keys: list[KmsKey], kms: Any, tmp_path: Path
) -> None:
    """Two entries without chain_id whose nodes are one chain: found at start, exit 2."""
    chains = [
        {"name": "one", "upstream": anvils["alpha"].url},
        {"name": "two", "upstream": anvils["alpha"].url},
    ]
    config = tmp_path / "dup.yaml"
    config.write_text(yaml.safe_dump({"chains": chains}))
    result = run_cli("serve", "--listen", "127.0.0.1:0", *proxy_args(kms.url, keys, config))
    assert result.returncode == 2, result.stderr
    assert "chains one and two both reach chain id 31337" in result.stderr


def test_a_chain_whose_node_is_down_at_start_needs_its_chain_id(
    keys: list[KmsKey], kms: Any, tmp_path: Path, anvils: dict[str, Anvil]
) -> None:
    down = "http://127.0.0.1:9"  # discard port: nothing listens
    chains: list[dict[str, Any]] = [
        {"name": "alpha", "upstream": anvils["alpha"].url},
        {"name": "gone", "upstream": down, "upstream_timeout": 1, "upstream_connect_timeout": 1},
    ]
    config = tmp_path / "down.yaml"
    config.write_text(yaml.safe_dump({"chains": chains}))
    result = run_cli("serve", "--listen", "127.0.0.1:0", *proxy_args(kms.url, keys, config))
    assert result.returncode == 2, result.stderr
    assert "chain gone: the node" in result.stderr and "chain_id" in result.stderr
    # With its chain id given, the proxy starts and serves the other chain.
    chains[1]["chain_id"] = 999
    config.write_text(yaml.safe_dump({"chains": chains}))
    proxy = start(kms.url, keys, config)
    try:
        _, reply = post(f"{proxy.url}/chain/alpha", call("eth_chainId", []))
        assert reply["result"] == hex(IDS["alpha"])
        _, reply = post(f"{proxy.url}/chain/999", call("eth_blockNumber", []))
        assert reply["error"]["code"] == -32020  # its node is down: said, not hidden
    finally:
        stop(proxy.proxy.process)


def test_transaction_status_answers_on_the_chain_that_sent_it(
    scoped: Replica, keys: list[KmsKey], anvils: dict[str, Anvil]
) -> None:
    """Each chain's tracker answers for its own transactions (the store is shared in Redis)."""
    key = API_KEYS["dapp"]
    send = call("eth_sendTransaction", [{"from": keys[0].address, "to": SINK, "value": "0x1"}])
    _, reply = post(f"{scoped.url}/chain/alpha", send, key)
    tx_hash = reply["result"]
    status_call = call("signer_getTransactionStatus", [tx_hash])
    deadline = time.monotonic() + 20
    while True:
        _, reply = post(f"{scoped.url}/chain/alpha", status_call, key)
        if reply["result"]["state"] == "mined" or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert reply["result"]["state"] == "mined", reply
    _, reply = post(f"{scoped.url}/chain/beta", status_call, key)
    assert reply == {"jsonrpc": "2.0", "id": 1, "result": None}
    _, reply = post(f"{scoped.url}/chain/beta", call("signer_cancelTransaction", [tx_hash]), key)
    assert reply["error"]["code"] == -32602


def test_each_chains_node_credentials_stay_out_of_the_log(
    anvils: dict[str, Anvil], keys: list[KmsKey], kms: Any, tmp_path: Path
) -> None:
    """A chain's URL userinfo and its header secret (from the environment) are scrubbed from
    every log line, at debug level, through sends, a node error and the shutdown."""
    url_secret, header_secret = "s3cret-pass-4821", "hdr-secret-9731"
    beta = anvils["beta"].url.replace("http://", f"http://bob:{url_secret}@")
    config = write_config(
        tmp_path,
        anvils,
        beta={"upstream": beta, "upstream_headers": ["X-Api-Key: env:BETA_SECRET_FOR_TEST"]},
    )
    args = proxy_args(kms.url, keys, config, "--log-level", "debug")
    from tests.conftest import start_proxy_process

    proxy = Replica(start_proxy_process(*args, env={"BETA_SECRET_FOR_TEST": header_secret}))
    proxy.drain()
    try:
        send = call("eth_sendTransaction", [{"from": keys[0].address, "to": SINK}])
        for name in IDS:
            _, reply = post(f"{proxy.url}/chain/{name}", send)
            assert "result" in reply, reply
        _, reply = post(f"{proxy.url}/chain/beta", call("eth_call", [{"to": "0x1"}, "bogus"]))
        assert "error" in reply
        assert url_secret not in json.dumps(reply) and header_secret not in json.dumps(reply)
    finally:
        stop(proxy.proxy.process)
    time.sleep(0.2)  # the drain thread reads the last lines
    log = "".join(proxy.log)
    assert "sending tx=" in log  # the log did run at debug level
    assert url_secret not in log and header_secret not in log
