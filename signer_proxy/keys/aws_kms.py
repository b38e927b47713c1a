"""AWS KMS keys: load and verify them at startup, sign digests with one shared async client.

Only this module talks to KMS. Credentials come from the standard AWS chain (environment,
profile, web identity / IRSA, instance role); signer-proxy's own config never holds them.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from signer_proxy.deadline import bounded, deadline_scope, remaining
from signer_proxy.errors import KeyLoadFailed, KmsUnavailable, SigningFailed
from signer_proxy.eth.ecdsa import (
    Signature,
    SignatureError,
    address_from_public_key,
    canonical_signature,
    public_key_from_spki,
)
from signer_proxy.keys.signer import BackendSigner
from signer_proxy.ops import tracing

log = logging.getLogger(__name__)
T = TypeVar("T")

REQUIRED_KEY_SPEC = "ECC_SECG_P256K1"
REQUIRED_KEY_USAGE = "SIGN_VERIFY"
IAM_ACTIONS = "kms:DescribeKey, kms:GetPublicKey and kms:Sign"

# Startup (DescribeKey, GetPublicKey) retries a little, so a misconfigured endpoint fails fast.
STARTUP_ATTEMPTS = 3

# KMS error codes that a later attempt may get past; everything else needs an operator.
RETRYABLE_KMS_ERRORS = frozenset(
    {
        "ThrottlingException",
        "DependencyTimeoutException",
        "KMSInternalException",
        "KeyUnavailableException",
    }
)

_KMS_ERROR_ADVICE = {
    "ThrottlingException": "KMS is throttling Sign requests (ECC quota is shared per account "
    "and Region); retry later or raise the quota",
    "DependencyTimeoutException": "KMS timed out; retry",
    "KMSInternalException": "KMS had an internal error; retry",
    "KeyUnavailableException": "the key is temporarily unavailable; retry",
    "DisabledException": "the key is disabled: enable it or remove it from --kms-key",
    "KMSInvalidStateException": "the key is not in a usable state (pending deletion or "
    "import?): check its state in KMS",
    "NotFoundException": "the key was not found: check the key id and --aws-region",
    "InvalidKeyUsageException": f"the key cannot sign: it must be {REQUIRED_KEY_SPEC} with "
    f"usage {REQUIRED_KEY_USAGE}",
    "AccessDeniedException": f"access denied: the AWS identity needs {IAM_ACTIONS} on this key",
    "UnrecognizedClientException": "the AWS credentials are not valid for this Region",
    "InvalidSignatureException": "the AWS credentials are not valid",
}


_STATE_DEFAULT = "enable it or remove it from --kms-key"
_STATE_ADVICE = {
    "PendingImport": "import its key material (BYOK) or remove it from --kms-key",
    "PendingDeletion": "cancel its scheduled deletion (kms cancel-key-deletion) and enable it, "
    "or remove it from --kms-key",
    "Unavailable": "its custom key store is disconnected: reconnect it",
}


def state_advice(state: object) -> str:
    """What to do about a key in KMS key state `state` (anything but Enabled)."""
    return _STATE_ADVICE.get(str(state), _STATE_DEFAULT)


def describe_kms_error(error_code: str, key: str) -> str:
    """An operator-facing sentence for a KMS error code on `key`."""
    advice = _KMS_ERROR_ADVICE.get(error_code, "see the signer-proxy log")
    return f"KMS key {key}: {error_code}: {advice}"


def kms_error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "Unknown"))


def is_retryable(exc: BaseException) -> bool:
    """Whether a later attempt of the same KMS request may succeed (throttling, 5xx, network)."""
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return kms_error_code(exc) in RETRYABLE_KMS_ERRORS or int(status or 0) >= 500
    return isinstance(
        exc, TimeoutError | HTTPClientError | BotoConnectionError | aiohttp.ClientError | OSError
    )


def backoff_delay(attempt: int, base: float, cap: float, draw: float) -> float:
    """Full jitter: `draw` (0..1) of min(cap, base * 2**attempt), attempt counting from 0."""
    return draw * min(cap, base * (1 << min(attempt, 32)))


async def once_in_slot(calls: KmsCalls | None, key: str, request: Callable[[], Awaitable[T]]) -> T:
    """`request()` once, under the process's KmsCalls when there are some (a request slot, the
    attempt timeout, the deadline): for clients that retry on their own (Azure, Google)."""
    if calls is None:
        return await request()
    return await calls.run(key, request, max_attempts=1)


class KmsCalls:
    """Every KMS request goes through here: a process-wide cap on requests in flight, a
    per-attempt timeout, and retries with capped exponential backoff inside the deadline."""

    def __init__(
        self,
        max_in_flight: int = 32,
        attempt_timeout: float = 10.0,
        backoff_base: float = 0.05,
        backoff_max: float = 2.0,
        max_attempts: int = 10,
        draw: Callable[[], float] = random.random,
    ) -> None:
        self.max_in_flight = max_in_flight
        self._slots = asyncio.Semaphore(max_in_flight)
        self._attempt_timeout = attempt_timeout
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._max_attempts = max_attempts
        self._draw = draw
        self.in_flight = 0

    async def run(
        self,
        key: str,
        request: Callable[[], Awaitable[T]],
        max_attempts: int | None = None,
        *,
        times_itself: bool = False,
    ) -> T:
        """`request()` until it succeeds, fails for good, or the deadline leaves no room.

        `times_itself`: `request()` ends within the deadline on its own (`bounded()`; the lean
        KMS client has one timer on its exchange), so the attempt timeout only narrows that
        deadline (`deadline_scope`) instead of opening an `asyncio.timeout` around it, which
        cost ~10 µs of a signed transaction's CPU."""
        attempts = max_attempts or self._max_attempts
        for attempt in range(attempts):
            try:
                return await self._once(key, request, times_itself)
            except KmsUnavailable:
                raise
            except Exception as exc:
                if not is_retryable(exc) or attempt + 1 == attempts:
                    raise
                delay = backoff_delay(attempt, self._backoff_base, self._backoff_max, self._draw())
                left = remaining()
                if left is not None and left <= delay:
                    raise
                log.warning(
                    "KMS key %s: %s; retry %d in %.3f s", key, _error_name(exc), attempt + 1, delay
                )
                tracing.event(
                    "kms.retry",
                    {"kms.error": _error_name(exc), "kms.attempt": attempt + 1, "delay_s": delay},
                )
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # the loop returns or raises

    async def _once(
        self, key: str, request: Callable[[], Awaitable[T]], times_itself: bool = False
    ) -> T:
        try:
            if self._slots.locked():  # a free slot is taken at once: no timer for that
                left = remaining()
                async with asyncio.timeout(None if left is None else max(0.0, left)):
                    await self._slots.acquire()
            else:
                await self._slots.acquire()
        except TimeoutError:
            raise KmsUnavailable(
                f"KMS key {key}: all {self.max_in_flight} KMS request slots stayed busy until "
                "the request deadline; retry, or raise --kms-max-in-flight (and the KMS quota)"
            ) from None
        self.in_flight += 1
        try:
            if times_itself:  # the attempt narrows the deadline that request() reads
                with deadline_scope(self._attempt_timeout):
                    return await request()
            async with asyncio.timeout(bounded(self._attempt_timeout)):
                return await request()
        finally:
            self.in_flight -= 1
            self._slots.release()


