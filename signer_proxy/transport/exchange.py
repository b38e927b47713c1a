"""What both HTTP servers — the fast lane and aiohttp's path — do around every JSON-RPC
request, in one place: its request id (the caller's X-Request-Id when plain, else a new one;
set in the log context) and the headers every reply carries (X-Request-Id, and CORS for an
allowed web page origin). The in-flight count both keep is `ops.shutdown.InFlight`.
"""

from __future__ import annotations

from contextvars import Token

from signer_proxy.ops.logs import REQUEST_ID, REQUEST_ID_HEADER, request_id_from
from signer_proxy.transport.door import Access, cors_headers_for


def open_request(header: str | None) -> tuple[str, Token[str]]:
    """The request's id from its X-Request-Id header, set for the log lines of the current
    context; the token resets it (a server whose context outlives the request)."""
    request_id = request_id_from(header)
    return request_id, REQUEST_ID.set(request_id)


def reply_headers(access: Access, origin: str | None, request_id: str) -> list[tuple[str, str]]:
    """The headers of every reply to a JSON-RPC request, refusals included."""
    headers = [(REQUEST_ID_HEADER, request_id)]
    if origin is not None:
        headers.extend(cors_headers_for(access, origin).items())
    return headers


def reply_header_lines(access: Access, origin: str | None, request_id: str) -> bytes:
    """reply_headers as HTTP/1.1 header lines (the fast lane writes its head itself)."""
    if origin is None:  # the common case, without the list
        return b"X-Request-Id: %s\r\n" % request_id.encode("latin-1")
    lines = "".join(
        f"{name}: {value}\r\n" for name, value in reply_headers(access, origin, request_id)
    )
    return lines.encode("latin-1")
