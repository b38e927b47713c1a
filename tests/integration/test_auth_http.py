"""Authentication, client scope, policy, rate limits, Host/Origin/CORS and the audit log over
HTTP: an in-process proxy (create_app) in front of a real anvil, through a node front that
records every request reaching the node. Keys are local keys at the Signer seam.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct

from signer_proxy.keys.local import LocalKeySigner
from tests.auth_support import (
    API_KEYS,
    AUTH_CASES,
    QUERY_AUTH_CASES,
    AuthCase,
    RecordingSigner,
    auth_params,
    receipt,
    write_api_keys_file,
    write_policy_file,
)
from tests.conftest import Anvil, ProxyFactory, proxy_settings, start_anvil, stop
from tests.integration.node_front import NodeFront

pytestmark = pytest.mark.integration

KEY_A = b"\x0a" * 32
KEY_B = b"\x0b" * 32
ADDRESS_A = Account.from_key(KEY_A).address
ADDRESS_B = Account.from_key(KEY_B).address
TO = "0x000000000000000000000000000000000000dEaD"
ANVIL_CHAIN_ID = 31337
ETHER = 10**18
KEYS = {**API_KEYS, "quiet": "spk_test-quiet-0123456789abcdefghijklmnopqrs"}

POLICY: dict[str, Any] = {
    "defaults": {"chain_ids": [ANVIL_CHAIN_ID], "max_value": "2 ether"},
    "keys": {ADDRESS_B: {"contract_creation": False}},
    "clients": {
        "ci": {
            "rate_limit": {"per_second": 1000, "burst": 1000},
            "rules": {"daily_value_budget": "3 ether"},
        },
        "dapp": {
            "keys": [ADDRESS_A],
            "deny_methods": ["eth_sign"],
            "rules": {"to_allowlist": [TO], "max_value": "0.5 ether"},
        },
        "reader": {"read_only": True, "rate_limit": {"per_second": 0.01, "burst": 3}},
        "quiet": {"rules": {"message_signing": False}},
    },
}


@pytest.fixture(scope="module")
def node() -> Iterator[tuple[Anvil, NodeFront]]:
    """One anvil for this module's light traffic, behind a recording front."""
    anvil = start_anvil()
    for address in (ADDRESS_A, ADDRESS_B):
        anvil.fund(address, 100 * ETHER)
    front = NodeFront(anvil.url)
    yield anvil, front
    front.stop()
    stop(anvil.process)


class Client:
    """The in-process proxy, called with chosen headers and query."""

    def __init__(self, test_client: Any) -> None:
        self.http = test_client

    async def post(
        self,
        payload: Any,
        headers: dict[str, str] | None = None,
        query: dict[str, str] | None = None,
    ) -> tuple[int, Any, Any]:
        """(status, decoded body or None, response headers)."""
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        response = await self.http.post(
            "/",
            data=data,
            headers={"Content-Type": "application/json", **(headers or {})},
            params=query or {},
        )
        body = await response.read()
        return response.status, (json.loads(body) if body else None), response.headers

    async def call(self, client: str, method: str, params: Any = None) -> dict[str, Any]:
        status, body, _ = await self.post(
            {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []},
            {"Authorization": f"Bearer {KEYS[client]}"},
        )
        assert status == 200, (status, body)
        assert isinstance(body, dict)
        return body


