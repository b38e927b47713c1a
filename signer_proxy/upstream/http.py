"""JSON-RPC over HTTP(S) to one node.

`call` is for the proxy's own requests (it decodes results and raises NodeRejected on a
JSON-RPC error); `forward` relays a client's request body untouched and returns the node's
bytes, so pass-through calls are never re-serialised.
"""

from __future__ import annotations

import itertools
import ssl
from typing import Any

import orjson

from signer_proxy.deadline import bounded
from signer_proxy.errors import (
    UpstreamBadResponse,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from signer_proxy.jsonrpc import loads
from signer_proxy.ops.tracing import OUTGOING_HEADERS
from signer_proxy.upstream.base import node_error, redact_url
from signer_proxy.upstream.credentials import UpstreamAuth
from signer_proxy.upstream.http_pool import ConnectFailed, HttpPool, PoolBusy, ResponseFailed

_JSON = {"Content-Type": "application/json"}


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
        auth: UpstreamAuth | None = None,
    ) -> None:
        self._auth = auth  # extra headers / SigV4; None: plain JSON POSTs (the fast path)
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
            extra = OUTGOING_HEADERS.get()  # traceparent, when tracing is on
            base = None if self._auth is None else self._auth.headers(body)
            headers = {**(base or _JSON), **extra} if extra else base
            response = await self._pool.post(body, max(timeout, 0.001), headers)
        except TimeoutError as exc:
            flag = "--upstream-timeout" if timeout >= configured else "--request-deadline"
            raise UpstreamTimeout(
                f"the node at {self.display_url} did not answer within "
                f"{timeout:.3g} s; check the node or raise {flag}"
            ) from exc
        except PoolBusy as exc:
            raise UpstreamUnavailable(
                f"the node at {self.display_url} is slow to answer: {exc}, so this request "
                "was not sent; retry, or check the node's load"
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
        if response.status in (401, 403):
            raise UpstreamUnavailable(
                f"the node at {self.display_url} refused the proxy's credentials "
                f"(HTTP {response.status}); check this upstream's headers, URL userinfo or SigV4 "
                "settings"
            )
        return response.status, response.content_type, response.body

    async def forward(self, body: bytes) -> bytes:
        status, content_type, payload = await self._post(body)
        if status == 200 and content_type == "application/json":
            return payload
        try:
            loads(payload)
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
            response = loads(payload)
        except ValueError:
            response = None
        if not isinstance(response, dict) or ("result" not in response and "error" not in response):
            raise UpstreamBadResponse(
                f"the node at {self.display_url} answered {method} with HTTP {status} and no "
                "JSON-RPC response; check --upstream"
            )
        error = response.get("error")
        if error is not None:
            raise node_error(error)
        return response["result"]