def _error_name(exc: BaseException) -> str:
    return kms_error_code(exc) if isinstance(exc, ClientError) else type(exc).__name__


def region_of_arn(key_ref: str) -> str | None:
    """The Region named in a KMS key or alias ARN, else None."""
    parts = key_ref.split(":")
    if len(parts) >= 6 and parts[0] == "arn" and parts[2] == "kms":
        return parts[3]
    return None


@dataclass(frozen=True, slots=True)
class KmsKeyInfo:
    """What startup learned about one configured key."""

    ref: str  # as the operator wrote it: id, ARN, alias or alias ARN
    arn: str
    public_key: bytes
    address: str

    @property
    def key_name(self) -> str:
        return self.arn


class KmsSigner(BackendSigner[KmsKeyInfo]):
    """Signs digests with one KMS key through a shared aioboto3 client."""

    backend = "aws_kms"

    def __init__(self, client: Any, info: KmsKeyInfo, calls: KmsCalls | None = None) -> None:
        self._client = client
        self.info = info
        self._calls = calls or KmsCalls()
        # The lean client bounds its own calls by the deadline (keys/kms_sign.py).
        self._times_itself = bool(getattr(client, "times_itself", False))

    async def sign_digest(self, digest: bytes) -> Signature:
        def sign() -> Awaitable[Any]:
            return self._client.sign(  # type: ignore[no-any-return]
                KeyId=self.info.arn,
                Message=digest,
                MessageType="DIGEST",
                SigningAlgorithm="ECDSA_SHA_256",
            )

        try:
            response = await self._calls.run(self.info.arn, sign, times_itself=self._times_itself)
        except ClientError as exc:
            code = kms_error_code(exc)
            error_class = KmsUnavailable if is_retryable(exc) else SigningFailed
            raise error_class(describe_kms_error(code, self.info.arn)) from exc
        except (TimeoutError, BotoCoreError, OSError, aiohttp.ClientError) as exc:
            raise KmsUnavailable(
                f"KMS key {self.info.arn}: could not reach KMS ({type(exc).__name__}) before "
                "the request deadline; retry"
            ) from exc
        try:
            return canonical_signature(response.get("Signature", b""), digest, self.info.public_key)
        except SignatureError as exc:
            log.error("KMS key %s returned an unusable signature: %s", self.info.arn, exc)
            raise SigningFailed(
                f"KMS key {self.info.arn} returned a signature that does not verify for "
                f"{self.info.address} ({exc}); nothing was sent"
            ) from exc


