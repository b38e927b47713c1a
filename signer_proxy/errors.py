"""Every error signer-proxy reports, each class owning its JSON-RPC code.

    SignerProxyError                 base; code -32603
    ├── ParseError                   -32700  body is not JSON
    ├── InvalidRequest               -32600  not a JSON-RPC 2.0 request object
    │   ├── BatchTooLarge            -32600  batch over --max-batch
    │   └── BodyTooLarge             -32600  body over --max-body-bytes (HTTP 413)
    ├── MethodNotFound               -32601
    ├── InvalidParams                -32602  wrong types, bad hex, bad address
    │   ├── UnknownAccount           -32602  `from` is not a key this proxy holds
    │   └── ChainIdMismatch          -32602  request chainId differs from the node's
    ├── ResourceUnavailable          -32002  shutting down: no new work is taken
    ├── SigningFailed                -32010  KMS answered but no usable signature came back
    │   └── HsmRefused               -32010  a PKCS#11 token refused to sign (CKR_*, PIN)
    ├── KmsUnavailable               -32011  KMS throttled, timed out or could not be reached
    │   └── HsmUnavailable           -32011  a PKCS#11 token is away, logged out or down
    ├── UpstreamUnavailable          -32020  the node could not be reached: nothing was delivered
    ├── UpstreamTimeout              -32020  no answer in time: the request may have been delivered
    ├── UpstreamBadResponse          -32021  the node answered something that is not JSON-RPC
    ├── DeadlineExceeded             -32030  --request-deadline ran out before anything was sent
    ├── NonceStoreUnavailable        -32050  the Redis nonce store could not be used
    ├── NonceLeaseExpired            -32051  the nonce's lease ran out before sending: nothing sent
    ├── Unauthorized                 -32040  no valid API key or client certificate (HTTP 401)
    ├── Forbidden                    -32041  Host or Origin not allowed (HTTP 403)
    ├── PolicyDenied                 -32043  a scope or policy rule refused; data names the rule
    ├── AuditUnavailable             -32044  the audit log cannot be written: nothing signed
    ├── RateLimited                  -32005  a client or WebSocket rate limit is used up (HTTP 429)
    ├── UnknownChain                 -32060  the path names no chain this proxy serves (HTTP 404)
    ├── NodeRejected                 (node's)  the node refused a call we made; its code kept
    └── ConfigError                  (startup only, never on the wire)
        └── KeyLoadFailed            one key could not be loaded (startup refuses, reload reports)
    KeyCommandFailed                 a `signer-proxy keys …` command failed (CLI only, exit 1)

The transport turns any of these into a JSON-RPC error object exactly once
(`to_error_object`); nothing else in the package picks error codes.
"""

from __future__ import annotations

from typing import Any, ClassVar


