"""The node behind the proxy: one keep-alive HTTP client, timeouts, and node-error classification.

`call` is for the proxy's own requests (it decodes results and raises NodeRejected on a
JSON-RPC error); `forward` relays a client's request body untouched and returns the node's
bytes, so pass-through calls are never re-serialised.
"""

from __future__ import annotations

import enum
import itertools
import ssl
from typing import Any, Protocol
from urllib.parse import urlsplit

import orjson

from signer_proxy.errors import (
    NodeRejected,
    UpstreamBadResponse,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from signer_proxy.http_client import ConnectFailed, HttpPool, ResponseFailed


class Upstream(Protocol):
    """A JSON-RPC node."""

    async def call(self, method: str, params: Any) -> Any:
        """The `result` of one call; NodeRejected when the node answers with an error."""
        ...

    async def forward(self, body: bytes) -> bytes:
        """Relay a JSON-RPC request body as it is; the node's response body as it is."""
        ...


def redact_url(url: str) -> str:
    """scheme://host:port only: node URLs often carry API keys in the path, query or userinfo."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    host = f"[{host}]" if ":" in host else host  # IPv6 literals keep their brackets
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}"


class HttpUpstream:
    """JSON-RPC over HTTP(S): a keep-alive connection pool of its own (`aclose` when done)."""

    def __init__(
        self,
        url: str,
        timeout: float,
        *,
        connect_timeout: float = 5.0,
        max_connections: int = 256,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._pool = HttpPool(
            url,
            connect_timeout=connect_timeout,
            max_connections=max_connections,
            ssl_context=ssl_context,
        )
        self._timeout = timeout
        self._ids = itertools.count(1)
        self.display_url = redact_url(url)

    async def aclose(self) -> None:
        await self._pool.close()

    async def _post(self, body: bytes) -> tuple[int, str, bytes]:
        try:
            response = await self._pool.post(body, self._timeout)
        except TimeoutError as exc:
            raise UpstreamTimeout(
                f"the node at {self.display_url} did not answer within "
                f"{self._timeout:g} s; check the node or raise --upstream-timeout"
            ) from exc
        except ConnectFailed as exc:
            raise UpstreamUnavailable(
                f"the node at {self.display_url} could not be reached ({exc}); "
                "check that it is running and that --upstream points at it"
            ) from exc
        except ResponseFailed as exc:  # connected, then lost: the request may have arrived
            raise UpstreamTimeout(
                f"the connection to the node at {self.display_url} failed mid-request "
                f"({exc}); check the node"
            ) from exc
        return response.status, response.content_type, response.body

    async def forward(self, body: bytes) -> bytes:
        status, content_type, payload = await self._post(body)
        if status == 200 and content_type == "application/json":
            return payload
        try:
            orjson.loads(payload)
        except ValueError:
            raise UpstreamBadResponse(
                f"the node at {self.display_url} answered HTTP {status} with a body that is not "
                "JSON-RPC; check --upstream"
            ) from None
        return payload

    async def call(self, method: str, params: Any) -> Any:
        request = {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params}
        status, _, payload = await self._post(orjson.dumps(request))
        try:
            response = orjson.loads(payload)
        except ValueError:
            response = None
        if not isinstance(response, dict) or ("result" not in response and "error" not in response):
            raise UpstreamBadResponse(
                f"the node at {self.display_url} answered {method} with HTTP {status} and no "
                "JSON-RPC response; check --upstream"
            )
        error = response.get("error")
        if error is not None:
            if not isinstance(error, dict):
                error = {"message": str(error)}
            raise NodeRejected(
                int(error.get("code", -32000)),
                str(error.get("message", "the node returned an error")),
                error.get("data"),
            )
        return response["result"]


class SendOutcome(enum.Enum):
    """What an eth_sendRawTransaction error means for the nonce that was used."""

    NONCE_TOO_LOW = "nonce_too_low"  # the nonce is taken on chain: resync, new nonce, re-sign
    NONCE_TOO_HIGH = "nonce_too_high"  # our counter ran ahead of the node: resync and retry
    ALREADY_KNOWN = "already_known"  # the node has this very transaction: a success
    NONCE_IN_USE = "nonce_in_use"  # another pending tx holds the nonce: resync and retry
    REJECTED = "rejected"  # the transaction is invalid as it stands: free the nonce, report


# Lower-case fragments of node error messages, checked in order; first match wins.
# Sources: geth/reth/erigon txpool errors, Besu's TransactionInvalidReason names,
# Nethermind's AcceptTxResult, anvil's pool errors, the Hedera JSON-RPC relay.
SEND_ERROR_PATTERNS: tuple[tuple[str, SendOutcome], ...] = (
    ("unknown transaction", SendOutcome.REJECTED),  # guards "known transaction" below
    ("already known", SendOutcome.ALREADY_KNOWN),
    ("alreadyknown", SendOutcome.ALREADY_KNOWN),
    ("known transaction", SendOutcome.ALREADY_KNOWN),
    ("transaction already imported", SendOutcome.ALREADY_KNOWN),
    ("transaction already exists", SendOutcome.ALREADY_KNOWN),
    ("existing tx with same hash", SendOutcome.ALREADY_KNOWN),  # Erigon
    ("existing txn with same hash", SendOutcome.ALREADY_KNOWN),  # Erigon, newer
    ("nonce too low", SendOutcome.NONCE_TOO_LOW),
    ("nonce_too_low", SendOutcome.NONCE_TOO_LOW),
    ("oldnonce", SendOutcome.NONCE_TOO_LOW),
    ("nonce has already been used", SendOutcome.NONCE_TOO_LOW),
    ("nonce too high", SendOutcome.NONCE_TOO_HIGH),
    ("nonce_too_far_in_future_for_sender", SendOutcome.NONCE_TOO_HIGH),
    ("nonce_too_high", SendOutcome.NONCE_TOO_HIGH),
    ("nonce is too distant", SendOutcome.NONCE_TOO_HIGH),  # Besu's text for the one above
    ("noncegap", SendOutcome.NONCE_TOO_HIGH),  # Nethermind, older
    ("nonce too far in future", SendOutcome.NONCE_TOO_HIGH),  # Nethermind, newer
    ("replacement transaction underpriced", SendOutcome.NONCE_IN_USE),
    ("replacement_underpriced", SendOutcome.NONCE_IN_USE),
    ("replacement_transaction_underpriced", SendOutcome.NONCE_IN_USE),
)


def classify_send_error(message: str) -> SendOutcome:
    """Classify a node's eth_sendRawTransaction error message (case-insensitive)."""
    lowered = message.lower()
    for fragment, outcome in SEND_ERROR_PATTERNS:
        if fragment in lowered:
            return outcome
    return SendOutcome.REJECTED
