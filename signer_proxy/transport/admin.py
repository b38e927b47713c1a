"""The admin route: POST /admin/keys/reload, reloading the keys without a restart.

Off unless --admin-token-file names a file holding a token; then a request must carry
`Authorization: Bearer <token>` (compared in constant time). The route is a separate door
from JSON-RPC on purpose: no client of the JSON-RPC API can reach it by accident, and the
authentication feature can later gate it by client as well.
"""

from __future__ import annotations

import hmac
import json
import logging
from pathlib import Path
from typing import Any

from aiohttp import web

from signer_proxy.errors import ConfigError
from signer_proxy.keys.keyring import KeyRing

log = logging.getLogger(__name__)

RELOAD_PATH = "/admin/keys/reload"
MIN_TOKEN_LENGTH = 16

ADMIN_TOKEN = web.AppKey("admin_token", bytes)
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


def _authorized(request: web.Request) -> bool:
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(presented.strip().encode(), request.app[ADMIN_TOKEN])


async def handle_reload(request: web.Request) -> web.Response:
    """Reload every key source; 200 with what changed and what did not load."""
    if not _authorized(request):
        log.warning("refused %s from %s: no valid admin token", RELOAD_PATH, request.remote)
        return _json({"error": "send Authorization: Bearer <the token in --admin-token-file>"}, 401)
    try:
        report = await request.app[ADMIN_KEYRING].reload("admin")
    except ConfigError as exc:
        return _json({"error": f"the keys are unchanged: {exc}"}, 422)
    return _json(report.to_json())


def add_admin_routes(app: web.Application, token: bytes, keyring: KeyRing) -> None:
    app[ADMIN_TOKEN] = token
    app[ADMIN_KEYRING] = keyring
    app.router.add_post(RELOAD_PATH, handle_reload)