class SignerProxyError(Exception):
    """Base class: a message that says what was wrong and what to do, plus a code."""

    code: ClassVar[int] = -32603
    http_status: ClassVar[int] = 200

    def __init__(self, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data

    def error_code(self) -> int:
        return self.code

    def to_error_object(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.error_code(), "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


class ParseError(SignerProxyError):
    code = -32700


class InvalidRequest(SignerProxyError):
    code = -32600


class BatchTooLarge(InvalidRequest):
    http_status = 413


class BodyTooLarge(InvalidRequest):
    http_status = 413


class BadHost(InvalidRequest):
    """An HTTP/1.1 request without a Host header, or with one that is not a host[:port]."""

    http_status = 400


class RequestTimeout(InvalidRequest):
    """The client took longer than --head-timeout / --body-timeout to send its request."""

    http_status = 408


class MethodNotFound(SignerProxyError):
    code = -32601


class InvalidParams(SignerProxyError):
    code = -32602


class UnknownAccount(InvalidParams):
    pass


class ChainIdMismatch(InvalidParams):
    pass


class ResourceUnavailable(SignerProxyError):
    """EIP-1474's "resource unavailable": the proxy is shutting down and takes no new calls."""

    code = -32002


class SigningFailed(SignerProxyError):
    code = -32010


class KmsUnavailable(SignerProxyError):
    code = -32011


class HsmRefused(SigningFailed):
    """A PKCS#11 token refused to sign with a key (CKR_* error, PIN): the message names both."""


class HsmUnavailable(KmsUnavailable):
    """A PKCS#11 token cannot be reached (removed, logged out, HSM down) after reconnecting."""


class UpstreamUnavailable(SignerProxyError):
    """The node could not be reached: nothing was delivered (safe to try elsewhere)."""

    code = -32020


class UpstreamTimeout(SignerProxyError):
    """No answer in time, or the connection broke mid-request: the request may have arrived.

    A sibling of UpstreamUnavailable, not a kind of it: the class alone says whether bytes may
    have left, so no `except UpstreamUnavailable` can mistake a maybe for a no (as httpx
    separates ConnectError from ReadTimeout)."""

    code = -32020


class UpstreamBadResponse(SignerProxyError):
    code = -32021


class DeadlineExceeded(SignerProxyError):
    """The request used up --request-deadline at a point where nothing had been sent."""

    code = -32030


class NonceStoreUnavailable(SignerProxyError):
    code = -32050


class NonceLeaseExpired(SignerProxyError):
    """Another replica may re-issue the nonce: the signed transaction was not sent."""

    code = -32051


class Unauthorized(SignerProxyError):
    """No valid credentials: the whole request is refused before anything else happens."""

    code = -32040
    http_status = 401


class Forbidden(SignerProxyError):
    """The request's Host or Origin is not one this proxy serves (DNS rebinding, CSRF)."""

    code = -32041
    http_status = 403


class PolicyDenied(SignerProxyError):
    """A client scope or signing-policy rule refused the call; `rule` names it."""

    code = -32043

    def __init__(self, rule: str, scope: str, message: str) -> None:
        super().__init__(message, {"rule": rule, "scope": scope})
        self.rule = rule
        self.scope = scope


class AuditUnavailable(SignerProxyError):
    """The audit log cannot be written, so nothing is signed until it can."""

    code = -32044


class RateLimited(SignerProxyError):
    """The client's calls per second are used up (EIP-1474's "limit exceeded" code)."""

    code = -32005
    http_status = 429

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message, {"retryAfter": round(retry_after, 3)})
        self.retry_after = retry_after


class UnknownChain(SignerProxyError):
    """The request's path (/chain/NAME, /chain/ID, or / with no default chain) names no chain
    this proxy serves: nothing was run."""

    code = -32060
    http_status = 404


class NodeRejected(SignerProxyError):
    """The node answered a call of ours with a JSON-RPC error; its code and message are kept."""

    def __init__(self, node_code: int, message: str, data: Any = None) -> None:
        super().__init__(message, data)
        self.node_code = node_code

    def error_code(self) -> int:
        return self.node_code


class ConfigError(Exception):
    """Startup refused: the message names the setting or key and what to change."""


class KeyCommandFailed(Exception):
    """A key-management command (keys create/import/verify, address) could not do its job;
    the message says why and what to do. CLI only: exit status 1."""


# Why a key failed to load: the fixed label set of metrics and reports.
KEY_LOAD_REASONS = (
    "not_found",
    "access_denied",
    "state",
    "spec",
    "region",
    "unreachable",
    "invalid",
    "keystore",
    "listing",
    "duplicate",
    "other",
)


class KeyLoadFailed(ConfigError):
    """One key (or a discovery listing) could not be loaded.

    `reason` is one of KEY_LOAD_REASONS; `transient` says a later attempt may succeed
    (throttling, a network error), so a reload keeps the key's previous signer meanwhile.
    """

    def __init__(self, message: str, reason: str = "other", *, transient: bool = False) -> None:
        super().__init__(message)
        self.reason = reason if reason in KEY_LOAD_REASONS else "other"
        self.transient = transient


INTERNAL_ERROR_MESSAGE = "internal error in signer-proxy; the server log has the details"