_REASON_BY_CODE = {
    "NotFoundException": "not_found",
    "AccessDeniedException": "access_denied",
    "UnrecognizedClientException": "access_denied",
    "InvalidSignatureException": "access_denied",
    "DisabledException": "state",
    "KMSInvalidStateException": "state",
    "InvalidKeyUsageException": "spec",
    "UnsupportedOperationException": "spec",
}


def load_failure(exc: BaseException, key_ref: str, region: str) -> KeyLoadFailed:
    """The KeyLoadFailed for a KMS call about `key_ref` that raised `exc`."""
    if isinstance(exc, KmsUnavailable):  # every KMS request slot stayed busy
        return KeyLoadFailed(exc.message, "unreachable", transient=True)
    if isinstance(exc, ClientError):
        code = kms_error_code(exc)
        if exc.operation_name == "AssumeRole":  # fetching the key's role credentials failed
            return KeyLoadFailed(
                f"KMS key {key_ref}: its role cannot be assumed ({code}): the process's AWS "
                "identity needs sts:AssumeRole on the role, and the role must trust it",
                "access_denied",
                transient=code in RETRYABLE_KMS_ERRORS or code == "Throttling",
            )
        if code == "NotFoundException":
            return KeyLoadFailed(
                f"KMS key {key_ref} was not found in Region {region}: check the key id or alias "
                "and --aws-region",
                "not_found",
            )
        transient = code in RETRYABLE_KMS_ERRORS
        reason = "unreachable" if transient else _REASON_BY_CODE.get(code, "other")
        return KeyLoadFailed(describe_kms_error(code, key_ref), reason, transient=transient)
    if isinstance(exc, KeyError | TypeError):
        return KeyLoadFailed(
            f"KMS key {key_ref}: the KMS endpoint answered without the expected fields "
            f"({exc}); check --aws-endpoint-url",
            "invalid",
        )
    return KeyLoadFailed(
        f"KMS key {key_ref}: could not reach KMS in Region {region} ({exc}); check the "
        "network, --aws-endpoint-url and AWS credentials",
        "unreachable",
        transient=True,
    )


def check_metadata(key_ref: str, metadata: dict[str, Any]) -> None:
    """KeyLoadFailed naming every reason the described key cannot sign for Ethereum."""
    problems = []
    reason = "spec"
    if metadata.get("KeySpec") != REQUIRED_KEY_SPEC:
        problems.append(f"KeySpec is {metadata.get('KeySpec')}, needs {REQUIRED_KEY_SPEC}")
    if metadata.get("KeyUsage") != REQUIRED_KEY_USAGE:
        problems.append(f"KeyUsage is {metadata.get('KeyUsage')}, needs {REQUIRED_KEY_USAGE}")
    state = metadata.get("KeyState")
    if state != "Enabled":
        problems.append(f"KeyState is {state}: {state_advice(state)}")
        reason = "state" if len(problems) == 1 else reason
    if problems:
        raise KeyLoadFailed(
            f"KMS key {key_ref} ({metadata['Arn']}) cannot be used: " + "; ".join(problems),
            reason,
        )


async def load_key(
    client: Any,
    key_ref: str,
    region: str,
    known_public_keys: Mapping[str, bytes] | None = None,
    calls: KmsCalls | None = None,
) -> KmsKeyInfo:
    """DescribeKey + GetPublicKey for one configured key; KeyLoadFailed naming it when unusable.

    A public key already known for the described ARN (an earlier load) is reused: KMS never
    changes an asymmetric key's material, so a reload costs one DescribeKey per key. Calls go
    through `calls` (the process-wide cap and retries), a few attempts each.
    """
    arn_region = region_of_arn(key_ref)
    if arn_region is not None and arn_region != region:
        raise KeyLoadFailed(
            f"KMS key {key_ref} is in Region {arn_region} but --aws-region is {region}: "
            f"set --aws-region to the key's Region, or give the key its own: "
            f"{key_ref}?region={arn_region}",
            "region",
        )
    calls = calls or KmsCalls()
    try:
        described = await calls.run(
            key_ref, lambda: client.describe_key(KeyId=key_ref), STARTUP_ATTEMPTS
        )
        metadata = described["KeyMetadata"]
        check_metadata(key_ref, metadata)
        arn = metadata["Arn"]
        public_key = (known_public_keys or {}).get(arn)
        if public_key is None:
            fetched = await calls.run(
                key_ref, lambda: client.get_public_key(KeyId=arn), STARTUP_ATTEMPTS
            )
            public_key = public_key_from_spki(fetched["PublicKey"])
    except KeyLoadFailed:
        raise
    except SignatureError as exc:
        raise KeyLoadFailed(f"KMS key {key_ref}: {exc}", "invalid") from exc
    except (
        ClientError, KeyError, TypeError, TimeoutError, BotoCoreError, OSError, aiohttp.ClientError,
        KmsUnavailable,
    ) as exc:  # fmt: skip
        raise load_failure(exc, key_ref, region) from exc
    return KmsKeyInfo(
        ref=key_ref, arn=arn, public_key=public_key, address=address_from_public_key(public_key)
    )
