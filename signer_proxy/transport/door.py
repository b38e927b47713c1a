"""Who may come in, for every transport: Host and Origin checks, authentication, rate limits,
CORS. The HTTP transport calls these per request; the WebSocket transport calls `admit` once
on the upgrade request (before accepting it, so a refusal is an HTTP 401/403) and `charge`
per message, and builds each message's context with `call_context(identity, "ws")`.

Nothing here reads the request body: an unauthenticated request costs a header check, and
nothing of it is forwarded to the node.
"""

from __future__ import annotations

import fnmatch
import functools
import logging
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import HttpVersion11, web
from aiohttp.typedefs import Handler

from signer_proxy.access.auth import (
    ANONYMOUS_IDENTITY,
    Authenticator,
    Credentials,
    Identity,
    cert_names,
)
from signer_proxy.access.ratelimit import RateLimiter
from signer_proxy.errors import BadHost, Forbidden, RateLimited, Unauthorized
from signer_proxy.jsonrpc import CallContext

log = logging.getLogger(__name__)

ANY = "*"
MAX_HOSTS_REMEMBERED = 64
CORS_ALLOW_HEADERS = "Authorization, Content-Type, X-Request-Id"
# RFC 9110 Host: uri-host [":" port]; uri-host is an IP-literal in brackets or a reg-name.
# Anything else ("[::1]evil.com", "a b", "x@y") is refused rather than read one way here and
# another by a front proxy or a browser.
_HOST = re.compile(
    r"(?:\[[0-9A-Fa-f:.]+\]|\[v[0-9A-Fa-f]+\.[A-Za-z0-9._~!$&'()*+,;=:-]+\]"
    r"|[A-Za-z0-9._~!$&'()*+,;=%-]*)(?::[0-9]*)?"
)


@dataclass(frozen=True)
class Access:
    """The app's door: who is let in and from where."""

    authenticator: Authenticator
    limiter: RateLimiter
    allowed_hosts: tuple[str, ...] = (ANY,)  # fnmatch patterns of Host names
    cors_origins: tuple[str, ...] = ()  # exact origins, or "*"
    # Host headers already judged: clients send the same one on every request.
    _hosts_seen: dict[str, bool] = field(default_factory=dict, compare=False, repr=False)

    def host_allowed(self, host_header: str | None) -> bool:
        if host_header is None or ANY in self.allowed_hosts:
            return True
        allowed = self._hosts_seen.get(host_header)
        if allowed is None:
            host = host_name(host_header)
            allowed = any(fnmatch.fnmatchcase(host, p.lower()) for p in self.allowed_hosts)
            if len(self._hosts_seen) < MAX_HOSTS_REMEMBERED:  # made-up names stay uncached
                self._hosts_seen[host_header] = allowed
        return allowed

    def origin_allowed(self, origin: str) -> bool:
        return ANY in self.cors_origins or origin in self.cors_origins


OPEN_ACCESS = Access(Authenticator({}, required=False), RateLimiter({}))
ACCESS = web.AppKey("access", Access)