@pytest.fixture
async def proxy(
    start_proxy: ProxyFactory,
    node: tuple[Anvil, NodeFront],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Client:
    """Auth on (API keys for ci, dapp, reader, quiet), POLICY, an audit log in tmp_path."""
    _, front = node
    overrides = getattr(request, "param", {})
    settings = proxy_settings(
        front.url,
        "http://127.0.0.1:9",  # never used: the keys are local
        api_keys_file=str(write_api_keys_file(tmp_path, KEYS)),
        policy_file=str(write_policy_file(tmp_path, POLICY)),
        audit_log=str(tmp_path / "audit.jsonl"),
        cors_origins=("https://app.example",),
        **overrides,
    )
    signers = [LocalKeySigner(KEY_A, "key-a"), LocalKeySigner(KEY_B, "key-b")]
    return Client((await start_proxy(settings, signers=signers)).client)


def audit_lines(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def node_methods(front: NodeFront, since: int) -> list[str]:
    methods = []
    for body in front.bodies[since:]:
        decoded = json.loads(body)
        methods += [c["method"] for c in (decoded if isinstance(decoded, list) else [decoded])]
    return methods


# --- authentication ---------------------------------------------------------------------------


async def check_auth_case(proxy: Client, front: NodeFront, case: AuthCase) -> None:
    before = len(front.bodies)
    batch = [
        {"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []},
        {"jsonrpc": "2.0", "id": 2, "method": "eth_accounts", "params": []},
    ]
    status, body, headers = await proxy.post(batch, case.headers, case.query)

    if case.client is None:
        assert status == 401, body
        assert body["error"]["code"] == -32040
        assert case.message in body["error"]["message"]
        assert headers["WWW-Authenticate"] == 'Bearer realm="signer-proxy"'
        assert len(front.bodies) == before  # nothing reached the node
    else:
        assert status == 200, body
        assert [r["id"] for r in body] == [1, 2]
        assert all("result" in r for r in body), body
        assert node_methods(front, before) == ["eth_blockNumber"]
    for key in KEYS.values():
        assert key not in json.dumps(body)


@pytest.mark.parametrize("case", auth_params(AUTH_CASES))
async def test_http_authentication(
    proxy: Client, node: tuple[Anvil, NodeFront], case: AuthCase
) -> None:
    await check_auth_case(proxy, node[1], case)


@pytest.mark.parametrize("proxy", [{"allow_api_key_in_query": True}], indirect=True)
@pytest.mark.parametrize("case", auth_params(QUERY_AUTH_CASES))
async def test_http_authentication_by_query_key_when_allowed(
    proxy: Client, node: tuple[Anvil, NodeFront], case: AuthCase
) -> None:
    await check_auth_case(proxy, node[1], case)


async def test_unauthenticated_signing_call_reaches_neither_node_nor_key(
    start_proxy: ProxyFactory, node: tuple[Anvil, NodeFront], tmp_path: Path
) -> None:
    _, front = node
    recording = RecordingSigner(KEY_A)
    settings = proxy_settings(
        front.url, "http://127.0.0.1:9", api_keys_file=str(write_api_keys_file(tmp_path))
    )
    client = Client((await start_proxy(settings, signers=[recording])).client)
    before = len(front.bodies)

    status, body, _ = await client.post(
        {"jsonrpc": "2.0", "id": 1, "method": "personal_sign", "params": ["0x00", ADDRESS_A]}
    )

    assert status == 401
    assert body["error"]["code"] == -32040
    assert recording.records == []
    assert len(front.bodies) == before


# --- client scope ---------------------------------------------------------------------------


async def test_read_only_client_reads_but_never_signs_or_sends(
    proxy: Client, node: tuple[Anvil, NodeFront], tmp_path: Path
) -> None:
    _, front = node
    before = len(front.bodies)
    tx = {"from": ADDRESS_A, "to": TO, "value": "0x1"}

    assert "result" in await proxy.call("reader", "eth_blockNumber")
    refused = await proxy.call("reader", "eth_sendTransaction", [tx])
    raw = await proxy.call("reader", "eth_sendRawTransaction", ["0x02"])

    assert refused["error"]["code"] == -32043
    assert refused["error"]["data"] == {"rule": "read_only", "scope": "client reader"}
    assert raw["error"]["data"]["rule"] == "read_only"
    assert node_methods(front, before) == ["eth_blockNumber"]
    [line] = audit_lines(tmp_path)  # the refused signing call is a decision; the raw send not
    assert (line["client"], line["method"], line["rule"]) == (
        "reader",
        "eth_sendTransaction",
        "read_only",
    )


async def test_client_sees_and_uses_only_its_keys(proxy: Client) -> None:
    assert (await proxy.call("dapp", "eth_accounts"))["result"] == [ADDRESS_A]
    assert (await proxy.call("ci", "eth_accounts"))["result"] == [ADDRESS_A, ADDRESS_B]
    refused = await proxy.call("dapp", "personal_sign", ["0x68656c6c6f", ADDRESS_B])
    assert refused["error"]["data"] == {"rule": "keys", "scope": "client dapp"}


async def test_message_signing_switched_off_per_client_and_eth_sign_denied(
    proxy: Client, tmp_path: Path
) -> None:
    ok = await proxy.call("dapp", "personal_sign", ["0x68656c6c6f", ADDRESS_A])
    signature = ok["result"]
    recovered = Account.recover_message(encode_defunct(b"hello"), signature=signature)
    assert recovered == ADDRESS_A

    off = await proxy.call("quiet", "personal_sign", ["0x68656c6c6f", ADDRESS_A])
    denied = await proxy.call("dapp", "eth_sign", [ADDRESS_A, "0x" + "ab" * 32])

    assert off["error"]["data"] == {"rule": "message_signing", "scope": "client quiet"}
    assert denied["error"]["data"] == {"rule": "deny_methods", "scope": "client dapp"}
    assert [(e["client"], e["outcome"]) for e in audit_lines(tmp_path)] == [
        ("dapp", "allowed"),
        ("quiet", "denied"),
        ("dapp", "denied"),
    ]


async def test_eth_sign_of_a_32_byte_hash_is_prefixed_never_bare(proxy: Client) -> None:
    digest = "0x" + "cd" * 32
    signature = (await proxy.call("ci", "eth_sign", [ADDRESS_A, digest]))["result"]

    assert Account.recover_message(
        encode_defunct(bytes.fromhex(digest[2:])), signature=signature
    ) == (ADDRESS_A)
    # Over the bare hash the same signature recovers to someone else: it never signed it.
    assert Account._recover_hash(bytes.fromhex(digest[2:]), signature=signature) != ADDRESS_A


# --- policy rules end to end ----------------------------------------------------------------


async def test_policy_rules_allow_and_deny_real_transactions(
    proxy: Client, node: tuple[Anvil, NodeFront], tmp_path: Path
) -> None:
    anvil, front = node
    sent = await proxy.call("dapp", "eth_sendTransaction", [{"from": ADDRESS_A, "to": TO}])
    too_much = await proxy.call(
        "dapp", "eth_sendTransaction", [{"from": ADDRESS_A, "to": TO, "value": hex(ETHER)}]
    )
    elsewhere = await proxy.call(
        "dapp", "eth_sendTransaction", [{"from": ADDRESS_A, "to": ADDRESS_B}]
    )
    creation = await proxy.call(
        "ci", "eth_sendTransaction", [{"from": ADDRESS_B, "data": "0x6000"}]
    )
    before = len(front.bodies)
    over_default = await proxy.call(
        "ci", "eth_sendTransaction", [{"from": ADDRESS_A, "to": TO, "value": hex(3 * ETHER)}]
    )

    assert receipt(anvil, sent["result"])["status"] == "0x1"
    assert too_much["error"]["data"] == {"rule": "max_value", "scope": "client dapp"}
    assert elsewhere["error"]["data"] == {"rule": "to_allowlist", "scope": "client dapp"}
    assert creation["error"]["data"] == {"rule": "contract_creation", "scope": f"key {ADDRESS_B}"}
    assert over_default["error"]["data"] == {"rule": "max_value", "scope": "defaults"}
    assert "eth_sendRawTransaction" not in node_methods(front, before)  # denied: never sent

    lines = audit_lines(tmp_path)
    assert [(e["outcome"], e.get("rule")) for e in lines] == [
        ("allowed", None),
        ("denied", "max_value"),
        ("denied", "to_allowlist"),
        ("denied", "contract_creation"),
        ("denied", "max_value"),
    ]
    first = lines[0]
    transaction = anvil.call("eth_getTransactionByHash", [sent["result"]])
    assert first["tx_hash"] == sent["result"]
    assert first["nonce"] == int(transaction["nonce"], 16)
    assert (first["chain_id"], first["from"], first["to"]) == (ANVIL_CHAIN_ID, ADDRESS_A, TO)
    assert (first["client"], first["auth"], first["key"]) == ("dapp", "api_key", "key-a")
    assert first["result"] == "ok"
    assert first["request_id"] != "-"


async def test_daily_value_budget_across_calls(proxy: Client, tmp_path: Path) -> None:
    tx = {"from": ADDRESS_B, "to": TO, "value": hex(ETHER)}
    results = [await proxy.call("ci", "eth_sendTransaction", [tx]) for _ in range(4)]

    assert ["result" in r for r in results] == [True, True, True, False]
    assert results[3]["error"]["data"] == {"rule": "daily_value_budget", "scope": "client ci"}
    assert "3 ether" in results[3]["error"]["message"]


async def test_typed_data_audit_keeps_the_domain_not_the_message(
    proxy: Client, tmp_path: Path
) -> None:
    secret_memo = "memo-that-must-not-be-kept-7f3a"
    typed = {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "chainId", "type": "uint256"},
            ],
            "Note": [{"name": "memo", "type": "string"}],
        },
        "primaryType": "Note",
        "domain": {"name": "Notes", "chainId": ANVIL_CHAIN_ID},
        "message": {"memo": secret_memo},
    }
    assert "result" in await proxy.call("ci", "eth_signTypedData_v4", [ADDRESS_A, typed])

    [line] = audit_lines(tmp_path)
    assert line["typed_data"] == {
        "primary_type": "Note",
        "domain": {"name": "Notes", "chainId": str(ANVIL_CHAIN_ID)},
    }
    assert line["digest"].startswith("0x") and len(line["digest"]) == 66
    assert secret_memo not in (tmp_path / "audit.jsonl").read_text()


