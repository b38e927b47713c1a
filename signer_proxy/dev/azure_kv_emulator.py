"""A local Azure Key Vault for tests and `signer-proxy dev`: no cloud calls, real secp256k1 keys.

It speaks Key Vault's REST wire format (api-version 7.x) for what signer-proxy uses: get key,
list keys, sign. It serves HTTPS on 127.0.0.1 with a self-signed certificate made at start
(azure-core refuses to send bearer tokens over plain http), and, on a second plain-http port,
an App Service style managed-identity token endpoint (IDENTITY_ENDPOINT / IDENTITY_HEADER), so
the real azure-identity credential fetches its token here.

It refuses what Key Vault refuses: a request without `api-version` or with one it does not
know (400), no or a malformed bearer token (401 with the WWW-Authenticate challenge the
clients expect), a token for another resource (401), an unknown key or version (404), a key
that is not EC/P-256K asked to sign ES256K or another algorithm (400), a digest that is not
32 bytes (400), a body that is not JSON (400). Throttling can be injected (`throttle_next`:
429 with Retry-After), and an outage (`down`: 503 to every vault request until cleared).
"""

from __future__ import annotations

import base64
import datetime
import json
import secrets
import ssl
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import coincurve
from aiohttp import web
from aiohttp.typedefs import Handler
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

API_VERSIONS = frozenset({"7.0", "7.1", "7.2", "7.3", "7.4", "7.5", "7.6", "2025-07-01"})
IDENTITY_API_VERSION = "2019-08-01"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (cert.pem, key.pem) in `directory`."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@dataclass
class EmulatedKey:
    name: str
    version: str
    kty: str = "EC-HSM"
    crv: str = "P-256K"
    tags: dict[str, str] = field(default_factory=dict)
    enabled: bool = True
    secret: bytes = b""  # secp256k1 private key (P-256K keys only)
    other_xy: tuple[bytes, bytes] = (b"", b"")  # public point of a key on another curve