def host_name(host_header: str) -> str:
    """The name of a Host header without its port, lower case: "[::1]:8545" → "::1"."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


def _access(request: web.Request) -> Access:
    return request.app.get(ACCESS) or OPEN_ACCESS


def credentials_of(
    authorization: str | None, query_key: str | None, peercert: Mapping[str, Any] | None
) -> Credentials:
    """The credentials a request offers (Unauthorized for an Authorization header we cannot
    use, rather than ignoring it)."""
    bearer = None
    if authorization is not None:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized(
                "the Authorization header must be 'Bearer <API key>'; other schemes are not "
                "accepted"
            )
        bearer = token.strip()
    return Credentials(bearer, query_key, cert_names(peercert))


@functools.lru_cache(maxsize=MAX_HOSTS_REMEMBERED)  # clients send the same Host every time
def host_well_formed(host: str) -> bool:
    """A Host header value is `name[:port]` or `[IPv6][:port]` (RFC 9110 section 7.2)."""
    return _HOST.fullmatch(host) is not None


def check_host(host: str | None, required: bool) -> None:
    """BadHost for a Host that is not host[:port], or none when HTTP/1.1 requires one."""
    if host is None:
        if required:
            raise BadHost(
                "an HTTP/1.1 request needs a Host header (RFC 9112); send the proxy's name or "
                "address as Host"
            )
    elif not host_well_formed(host):
        raise BadHost(
            f"the Host header {host[:100]!r} is not a host name or [IPv6 address] with an "
            "optional :port; send the proxy's name or address as Host"
        )


def check_host_and_origin_of(
    access: Access, host: str | None, origin: str | None, host_required: bool = False
) -> None:
    """BadHost for a missing (HTTP/1.1) or malformed Host; Forbidden for a Host not served
    (DNS rebinding) or a web page Origin not allowed (a page posting to the proxy behind its
    user's back)."""
    check_host(host, host_required)
    if not access.host_allowed(host):
        raise Forbidden(
            f"Host {host_name(host or '')!r} is not served by this proxy; add it to "
            "--allowed-hosts if clients reach the proxy by that name"
        )
    if origin is not None and not access.origin_allowed(origin):
        raise Forbidden(
            f"requests from web pages at {origin[:100]!r} are refused; the operator can allow "
            "that origin with --cors-origins"
        )


def identify(access: Access, caller: Caller) -> Identity:
    """The caller's identity from its API key or client certificate; Unauthorized if none is
    valid and authentication is configured (ANONYMOUS_IDENTITY when it is not)."""
    if not access.authenticator.required:
        return ANONYMOUS_IDENTITY
    return access.authenticator.authenticate(
        credentials_of(caller.authorization, caller.query_key, caller.peercert)
    )


def admit_caller(access: Access, caller: Caller) -> Identity:
    """Everything asked of a request before its body is read: Host, Origin, credentials."""
    check_host_and_origin_of(access, caller.host, caller.origin, caller.http11)
    try:
        return identify(access, caller)
    except Unauthorized as exc:
        log.info("refused an unauthenticated request from %s: %s", caller.remote, exc.message)
        raise


@dataclass(frozen=True, slots=True)
class Caller:
    """What the door looks at, whichever HTTP server parsed the request."""

    host: str | None
    origin: str | None
    authorization: str | None
    query_key: str | None  # ?key=, the first one
    peercert: Mapping[str, Any] | None  # mTLS: ssl's getpeercert() dict
    remote: str | None  # for the log line of a refusal
    http11: bool = False  # HTTP/1.1 or later: a Host header is required
    traceparent: str | None = None  # W3C trace context, continued when tracing is on


def caller_of(request: web.Request) -> Caller:
    headers = request.headers
    transport = request.transport
    return Caller(
        headers.get("Host"),
        headers.get("Origin"),
        headers.get("Authorization"),
        request.query.get("key"),
        transport.get_extra_info("peercert") if transport is not None else None,
        request.remote,
        request.version >= HttpVersion11,
        headers.get("traceparent"),
    )


def authenticate(request: web.Request) -> Identity:
    """identify() for an aiohttp request."""
    return identify(_access(request), caller_of(request))


def check_host_and_origin(request: web.Request) -> None:
    """check_host_and_origin_of for an aiohttp request."""
    headers = request.headers
    check_host_and_origin_of(
        _access(request),
        headers.get("Host"),
        headers.get("Origin"),
        request.version >= HttpVersion11,
    )


def admit(request: web.Request) -> Identity:
    """admit_caller for an aiohttp request."""
    return admit_caller(_access(request), caller_of(request))


def charge(app: web.Application, identity: Identity, calls: int) -> None:
    """Take `calls` from the client's rate limit; RateLimited when it is used up."""
    (app.get(ACCESS) or OPEN_ACCESS).limiter.charge(identity.client, calls)


def call_context(
    identity: Identity, transport: str, traceparent: str | None = None, chain: str = "default"
) -> CallContext:
    """The context every local method of this request is called with."""
    return CallContext(identity.client, transport, identity.method, traceparent, chain)


def retry_after_header(exc: RateLimited) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(exc.retry_after)))}


# --- CORS ------------------------------------------------------------------------------------


def cors_headers_for(access: Access, origin: str | None) -> dict[str, str]:
    """The headers that let an allowed web page read the reply (none for other requests)."""
    if origin is None or not access.origin_allowed(origin):
        return {}
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Expose-Headers": "X-Request-Id, Retry-After",
        "Vary": "Origin",
    }


def cors_headers(request: web.Request) -> dict[str, str]:
    return cors_headers_for(_access(request), request.headers.get("Origin"))


async def handle_preflight(request: web.Request) -> web.Response:
    """OPTIONS /: a browser asking whether its page may POST JSON-RPC with an API key."""
    headers = cors_headers(request)
    if not headers:
        return web.Response(status=403, text="origin not allowed: see --cors-origins\n")
    headers.update(
        {
            "Access-Control-Allow-Methods": "POST, OPTIONS",
            "Access-Control-Allow-Headers": CORS_ALLOW_HEADERS,
            "Access-Control-Max-Age": "600",
        }
    )
    return web.Response(status=204, headers=headers)


@web.middleware
async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Add CORS headers to every reply to an allowed origin, errors included."""
    response = await handler(request)
    if request.method != "OPTIONS" and not response.prepared:
        response.headers.update(cors_headers(request))
    return response


def build_access(
    authenticator: Authenticator,
    limiter: RateLimiter,
    allowed_hosts: Iterable[str],
    cors_origins: Iterable[str],
) -> Access:
    hosts = tuple(allowed_hosts) or (ANY,)
    return Access(authenticator, limiter, hosts, tuple(cors_origins))