# --- rate limits ----------------------------------------------------------------------------


async def test_rate_limit_refuses_with_429_and_retry_after(
    proxy: Client, node: tuple[Anvil, NodeFront]
) -> None:
    _, front = node
    for _ in range(3):
        assert "result" in await proxy.call("reader", "eth_chainId")
    before = len(front.bodies)

    status, body, headers = await proxy.post(
        {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []},
        {"Authorization": f"Bearer {API_KEYS['reader']}"},
    )

    assert status == 429
    assert body["error"]["code"] == -32005
    assert int(headers["Retry-After"]) >= 1
    assert body["error"]["data"]["retryAfter"] > 0
    assert len(front.bodies) == before
    assert "result" in await proxy.call("ci", "eth_chainId")  # other clients unaffected


# --- Host, Origin, CORS ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "fragment"),
    [
        pytest.param({"Host": "evil.example:8545"}, "Host 'evil.example'", id="rebinding"),
        pytest.param({"Origin": "https://evil.example"}, "web pages at", id="foreign-page"),
    ],
)
async def test_host_and_origin_refused_before_authentication(
    proxy: Client, node: tuple[Anvil, NodeFront], headers: dict[str, str], fragment: str
) -> None:
    _, front = node
    before = len(front.bodies)
    auth = {"Authorization": f"Bearer {API_KEYS['ci']}"}
    status, body, _ = await proxy.post(
        {"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber"}, {**auth, **headers}
    )
    assert status == 403
    assert body["error"]["code"] == -32041
    assert fragment in body["error"]["message"]
    assert len(front.bodies) == before


