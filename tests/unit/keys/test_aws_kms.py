"""keys.aws_kms: which KMS failures are retried, the backoff, and KmsCalls (retries inside
the deadline, the process-wide cap on requests in flight) against scripted requests; how a KMS
answer becomes a KeyLoadFailed (reason, transient, the fix)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from botocore.exceptions import (
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)

from signer_proxy.deadline import deadline_scope, remaining
from signer_proxy.errors import KeyLoadFailed, KmsUnavailable
from signer_proxy.keys.aws_kms import (
    KmsCalls,
    backoff_delay,
    check_metadata,
    is_retryable,
    load_failure,
)


def client_error(code: str, status: int = 400) -> ClientError:
    response: Any = {"Error": {"Code": code, "Message": "x"}, "ResponseMetadata": {}}
    response["ResponseMetadata"]["HTTPStatusCode"] = status
    return ClientError(response, "Sign")


@pytest.mark.parametrize(
    ("exc", "retryable"),
    [
        pytest.param(client_error("ThrottlingException"), True, id="throttling"),
        pytest.param(client_error("DependencyTimeoutException", 503), True, id="dependency"),
        pytest.param(client_error("KMSInternalException", 500), True, id="internal"),
        pytest.param(client_error("KeyUnavailableException", 500), True, id="key-unavailable"),
        pytest.param(client_error("ServiceUnavailable", 503), True, id="any-5xx"),
        pytest.param(client_error("AccessDeniedException"), False, id="access-denied"),
        pytest.param(client_error("DisabledException"), False, id="disabled"),
        pytest.param(client_error("NotFoundException"), False, id="not-found"),
        pytest.param(TimeoutError(), True, id="attempt-timeout"),
        pytest.param(
            EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), True, id="refused"
        ),
        pytest.param(ReadTimeoutError(endpoint_url="http://127.0.0.1:1"), True, id="read-timeout"),
        pytest.param(ConnectionResetError(), True, id="reset"),
        pytest.param(NoCredentialsError(), False, id="no-credentials"),
        pytest.param(ValueError("bug"), False, id="a-bug"),
    ],
)
def test_is_retryable(exc: BaseException, retryable: bool) -> None:
    assert is_retryable(exc) is retryable


@pytest.mark.parametrize(
    ("attempt", "draw", "expected"),
    [
        pytest.param(0, 1.0, 0.05, id="first-full"),
        pytest.param(0, 0.5, 0.025, id="first-jittered"),
        pytest.param(3, 1.0, 0.4, id="doubles"),
        pytest.param(10, 1.0, 2.0, id="capped"),
        pytest.param(1000, 1.0, 2.0, id="huge-attempt-capped"),
        pytest.param(5, 0.0, 0.0, id="zero-draw"),
    ],
)
def test_backoff_delay_full_jitter_capped(attempt: int, draw: float, expected: float) -> None:
    assert backoff_delay(attempt, 0.05, 2.0, draw) == pytest.approx(expected)


class Script:
    """A KMS request that fails with the given errors, then answers."""

    def __init__(self, *failures: BaseException, delay: float = 0.0) -> None:
        self.failures = list(failures)
        self.calls = 0
        self.delay = delay
        self.in_flight = 0
        self.peak = 0

    async def __call__(self) -> str:
        self.calls += 1
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
            if self.failures:
                raise self.failures.pop(0)
            return "signed"
        finally:
            self.in_flight -= 1


def calls(**kwargs: Any) -> KmsCalls:
    return KmsCalls(backoff_base=0.001, backoff_max=0.01, draw=lambda: 1.0, **kwargs)


async def test_throttling_is_retried_until_it_succeeds() -> None:
    script = Script(client_error("ThrottlingException"), TimeoutError())

    assert await calls().run("key", script) == "signed"
    assert script.calls == 3


async def test_a_refusal_is_not_retried() -> None:
    script = Script(client_error("AccessDeniedException"))

    with pytest.raises(ClientError):
        await calls().run("key", script)
    assert script.calls == 1


async def test_retries_stop_at_the_deadline() -> None:
    script = Script(*[client_error("ThrottlingException")] * 1000)
    kms = KmsCalls(backoff_base=0.05, backoff_max=0.05, draw=lambda: 1.0, max_attempts=1000)

    started = time.monotonic()
    with deadline_scope(0.3), pytest.raises(ClientError):
        await kms.run("key", script)

    assert time.monotonic() - started < 0.4
    assert 2 <= script.calls <= 7


async def test_a_stalled_attempt_times_out_and_is_retried() -> None:
    slow = Script(delay=10)
    kms = calls(attempt_timeout=0.05, max_attempts=3)

    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await kms.run("key", slow)

    assert slow.calls == 3
    assert time.monotonic() - started < 1.0


async def test_a_request_that_times_itself_sees_the_attempt_as_its_deadline() -> None:
    seen: list[float | None] = []

    async def request() -> str:
        seen.append(remaining())
        await asyncio.sleep(0.1)  # past the attempt timeout: nothing cancels it from outside
        return "signed"

    assert await calls(attempt_timeout=0.05).run("key", request, times_itself=True) == "signed"
    assert seen[0] is not None and 0 < seen[0] <= 0.05
    with deadline_scope(0.02):  # an earlier request deadline wins
        await calls(attempt_timeout=5).run("key", request, times_itself=True)
    assert seen[1] is not None and 0 < seen[1] <= 0.02
    assert remaining() is None  # the scope closes with the attempt


async def test_in_flight_requests_never_exceed_the_cap() -> None:
    script = Script(delay=0.02)
    kms = calls(max_in_flight=3)

    results = await asyncio.gather(*(kms.run("key", script) for _ in range(20)))

    assert results == ["signed"] * 20
    assert script.peak == 3


async def test_waiting_for_a_slot_past_the_deadline_is_a_clear_error() -> None:
    blocker = Script(delay=1.0)
    kms = calls(max_in_flight=1)
    holding = asyncio.create_task(kms.run("key", blocker))
    await asyncio.sleep(0.01)

    with deadline_scope(0.1), pytest.raises(KmsUnavailable) as info:
        await kms.run("arn:aws:kms:us-east-1:1:key/k", Script())

    assert "--kms-max-in-flight" in info.value.message
    assert "arn:aws:kms:us-east-1:1:key/k" in info.value.message
    holding.cancel()
    with pytest.raises(asyncio.CancelledError):
        await holding


def assume_role_error(code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "m"}}, "AssumeRole")


@pytest.mark.parametrize(
    ("exc", "reason", "transient", "fragment"),
    [
        pytest.param(client_error("NotFoundException"), "not_found", False,
                     "was not found in Region us-east-1", id="not-found"),
        pytest.param(client_error("AccessDeniedException"), "access_denied", False,
                     "kms:DescribeKey, kms:GetPublicKey and kms:Sign", id="denied"),
        pytest.param(client_error("DisabledException"), "state", False,
                     "enable it", id="disabled"),
        pytest.param(client_error("ThrottlingException"), "unreachable", True,
                     "throttling", id="throttled"),
        pytest.param(client_error("KMSInternalException"), "unreachable", True, "retry",
                     id="internal"),
        pytest.param(client_error("UnsupportedOperationException"), "spec", False,
                     "UnsupportedOperationException", id="unsupported"),
        pytest.param(client_error("SomethingNew"), "other", False, "see the signer-proxy log",
                     id="unknown-code"),
        pytest.param(assume_role_error("AccessDenied"), "access_denied", False,
                     "needs sts:AssumeRole on the role", id="assume-role-denied"),
        pytest.param(assume_role_error("Throttling"), "access_denied", True,
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
