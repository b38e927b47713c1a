"""The admin route: POST /admin/keys/reload, reloading the keys without a restart.

Off unless --admin-token-file or --admin-clients is set. A caller gets in with
`Authorization: Bearer <the token in --admin-token-file>` (compared in constant time), or as
an authenticated client (its API key or client certificate, as for JSON-RPC) named in
--admin-clients. Host and Origin are checked as for JSON-RPC. It is a separate door from
JSON-RPC on purpose: no JSON-RPC client reaches it by being allowed to call methods.
"""

from __future__ import annotations

import hmac
import json
import logging
from pathlib import Path
from typing import Any

from aiohttp import web

from signer_proxy.errors import ConfigError, Forbidden, SignerProxyError
from signer_proxy.keys.keyring import KeyRing
from signer_proxy.transport.door import authenticate, check_host_and_origin

log = logging.getLogger(__name__)

RELOAD_PATH = "/admin/keys/reload"
MIN_TOKEN_LENGTH = 16

ADMIN_TOKEN = web.AppKey("admin_token", bytes)  # b"": no token, clients only
ADMIN_CLIENTS = web.AppKey("admin_clients", frozenset[str])
ADMIN_KEYRING = web.AppKey("admin_keyring", KeyRing)


def read_admin_token(path: str) -> bytes:
    """The token in `path` (surrounding whitespace dropped); ConfigError when unusable."""
    try:
        token = Path(path).read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"--admin-token-file {path} cannot be read: {exc.strerror}") from None
    if len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(
            f"--admin-token-file {path} must hold a token of at least {MIN_TOKEN_LENGTH} "
            "characters (e.g. openssl rand -hex 32)"
        )
    return token


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=json.dumps(payload).encode(), status=status, content_type="application/json"
    )


def _bearer(request: web.Request) -> bytes | None:
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    return presented.strip().encode() if scheme.lower() == "bearer" else None


def admitted_as(request: web.Request) -> str:
    """Who the caller is ("the admin token" or "client NAME"); SignerProxyError when it may
    not reload (Forbidden host or origin, no valid credentials, a client not allowed)."""
    check_host_and_origin(request)
    token, clients = request.app[ADMIN_TOKEN], request.app[ADMIN_CLIENTS]
    presented = _bearer(request)
    if token and presented is not None and hmac.compare_digest(presented, token):
        return "the admin token"
    if clients:
        client = authenticate(request).client
        if client in clients:
            return f"client {client}"
        raise _NotAdmin(f"client {client} may not reload keys: it is not in --admin-clients")
    raise _NotAdmin("send Authorization: Bearer <the token in --admin-token-file>", 401)


class _NotAdmin(SignerProxyError):
    def __init__(self, message: str, status: int = 403) -> None:
        super().__init__(message)
        self.status = status


async def handle_reload(request: web.Request) -> web.Response:
    """Reload every key source; 200 with what changed and what did not load."""
    try:
        who = admitted_as(request)
    except _NotAdmin as exc:
        log.warning("refused %s from %s: %s", RELOAD_PATH, request.remote, exc.message)
        return _json({"error": exc.message}, exc.status)
    except SignerProxyError as exc:  # Unauthorized (401) or Forbidden (403) from the door
        log.warning("refused %s from %s: %s", RELOAD_PATH, request.remote, exc.message)
        return _json({"error": exc.message}, 403 if isinstance(exc, Forbidden) else 401)
    log.info("%s asked by %s", RELOAD_PATH, who)
    try:
        report = await request.app[ADMIN_KEYRING].reload("admin")
    except ConfigError as exc:
        return _json({"error": f"nothing changed (keys, policy, API keys): {exc}"}, 422)
    return _json(report.to_json())


def add_admin_routes(
    app: web.Application, token: bytes, clients: frozenset[str], keyring: KeyRing
) -> None:
    app[ADMIN_TOKEN] = token
    app[ADMIN_CLIENTS] = clients
    app[ADMIN_KEYRING] = keyring
    app.router.add_post(RELOAD_PATH, handle_reload)
