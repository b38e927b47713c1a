"""metrics: label folding (fixed sets only), the router observer, and the seam wrappers."""

from __future__ import annotations

import json
import random
import re
import string
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from signer_proxy.errors import (
    InvalidParams,
    KmsUnavailable,
    MethodNotFound,
    NodeRejected,
    ParseError,
    SignerProxyError,
    SigningFailed,
    UpstreamBadResponse,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from signer_proxy.jsonrpc import parse_body
from signer_proxy.keys.local import LocalKeySigner
from signer_proxy.nonces.memory import MemoryNonceManager
from signer_proxy.ops.metrics import (
    FAMILIES,
    OUTCOMES,
    Metrics,
    kms_error_label,
    method_family,
    outcome_of_code,
    outcome_of_reply,
    upstream_error_label,
)
from signer_proxy.router import Router

ROOT = Path(__file__).resolve().parents[3]


# The metrics labelled by chain (a single-chain proxy's chain is "default").
CHAIN_LABELLED = (
    "signer_proxy_requests_total", "signer_proxy_request_duration_seconds",
    "signer_proxy_upstream_duration_seconds", "signer_proxy_upstream_errors_total",
    "signer_proxy_send_rejections_total", "signer_proxy_nonce_", "signer_proxy_tracked_",
)  # fmt: skip


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    if name.startswith(CHAIN_LABELLED):
        labels.setdefault("chain", "default")
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def kms_failure(code: str) -> KmsUnavailable:
    cause = ClientError({"Error": {"Code": code, "Message": "m"}}, "Sign")
    error = KmsUnavailable(f"KMS key k: {code}")
    error.__cause__ = cause
    return error


@pytest.mark.parametrize(
    ("method", "is_local", "family"),
    [
        pytest.param("eth_sendTransaction", True, "send_transaction", id="send"),
        pytest.param("eth_signTransaction", True, "sign_transaction", id="sign-tx"),
        pytest.param("eth_accounts", True, "accounts", id="accounts"),
        pytest.param("eth_requestAccounts", True, "accounts", id="request-accounts"),
        pytest.param("personal_sign", True, "sign_message", id="personal-sign"),
        pytest.param("eth_signTypedData_v4", True, "sign_message", id="typed-data"),
        pytest.param("my_new_local_method", True, "other", id="unlisted-local"),
        pytest.param("eth_blockNumber", False, "forwarded", id="forwarded"),
        pytest.param("eth_sendTransaction", False, "forwarded", id="not-local-here"),
        pytest.param("attacker_chosen_\n{}", False, "forwarded", id="junk-forwarded"),
    ],
)
def test_method_family(method: str, is_local: bool, family: str) -> None:
    assert method_family(method, is_local) == family
    assert family in FAMILIES


@pytest.mark.parametrize(
    ("code", "outcome"),
    [
        pytest.param(ParseError.code, "invalid", id="parse"),
        pytest.param(-32600, "invalid", id="invalid-request"),
        pytest.param(MethodNotFound.code, "invalid", id="method-not-found"),
        pytest.param(InvalidParams.code, "invalid", id="invalid-params"),
        pytest.param(SignerProxyError.code, "internal", id="internal"),
        pytest.param(SigningFailed.code, "signing_failed", id="signing-failed"),
        pytest.param(KmsUnavailable.code, "kms_unavailable", id="kms"),
        pytest.param(UpstreamUnavailable.code, "upstream_unavailable", id="upstream"),
        pytest.param(UpstreamBadResponse.code, "upstream_bad_response", id="bad-response"),
        pytest.param(3, "node_error", id="revert"),
        pytest.param(-32000, "node_error", id="node-generic"),
        pytest.param("x", "node_error", id="not-an-int"),
        pytest.param(True, "node_error", id="bool"),
    ],
)
def test_outcome_of_code(code: Any, outcome: str) -> None:
    assert outcome_of_code(code) == outcome
    assert outcome in OUTCOMES


@pytest.mark.parametrize(
    ("reply", "outcome"),
    [
        pytest.param(b'{"jsonrpc":"2.0","id":1,"result":"0x1"}', "ok", id="bytes-result"),
        pytest.param(
            b'{"jsonrpc":"2.0","id":1,"error":{"code":3,"message":"execution reverted"}}',
            "node_error",
            id="bytes-node-error",
        ),
        pytest.param(
            b'{"jsonrpc":"2.0","id":1,"result":{"logs":["\\"error\\""],"x":"\\"error\\":1"}}',
            "ok",
            id="bytes-result-mentioning-error",
        ),
        pytest.param(b'{"error" not json', "upstream_bad_response", id="bytes-garbage"),
        pytest.param(
            b'{"jsonrpc":"2.0","id":1,"result":["' + b"x" * 100_000 + b'","\\"error\\""]}',
            "ok",
            id="large-result",
        ),
        pytest.param(
            b'{"jsonrpc":"2.0","id":1,"error":{"code":3,"data":"0x' + b"0" * 100_000 + b'"}}',
            "node_error",
            id="large-error",
        ),
        pytest.param({"jsonrpc": "2.0", "id": 1, "result": None}, "ok", id="dict-result"),
        pytest.param(
            {"id": 1, "error": {"code": -32011, "message": "KMS throttled"}},
            "kms_unavailable",
            id="dict-kms",
        ),
        pytest.param({"id": 1, "error": "text"}, "node_error", id="dict-error-not-object"),
    ],
)
def test_outcome_of_reply(reply: Any, outcome: str) -> None:
    assert outcome_of_reply(reply) == outcome


@pytest.mark.parametrize(
    ("error", "label"),
    [
        pytest.param(kms_failure("ThrottlingException"), "ThrottlingException", id="throttled"),
        pytest.param(kms_failure("AccessDeniedException"), "AccessDeniedException", id="denied"),
        pytest.param(kms_failure("SomethingNewException"), "other", id="unknown-code"),
        pytest.param(
            KmsUnavailable("unreachable").with_traceback(None), "other", id="no-cause-kms"
        ),
        pytest.param(SigningFailed("does not verify"), "bad_signature", id="bad-signature"),
    ],
)
def test_kms_error_label(error: SignerProxyError, label: str) -> None:
    assert kms_error_label(error) == label


def test_kms_error_label_network_failure_is_unreachable() -> None:
    error = KmsUnavailable("could not reach KMS")
    error.__cause__ = EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
    assert kms_error_label(error) == "unreachable"


@pytest.mark.parametrize(
    ("error", "label"),
    [
        pytest.param(UpstreamTimeout("t"), "timeout", id="timeout"),
        pytest.param(UpstreamUnavailable("u"), "unavailable", id="unavailable"),
        pytest.param(UpstreamBadResponse("b"), "bad_response", id="bad-response"),
        pytest.param(NodeRejected(-32000, "nonce too low"), "node_error", id="node"),
        pytest.param(SignerProxyError("x"), "other", id="other"),
    ],
)
def test_upstream_error_label(error: SignerProxyError, label: str) -> None:
    assert upstream_error_label(error) == label


class FakeNode:
    """An Upstream seam: forward() answers a fixed body; call() answers or raises per method."""

    def __init__(self, forward_reply: bytes = b"", errors: dict[str, Exception] | None = None):
        self.forward_reply = forward_reply
        self.errors = errors or {}
        self.display_url = "http://127.0.0.1:1"

    async def call(self, method: str, params: Any) -> Any:
        if method in self.errors:
            raise self.errors[method]
        return "0x1"

    async def forward(self, body: bytes) -> bytes:
        if "forward" in self.errors:
            raise self.errors["forward"]
        if self.forward_reply:
            return self.forward_reply
        request = json.loads(body)
        if isinstance(request, list):
            return json.dumps(
                [{"jsonrpc": "2.0", "id": r["id"], "result": "0x1"} for r in request if "id" in r]
            ).encode()
        return json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": "0x1"}).encode()


async def _accounts(params: Any, context: Any) -> list[str]:
    return []


async def _send(params: Any, context: Any) -> str:
    raise KmsUnavailable("KMS key k: ThrottlingException: retry later")


def metered_router(metrics: Metrics, node: FakeNode) -> Router:
    methods = {"eth_accounts": _accounts, "eth_sendTransaction": _send}
    return Router(methods, node, observer=metrics.observe_reply)


async def test_router_observer_counts_single_calls_by_family_and_outcome() -> None:
    metrics = Metrics(process_collectors=False)
    router = metered_router(metrics, FakeNode())
    for method in ("eth_accounts", "eth_sendTransaction", "eth_blockNumber"):
        raw = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method}).encode()
        await router.handle(parse_body(raw, 10), raw)

    assert sample(metrics, "signer_proxy_requests_total", family="accounts", outcome="ok") == 1
    assert (
        sample(
            metrics,
            "signer_proxy_requests_total",
            family="send_transaction",
            outcome="kms_unavailable",
        )
        == 1
    )
    assert sample(metrics, "signer_proxy_requests_total", family="forwarded", outcome="ok") == 1
    assert sample(metrics, "signer_proxy_request_duration_seconds_count", family="accounts") == 1