class AzureKeyVaultEmulator:
    """Start with `await start()`, stop with `await stop()`; see the module docstring."""

    def __init__(self) -> None:
        self.keys: dict[str, list[EmulatedKey]] = {}
        self.tokens: dict[str, str] = {}  # token → resource
        self.identity_header = secrets.token_hex(16)
        self.throttle_next = 0
        self.retry_after_seconds = 1
        self.down = False  # every vault request answers 503, as a vault in an outage
        self.sign_calls = 0
        self.requests: list[tuple[str, str]] = []
        self._tmp = tempfile.TemporaryDirectory(prefix="azkv-emulator-")
        self.ca_file = ""
        self.vault_url = ""
        self.identity_endpoint = ""
        self._runners: list[web.AppRunner] = []

    # -- keys -------------------------------------------------------------------------
    def create_key(
        self, name: str, *, tags: dict[str, str] | None = None, curve: str = "P-256K",
        kty: str = "EC-HSM",
    ) -> EmulatedKey:  # fmt: skip
        """A new version of key `name` (secp256k1 unless `curve` says otherwise)."""
        key = EmulatedKey(name, secrets.token_hex(16), kty=kty, crv=curve, tags=dict(tags or {}))
        if curve == "P-256K":
            key.secret = secrets.token_bytes(32)
            coincurve.PrivateKey(key.secret)
        else:
            point = ec.generate_private_key(ec.SECP256R1()).public_key().public_numbers()
            key.other_xy = (point.x.to_bytes(32, "big"), point.y.to_bytes(32, "big"))
        self.keys.setdefault(name, []).append(key)
        return key

    def public_key(self, key: EmulatedKey) -> bytes:
        return coincurve.PrivateKey(key.secret).public_key.format(compressed=False)

    def _find(self, name: str, version: str) -> EmulatedKey | None:
        versions = self.keys.get(name) or []
        if not versions:
            return None
        if not version:
            return versions[-1]
        return next((k for k in versions if k.version == version), None)

    def _bundle(self, key: EmulatedKey) -> dict[str, Any]:
        kid = f"{self.vault_url}/keys/{key.name}/{key.version}"
        if key.secret:
            point = self.public_key(key)
            x, y = point[1:33], point[33:]
        else:
            x, y = key.other_xy
        return {
            "key": {"kid": kid, "kty": key.kty, "crv": key.crv, "key_ops": ["sign", "verify"],
                    "x": _b64url(x), "y": _b64url(y)},
            "attributes": {"enabled": key.enabled, "created": 1700000000, "updated": 1700000000,
                           "recoveryLevel": "Recoverable+Purgeable"},
            "tags": key.tags,
        }  # fmt: skip

    # -- HTTP -------------------------------------------------------------------------
    def _error(self, status: int, code: str, message: str, **headers: str) -> web.Response:
        body = {"error": {"code": code, "message": message}}
        return web.json_response(body, status=status, headers=headers)

    def _challenge(self, message: str) -> web.Response:
        resource = self.vault_url.rsplit(":", 1)[0]  # https://127.0.0.1 (no port), as Azure's
        header = (
            'Bearer authorization="https://login.microsoftonline.com/emulator-tenant", '
            f'resource="{resource}"'
        )
        return self._error(401, "Unauthorized", message, **{"WWW-Authenticate": header})

    @web.middleware
    async def _checks(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        if self.down:
            return self._error(
                503, "ServiceUnavailable", "The service is unavailable", **{"Retry-After": "0"}
            )
        version = request.query.get("api-version")
        if not version:
            return self._error(400, "BadParameter", "The 'api-version' query parameter is missing")
        if version not in API_VERSIONS:
            return self._error(400, "BadParameter", f"The api-version '{version}' is invalid")
        auth = request.headers.get("Authorization", "")
        if not auth:
            return self._challenge("AKV10000: Request is missing a Bearer or PoP token.")
        scheme, _, token = auth.partition(" ")
        if scheme != "Bearer" or not token or token not in self.tokens:
            return self._challenge("AKV10022: Invalid audience or malformed token.")
        if self.tokens[token] != self.vault_url.rsplit(":", 1)[0]:
            return self._challenge("AKV10022: Invalid audience.")
        if self.throttle_next > 0:
            self.throttle_next -= 1
            return self._error(
                429,
                "Throttled",
                "Too many requests",
                **{"Retry-After": str(self.retry_after_seconds)},
            )
        return await handler(request)

    async def _get_key(self, request: web.Request) -> web.Response:
        key = self._find(request.match_info["name"], request.match_info.get("version", ""))
        if key is None:
            return self._error(404, "KeyNotFound", "A key with (name/id) was not found")
        return web.json_response(self._bundle(key))

    async def _list_keys(self, request: web.Request) -> web.Response:
        items = []
        for versions in self.keys.values():
            key = versions[-1]
            items.append(
                {"kid": f"{self.vault_url}/keys/{key.name}", "tags": key.tags,
                 "attributes": {"enabled": key.enabled}}
            )  # fmt: skip
        return web.json_response({"value": items, "nextLink": None})

    async def _sign(self, request: web.Request) -> web.Response:
        key = self._find(request.match_info["name"], request.match_info["version"])
        if key is None:
            return self._error(404, "KeyNotFound", "A key with (name/id) was not found")
        try:
            body = json.loads(await request.read())
            alg, value = body["alg"], _unb64url(body["value"])
        except (ValueError, KeyError, TypeError):
            return self._error(400, "BadParameter", "The request body is not a sign request")
        if not key.enabled:
            return self._error(403, "Forbidden", "Operation sign is not allowed on a disabled key")
        if alg != "ES256K" or key.crv != "P-256K" or not key.secret:
            return self._error(
                400, "BadParameter", f"Algorithm {alg} is not valid for key {key.crv}"
            )
        if len(value) != 32:
            return self._error(400, "BadParameter", "Invalid digest length for ES256K: must be 32")
        self.sign_calls += 1
        sig = coincurve.PrivateKey(key.secret).sign_recoverable(value, hasher=None)[:64]
        # Key Vault does not promise low-S: hand back the high-S twin half of the time.
        if secrets.randbits(1):
            n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
            s = n - int.from_bytes(sig[32:], "big")
            sig = sig[:32] + s.to_bytes(32, "big")
        kid = f"{self.vault_url}/keys/{key.name}/{key.version}"
        return web.json_response({"kid": kid, "value": _b64url(sig)})

    async def _token(self, request: web.Request) -> web.Response:
        if request.headers.get("X-IDENTITY-HEADER") != self.identity_header:
            return web.json_response({"error": "invalid identity header"}, status=401)
        if request.query.get("api-version") != IDENTITY_API_VERSION:
            return web.json_response({"error": "unsupported api-version"}, status=400)
        resource = request.query.get("resource", "")
        if not resource:
            return web.json_response({"error": "resource is required"}, status=400)
        token = secrets.token_urlsafe(24)
        self.tokens[token] = resource.rstrip("/")
        expires = int(time.time()) + 3600
        return web.json_response(
            {"access_token": token, "expires_on": str(expires), "resource": resource,
             "token_type": "Bearer", "client_id": "emulator"}
        )  # fmt: skip

    def credential_env(self) -> dict[str, str]:
        """Environment under which azure-identity's managed identity credential asks us."""
        return {
            "IDENTITY_ENDPOINT": self.identity_endpoint,
            "IDENTITY_HEADER": self.identity_header,
        }

    async def start(self) -> None:
        cert, key = self_signed_cert(Path(self._tmp.name))
        self.ca_file = str(cert)
        vault = web.Application(middlewares=[self._checks])
        vault.router.add_get("/keys", self._list_keys)
        vault.router.add_get("/keys/{name}", self._get_key)
        vault.router.add_get("/keys/{name}/", self._get_key)
        vault.router.add_get("/keys/{name}/{version}", self._get_key)
        vault.router.add_post("/keys/{name}/{version}/sign", self._sign)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        self.vault_url = f"https://127.0.0.1:{await self._serve(vault, context)}"
        identity = web.Application()
        identity.router.add_get("/msi/token", self._token)
        self.identity_endpoint = f"http://127.0.0.1:{await self._serve(identity, None)}/msi/token"

    async def _serve(self, app: web.Application, context: ssl.SSLContext | None) -> int:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        self._runners.append(runner)
        server = site._server
        assert server is not None
        port: int = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        return port

    async def stop(self) -> None:
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()
        self._tmp.cleanup()
