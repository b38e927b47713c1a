"""errors: every class owns its JSON-RPC code; to_error_object is the one wire shape."""

from __future__ import annotations

import pytest

from signer_proxy.errors import (
    INTERNAL_ERROR_MESSAGE,
    AuditUnavailable,
    BatchTooLarge,
    BodyTooLarge,
    ChainIdMismatch,
    ConfigError,
    DeadlineExceeded,
    Forbidden,
    InvalidParams,
    InvalidRequest,
    KmsUnavailable,
    MethodNotFound,
    NodeRejected,
    NonceLeaseExpired,
    NonceStoreUnavailable,
    ParseError,
    PolicyDenied,
    RateLimited,
    SignerProxyError,
    SigningFailed,
    Unauthorized,
    UnknownAccount,
    UpstreamBadResponse,
    UpstreamTimeout,
    UpstreamUnavailable,
)


@pytest.mark.parametrize(
    ("cls", "code", "http_status", "parent"),
    [
        pytest.param(SignerProxyError, -32603, 200, Exception, id="base-internal"),
        pytest.param(ParseError, -32700, 200, SignerProxyError, id="ParseError"),
        pytest.param(InvalidRequest, -32600, 200, SignerProxyError, id="InvalidRequest"),
        pytest.param(BatchTooLarge, -32600, 413, InvalidRequest, id="BatchTooLarge"),
        pytest.param(BodyTooLarge, -32600, 413, InvalidRequest, id="BodyTooLarge"),
        pytest.param(MethodNotFound, -32601, 200, SignerProxyError, id="MethodNotFound"),
        pytest.param(InvalidParams, -32602, 200, SignerProxyError, id="InvalidParams"),
        pytest.param(UnknownAccount, -32602, 200, InvalidParams, id="UnknownAccount"),
        pytest.param(ChainIdMismatch, -32602, 200, InvalidParams, id="ChainIdMismatch"),
        pytest.param(SigningFailed, -32010, 200, SignerProxyError, id="SigningFailed"),
        pytest.param(KmsUnavailable, -32011, 200, SignerProxyError, id="KmsUnavailable"),
        pytest.param(UpstreamUnavailable, -32020, 200, SignerProxyError, id="UpstreamUnavailable"),
        pytest.param(UpstreamTimeout, -32020, 200, SignerProxyError, id="UpstreamTimeout"),
        pytest.param(UpstreamBadResponse, -32021, 200, SignerProxyError, id="UpstreamBadResponse"),
        pytest.param(DeadlineExceeded, -32030, 200, SignerProxyError, id="DeadlineExceeded"),
        pytest.param(
            NonceStoreUnavailable, -32050, 200, SignerProxyError, id="NonceStoreUnavailable"
        ),
        pytest.param(NonceLeaseExpired, -32051, 200, SignerProxyError, id="NonceLeaseExpired"),
        pytest.param(Unauthorized, -32040, 401, SignerProxyError, id="Unauthorized"),
        pytest.param(Forbidden, -32041, 403, SignerProxyError, id="Forbidden"),
        pytest.param(AuditUnavailable, -32044, 200, SignerProxyError, id="AuditUnavailable"),
    ],
)
def test_error_class_code_status_and_place_in_the_tree(
    cls: type[SignerProxyError], code: int, http_status: int, parent: type[Exception]
) -> None:
    error = cls("what went wrong; what to do")

    assert error.code == code
    assert error.error_code() == code
    assert error.http_status == http_status
    assert isinstance(error, parent)
    assert error.to_error_object() == {"code": code, "message": "what went wrong; what to do"}


def test_to_error_object_includes_data_only_when_given() -> None:
    assert "data" not in InvalidParams("bad").to_error_object()
    assert InvalidParams("bad", {"field": "to"}).to_error_object() == {
        "code": -32602,
        "message": "bad",
        "data": {"field": "to"},
    }
    # Falsy data is still data.
    assert InvalidParams("bad", 0).to_error_object()["data"] == 0


def test_error_str_is_the_message() -> None:
    assert str(SigningFailed("KMS key x: Disabled: enable it")) == "KMS key x: Disabled: enable it"


@pytest.mark.parametrize(
    "node_code",
    [
        pytest.param(-32000, id="geth-generic"),
        pytest.param(-32003, id="anvil-rejected"),
        pytest.param(32001, id="hedera-positive"),
        pytest.param(3, id="execution-reverted"),
    ],
)
def test_node_rejected_keeps_the_nodes_code_message_and_data(node_code: int) -> None:
    error = NodeRejected(node_code, "nonce too low", "0x08c379a0")

    assert error.node_code == node_code
    assert error.error_code() == node_code
    assert error.to_error_object() == {
        "code": node_code,
        "message": "nonce too low",
        "data": "0x08c379a0",
    }
    assert isinstance(error, SignerProxyError)


def test_config_error_never_goes_on_the_wire() -> None:
    assert not issubclass(ConfigError, SignerProxyError)
    assert not hasattr(ConfigError("x"), "to_error_object")


def test_internal_error_message_leaks_nothing_and_points_to_the_log() -> None:
    assert "log" in INTERNAL_ERROR_MESSAGE
    assert SignerProxyError(INTERNAL_ERROR_MESSAGE).to_error_object()["code"] == -32603


def test_docs_errors_table_matches_the_classes() -> None:
    """docs/errors.md lists every wire error class with the code the class owns."""
    import re
    from pathlib import Path

    from signer_proxy import errors

    doc = (Path(__file__).resolve().parents[2] / "docs" / "errors.md").read_text()
    rows = re.findall(r"^\| (-\d+|node's) \| `(\w+)`", doc, flags=re.MULTILINE)
    documented = {name: code for code, name in rows}
    wire_classes = {
        name: cls
        for name, cls in vars(errors).items()
        if isinstance(cls, type) and issubclass(cls, errors.SignerProxyError)
    }
    assert set(documented) == set(wire_classes)
    for name, code in documented.items():
        if code != "node's":
            assert wire_classes[name].code == int(code), name


def test_policy_denied_names_the_rule_and_scope_in_data() -> None:
    error = PolicyDenied("max_value", "client ci", "policy rule max_value (client ci) refused")

    assert error.to_error_object() == {
        "code": -32043,
        "message": "policy rule max_value (client ci) refused",
        "data": {"rule": "max_value", "scope": "client ci"},
    }
    assert (error.rule, error.scope) == ("max_value", "client ci")


def test_rate_limited_is_eip1474_limit_exceeded_with_the_wait() -> None:
    error = RateLimited("over the limit; retry in 0.50 s", retry_after=0.5)

    assert error.http_status == 429
    assert error.to_error_object()["code"] == -32005
    assert error.to_error_object()["data"] == {"retryAfter": 0.5}