async def test_router_observer_counts_each_member_of_a_batch() -> None:
    metrics = Metrics(process_collectors=False)
    router = metered_router(metrics, FakeNode())
    batch = [
        {"jsonrpc": "2.0", "id": 1, "method": "eth_accounts"},
        {"jsonrpc": "2.0", "id": 2, "method": "eth_getBalance", "params": []},
        {"jsonrpc": "1.0", "id": 3, "method": "eth_accounts"},  # invalid member
        {"jsonrpc": "2.0", "method": "eth_blockNumber"},  # notification
        {"jsonrpc": "2.0", "id": 5, "method": "eth_sendTransaction", "params": [{}]},
    ]
    raw = json.dumps(batch).encode()
    await router.handle(parse_body(raw, 10), raw)

    counts = {
        (s.labels["family"], s.labels["outcome"]): s.value
        for m in metrics.registry.collect()
        if m.name == "signer_proxy_requests"
        for s in m.samples
        if s.name.endswith("_total")
    }
    assert counts == {
        ("accounts", "ok"): 1,
        ("forwarded", "ok"): 1,
        ("invalid", "invalid"): 1,
        ("forwarded", "no_reply"): 1,
        ("send_transaction", "kms_unavailable"): 1,
    }
    assert sample(metrics, "signer_proxy_request_duration_seconds_count", family="batch") == 1


