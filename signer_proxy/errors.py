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
    ├── ResourceUnavailable          -32002  shutting down (or the WebSocket closing): no new calls
    ├── RateLimited                  -32005  over a per-connection limit (WebSocket messages/s)
    ├── SigningFailed                -32010  KMS answered but no usable signature came back
    ├── KmsUnavailable               -32011  KMS throttled, timed out or could not be reached
    ├── UpstreamUnavailable          -32020  the node could not be reached: nothing was delivered
    │   └── UpstreamTimeout          -32020  no answer in time: the request may have been delivered
    ├── UpstreamBadResponse          -32021  the node answered something that is not JSON-RPC
    ├── NodeRejected                 (node's)  the node refused a call we made; its code kept
    └── ConfigError                  (startup only, never on the wire)

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


class MethodNotFound(SignerProxyError):
    code = -32601


class InvalidParams(SignerProxyError):
    code = -32602


class UnknownAccount(InvalidParams):
    pass


class ChainIdMismatch(InvalidParams):
    pass


class ResourceUnavailable(SignerProxyError):
    """EIP-1474's "resource unavailable": no new calls (shutting down, or the socket closing)."""

    code = -32002


class RateLimited(SignerProxyError):
    """EIP-1474's "limit exceeded": a client sent more than its limit allows."""

    code = -32005


class SigningFailed(SignerProxyError):
    code = -32010


class KmsUnavailable(SignerProxyError):
    code = -32011


class UpstreamUnavailable(SignerProxyError):
    code = -32020


class UpstreamTimeout(UpstreamUnavailable):
    """The node did not answer in time; unlike its parent, the request may have arrived."""


class UpstreamBadResponse(SignerProxyError):
    code = -32021


class NodeRejected(SignerProxyError):
    """The node answered a call of ours with a JSON-RPC error; its code and message are kept."""

    def __init__(self, node_code: int, message: str, data: Any = None) -> None:
        super().__init__(message, data)
        self.node_code = node_code

    def error_code(self) -> int:
        return self.node_code


class ConfigError(Exception):
    """Startup refused: the message names the setting or key and what to change."""


INTERNAL_ERROR_MESSAGE = "internal error in signer-proxy; the server log has the details"
