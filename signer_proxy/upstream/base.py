"""The `Upstream` seam: a JSON-RPC node, and how its URL may be shown."""

from __future__ import annotations

from typing import Any, Protocol
from urllib.parse import urlsplit

from signer_proxy.errors import NodeRejected


class Upstream(Protocol):
    """A JSON-RPC node."""

    async def call(self, method: str, params: Any) -> Any:
        """The `result` of one call; NodeRejected when the node answers with an error."""
        ...

    async def forward(self, body: bytes) -> bytes:
        """Relay a JSON-RPC request body as it is; the node's response body as it is."""
        ...


def node_error(error: Any) -> NodeRejected:
    """A JSON-RPC error object the node answered, as the error `Upstream.call` raises."""
    if not isinstance(error, dict):
        error = {"message": str(error)}
    return NodeRejected(
        int(error.get("code", -32000)),
        str(error.get("message", "the node returned an error")),
        error.get("data"),
    )


def redact_url(url: str) -> str:
    """scheme://host:port only: node URLs often carry API keys in the path, query or userinfo."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    host = f"[{host}]" if ":" in host else host  # IPv6 literals keep their brackets
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}"