async def test_labels_stay_in_fixed_sets_whatever_clients_send() -> None:
    metrics = Metrics(process_collectors=False)
    node = FakeNode(forward_reply=b'{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"x"}}')
    router = metered_router(metrics, node)
    rng = random.Random(7)
    for _ in range(300):
        method = "".join(rng.choices(string.printable, k=rng.randint(1, 40)))
        raw = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method}).encode()
        await router.handle(parse_body(raw, 10), raw)

    exposition = metrics.exposition().decode()
    families = set(re.findall(r'family="([^"]*)"', exposition))
    outcomes = set(re.findall(r'outcome="([^"]*)"', exposition))
    assert families <= set(FAMILIES) | {"batch"}
    assert outcomes <= set(OUTCOMES)
    assert sample(metrics, "signer_proxy_requests_total", family="forwarded", outcome="invalid") > 0


def test_rejected_body_counts_as_invalid() -> None:
    metrics = Metrics(process_collectors=False)
    metrics.count_rejected_body(ParseError("not JSON"))
    # Refused before its path was read: no chain.
    assert (
        sample(
            metrics,
            "signer_proxy_requests_total",
            family="invalid",
            outcome="invalid",
            chain="none",
        )
        == 1
    )


async def test_metered_signer_times_signatures_and_counts_kms_errors_by_code() -> None:
    metrics = Metrics(process_collectors=False)
    good = metrics.signer(LocalKeySigner(b"\x01" * 32, "test key"))
    await good.sign_digest(b"\x02" * 32)

    class Throttled:
        address = good.address
        key_name = "arn:aws:kms:us-east-1:111122223333:key/k"

        async def sign_digest(self, digest: bytes) -> Any:
            raise kms_failure("ThrottlingException")

    bad = metrics.signer(Throttled())
    with pytest.raises(KmsUnavailable):
        await bad.sign_digest(b"\x02" * 32)

    assert good.address == LocalKeySigner(b"\x01" * 32).address
    assert good.key_name == "test key"
    assert sample(metrics, "signer_proxy_sign_duration_seconds_count", backend="local") == 2
    assert (
        sample(
            metrics, "signer_proxy_sign_errors_total", backend="local", error="ThrottlingException"
        )
        == 1
    )


async def test_metered_upstream_counts_errors_and_classifies_send_rejections() -> None:
    metrics = Metrics(process_collectors=False)
    node = FakeNode(
        errors={
            "eth_sendRawTransaction": NodeRejected(-32000, "nonce too low: next nonce 5"),
            "forward": UpstreamTimeout("slow"),
        }
    )
    upstream = metrics.upstream(node)
    assert await upstream.call("eth_chainId", []) == "0x1"
    assert await upstream.call("debug_somethingClientChose", []) == "0x1"
    with pytest.raises(NodeRejected):
        await upstream.call("eth_sendRawTransaction", ["0x00"])
    with pytest.raises(UpstreamTimeout):
        await upstream.forward(b"{}")

    assert upstream.display_url == "http://127.0.0.1:1"
    durations = "signer_proxy_upstream_duration_seconds_count"
    assert sample(metrics, durations, method="eth_chainId") == 1
    assert sample(metrics, durations, method="other") == 1
    assert (
        sample(
            metrics,
            "signer_proxy_upstream_errors_total",
            method="eth_sendRawTransaction",
            error="node_error",
        )
        == 1
    )
    assert sample(metrics, "signer_proxy_send_rejections_total", reason="nonce_too_low") == 1
    assert (
        sample(metrics, "signer_proxy_upstream_errors_total", method="forward", error="timeout")
        == 1
    )


