"""The node behind the proxy: one keep-alive HTTP client, timeouts, and node-error classification.

`call` is for the proxy's own requests (it decodes results and raises NodeRejected on a
JSON-RPC error); `forward` relays a client's request body untouched and returns the node's
bytes, so pass-through calls are never re-serialised.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
import ssl
from typing import Any, Protocol
from urllib.parse import urlsplit

import orjson

from signer_proxy.deadline import bounded, remaining
from signer_proxy.errors import (
    NodeRejected,
    SignerProxyError,
    UpstreamBadResponse,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from signer_proxy.http_client import ConnectFailed, HttpPool, ResponseFailed

log = logging.getLogger(__name__)


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
        configured = self._timeout
        timeout = bounded(configured)  # the request deadline may leave less
        try:
            response = await self._pool.post(body, max(timeout, 0.001))
        except TimeoutError as exc:
            flag = "--upstream-timeout" if timeout >= configured else "--request-deadline"
            raise UpstreamTimeout(
                f"the node at {self.display_url} did not answer within "
                f"{timeout:.3g} s; check the node or raise {flag}"
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


class FailoverUpstream:
    """Several nodes, one at a time: every call goes to the first healthy node in the order
    given. A node that cannot be used is taken out of rotation until a probe finds it well.

    Reads (the proxy's own calls) move on to the next node after any failure; a forwarded
    client body moves on only when it surely never arrived (connection refused), since it
    may be a write; eth_sendRawTransaction goes to one node and moves on only when it surely
    never arrived (after a timeout the send loop resends the same bytes, to the next node).
    """

    def __init__(self, nodes: list[HttpUpstream]) -> None:
        if not nodes:
            raise ValueError("FailoverUpstream needs at least one node")
        self._nodes = nodes
        self._healthy = [True] * len(nodes)
        self._chain_id: str | None = None
        self.display_url = ", ".join(node.display_url for node in nodes)

    async def aclose(self) -> None:
        for node in self._nodes:
            await node.aclose()

    def healthy(self) -> list[str]:
        """The display URLs of the nodes in rotation, in order."""
        return [n.display_url for n, ok in zip(self._nodes, self._healthy, strict=True) if ok]

    def _order(self) -> list[int]:
        """Healthy nodes first, in the configured order; if none is, all of them anyway."""
        up = [i for i, ok in enumerate(self._healthy) if ok]
        return up + [i for i, ok in enumerate(self._healthy) if not ok]

    def _mark_down(self, index: int, exc: SignerProxyError) -> None:
        if self._healthy[index]:
            self._healthy[index] = False
            log.warning(
                "upstream %s taken out of rotation: %s", self._nodes[index].display_url, exc
            )

    async def call(self, method: str, params: Any) -> Any:
        is_send = method == "eth_sendRawTransaction"
        last: SignerProxyError | None = None
        for index in self._order():
            try:
                return await self._nodes[index].call(method, params)
            except NodeRejected:
                raise  # the node works; it refused the call
            except (UpstreamUnavailable, UpstreamBadResponse) as exc:
                self._mark_down(index, exc)
                last = exc
                maybe_arrived = isinstance(exc, UpstreamTimeout | UpstreamBadResponse)
                if is_send and maybe_arrived:
                    raise
                if _deadline_spent():
                    break
        assert last is not None
        raise last

    async def forward(self, body: bytes) -> bytes:
        last: SignerProxyError | None = None
        for index in self._order():
            try:
                return await self._nodes[index].forward(body)
            except (UpstreamUnavailable, UpstreamBadResponse) as exc:
                self._mark_down(index, exc)
                last = exc
                if isinstance(exc, UpstreamTimeout | UpstreamBadResponse) or _deadline_spent():
                    raise
        assert last is not None
        raise last

    async def probe(self) -> None:
        """Ask every node out of rotation for eth_chainId; put back those on the right chain."""
        first = self._chain_id is None  # the first round checks every node's chain
        for index, node in enumerate(self._nodes):
            if self._healthy[index] and not first:
                continue
            try:
                chain_id = str(await node.call("eth_chainId", []))
            except SignerProxyError as exc:
                self._mark_down(index, exc)
                continue
            if self._chain_id is None:
                self._chain_id = chain_id
            if chain_id != self._chain_id:
                if self._healthy[index]:
                    log.error(
                        "upstream %s is on chain %s, not %s: kept out of rotation; fix --upstream",
                        node.display_url,
                        chain_id,
                        self._chain_id,
                    )
                self._healthy[index] = False
            elif not self._healthy[index]:
                self._healthy[index] = True
                log.info("upstream %s back in rotation", node.display_url)

    async def watch(self, interval: float) -> None:
        """Probe forever, every `interval` seconds (run as a background task)."""
        while True:
            await self.probe()
            await asyncio.sleep(interval)


def _deadline_spent() -> bool:
    left = remaining()
    return left is not None and left <= 0