async def test_cors_for_an_allowed_browser_dapp(proxy: Client) -> None:
    origin = {"Origin": "https://app.example"}
    preflight = await proxy.http.options(
        "/",
        headers={
            **origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert preflight.status == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]

    refused = await proxy.http.options("/", headers={"Origin": "https://evil.example"})
    assert refused.status == 403
    assert "Access-Control-Allow-Origin" not in refused.headers

    status, body, headers = await proxy.post(
        {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"},
        {**origin, "Authorization": f"Bearer {API_KEYS['dapp']}"},
    )
    assert status == 200 and body["result"] == hex(ANVIL_CHAIN_ID)
    assert headers["Access-Control-Allow-Origin"] == "https://app.example"
    status, body, headers = await proxy.post({"jsonrpc": "2.0", "id": 1, "method": "x"}, origin)
    assert status == 401  # the page can read why: the refusal carries CORS headers too
    assert headers["Access-Control-Allow-Origin"] == "https://app.example"


# --- secrets ----------------------------------------------------------------------------------


async def test_no_api_key_in_logs_replies_or_audit(
    proxy: Client, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "spk_wrong-key-0123456789abcdefghijklmnopqrstu"
    replies = []
    for key in [*KEYS.values(), wrong]:
        for method, params in (
            ("eth_sendTransaction", [{"from": ADDRESS_A, "to": TO}]),
            ("personal_sign", ["0x00", ADDRESS_A]),
            ("eth_blockNumber", []),
        ):
            replies.append(
                await proxy.post(
                    {"jsonrpc": "2.0", "id": 1, "method": method, "params": params},
                    {"Authorization": f"Bearer {key}", "X-Request-Id": "scan"},
                )
            )
    written = caplog.text + json.dumps([r[1] for r in replies]) + json.dumps(audit_lines(tmp_path))
    assert "refused an unauthenticated request" in caplog.text  # the wrong key was logged about
    assert len(audit_lines(tmp_path)) >= 8
    for key in [*KEYS.values(), wrong]:
        assert key not in written
