"""keys.aws_kms: how a KMS answer becomes a KeyLoadFailed (reason, transient, the fix)."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from signer_proxy.errors import KeyLoadFailed
from signer_proxy.keys.aws_kms import check_metadata, load_failure


def client_error(code: str, operation: str = "DescribeKey") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "m"}}, operation)


@pytest.mark.parametrize(
    ("exc", "reason", "transient", "fragment"),
    [
        pytest.param(client_error("NotFoundException"), "not_found", False,
                     "was not found in Region us-east-1", id="not-found"),
        pytest.param(client_error("AccessDeniedException"), "access_denied", False,
                     "kms:DescribeKey, kms:GetPublicKey and kms:Sign", id="denied"),
        pytest.param(client_error("DisabledException", "GetPublicKey"), "state", False,
                     "enable it", id="disabled"),
        pytest.param(client_error("ThrottlingException"), "unreachable", True,
                     "throttling", id="throttled"),
        pytest.param(client_error("KMSInternalException"), "unreachable", True, "retry",
                     id="internal"),
        pytest.param(client_error("UnsupportedOperationException"), "spec", False,
                     "UnsupportedOperationException", id="unsupported"),
        pytest.param(client_error("SomethingNew"), "other", False, "see the signer-proxy log",
                     id="unknown-code"),
        pytest.param(client_error("AccessDenied", "AssumeRole"), "access_denied", False,
                     "needs sts:AssumeRole on the role", id="assume-role-denied"),
        pytest.param(client_error("Throttling", "AssumeRole"), "access_denied", True,
                     "its role cannot be assumed", id="assume-role-throttled"),
        pytest.param(EndpointConnectionError(endpoint_url="http://kms"), "unreachable", True,
                     "could not reach KMS in Region us-east-1", id="unreachable"),
        pytest.param(KeyError("KeyMetadata"), "invalid", False, "--aws-endpoint-url",
                     id="not-kms"),
    ],
)  # fmt: skip
def test_load_failure(exc: BaseException, reason: str, transient: bool, fragment: str) -> None:
    failure = load_failure(exc, "alias/k", "us-east-1")
    assert (failure.reason, failure.transient) == (reason, transient)
    assert fragment in str(failure) and "alias/k" in str(failure)


GOOD = {"Arn": "arn:k", "KeySpec": "ECC_SECG_P256K1", "KeyUsage": "SIGN_VERIFY"}


@pytest.mark.parametrize(
    ("changes", "reason", "fragments"),
    [
        pytest.param({"KeyState": "Disabled"}, "state", ["KeyState is Disabled: enable it"],
                     id="disabled"),
        pytest.param({"KeyState": "PendingImport"}, "state", ["import its key material"],
                     id="pending-import"),
        pytest.param({"KeySpec": "RSA_2048", "KeyState": "Enabled"}, "spec",
                     ["KeySpec is RSA_2048"], id="spec"),
        pytest.param({"KeyUsage": "ENCRYPT_DECRYPT", "KeyState": "Disabled"}, "spec",
                     ["KeyUsage is ENCRYPT_DECRYPT", "KeyState is Disabled"], id="both"),
    ],
)  # fmt: skip
def test_check_metadata_names_every_problem(
    changes: dict[str, Any], reason: str, fragments: list[str]
) -> None:
    with pytest.raises(KeyLoadFailed) as info:
        check_metadata("alias/k", {**GOOD, **changes})
    assert info.value.reason == reason
    for fragment in fragments:
        assert fragment in str(info.value)
    check_metadata("alias/k", {**GOOD, "KeyState": "Enabled"})