async def test_metered_nonce_manager_counts_resyncs_and_times_reservations() -> None:
    metrics = Metrics(process_collectors=False)

    async def pending(address: str) -> int:
        return 7

    nonces = metrics.nonces(MemoryNonceManager(pending))
    lease = await nonces.reserve("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed")
    await nonces.resync("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed")

    assert lease.nonce == 7
    assert sample(metrics, "signer_proxy_nonce_reserve_duration_seconds_count") == 1
    assert sample(metrics, "signer_proxy_nonce_resyncs_total") == 1


def test_metric_names_follow_the_convention_and_are_documented() -> None:
    names = Metrics(process_collectors=False).names()
    operations = (ROOT / "docs" / "operations.md").read_text()
    documented = set(re.findall(r"`(signer_proxy_[a-z_]+)`", operations))

    for name in names:
        assert re.fullmatch(r"signer_proxy_[a-z]+(_[a-z]+)*", name), name
    assert set(names) <= documented, f"undocumented: {sorted(set(names) - documented)}"
    assert documented <= set(names), f"documented, not defined: {sorted(documented - set(names))}"


def test_operations_md_metrics_table_names_each_metrics_labels() -> None:
    """The table's labels column is the code's, e.g. `chain` on every per-chain metric."""
    operations = (ROOT / "docs" / "operations.md").read_text()
    documented = {
        name: set(re.findall(r"`([a-z_]+)`", labels))
        for name, labels in re.findall(
            r"^\| `(signer_proxy_[a-z_]+)` \| [a-z]+ \|([^|]*)\|", operations, re.M
        )
    }
    metrics = Metrics(process_collectors=False)
    collectors = metrics.registry._collector_to_names  # prometheus_client's own registry map
    labels = {}
    for collector in collectors:
        names = {n for n in collectors[collector] if n.startswith("signer_proxy_")}
        name = next((n for n in names if n in documented), None)
        if name is not None:
            labels[name] = set(getattr(collector, "_labelnames", ()))
    assert set(labels) == set(documented) and len(labels) > 20
    assert labels == documented


def test_process_metrics_are_exposed_by_default() -> None:
    assert b"process_resident_memory_bytes" in Metrics().exposition()


def test_key_loads_set_failures_skips_and_duration() -> None:
    from signer_proxy.keys.loading import KeyLoad, KeyStatus

    metrics = Metrics(process_collectors=False)
    assert sample(metrics, "signer_proxy_key_load_failures", source="keystore") == 0
    load = KeyLoad(
        statuses=(
            KeyStatus("kms", "alias/a", state="failed", reason="state"),
            KeyStatus("discovery", "alias/b", state="failed", reason="spec"),
            KeyStatus("discovery", "alias/c", state="failed", reason="unreachable"),
            KeyStatus("discovery", "alias/d", state="kept", reason="unreachable"),
            KeyStatus("keystore", "/k/a.json"),
        ),
        skipped={"access_denied": 7, "tags_differ": 2},
        seconds=1.5,
    )
    metrics.observe_key_load(load)

    assert sample(metrics, "signer_proxy_key_load_failures", source="kms") == 1
    assert sample(metrics, "signer_proxy_key_load_failures", source="discovery") == 2
    assert sample(metrics, "signer_proxy_key_load_failures", source="keystore") == 0
    assert sample(metrics, "signer_proxy_key_discovery_skipped", reason="access_denied") == 7
    assert sample(metrics, "signer_proxy_key_discovery_skipped", reason="not_enabled") == 0
    assert sample(metrics, "signer_proxy_key_load_seconds") == 1.5
    metrics.observe_key_load(KeyLoad())  # the next load replaces, not adds
    assert sample(metrics, "signer_proxy_key_load_failures", source="discovery") == 0
    assert sample(metrics, "signer_proxy_key_discovery_skipped", reason="access_denied") == 0


@pytest.mark.parametrize(
    ("trigger", "outcome", "labels"),
    [
        pytest.param("sighup", "ok", ("sighup", "ok"), id="sighup-ok"),
        pytest.param("admin", "failures", ("admin", "failures"), id="admin-failures"),
        pytest.param("cron", "weird", ("other", "error"), id="folded"),
    ],
)
def test_reloads_are_counted_with_fixed_labels(
    trigger: str, outcome: str, labels: tuple[str, str]
) -> None:
    metrics = Metrics(process_collectors=False)
    metrics.count_reload(trigger, outcome)
    assert (
        sample(metrics, "signer_proxy_key_reloads_total", trigger=labels[0], outcome=labels[1]) == 1
    )
