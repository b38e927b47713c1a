"""A local Google Cloud KMS for tests and `signer-proxy dev`: no cloud calls, real secp256k1 keys.

It serves the KeyManagementService gRPC methods signer-proxy uses (GetPublicKey,
AsymmetricSign, ListCryptoKeys, ListCryptoKeyVersions) on 127.0.0.1 with gRPC local
credentials (loopback, no TLS certificate needed, call credentials allowed), using the
official message classes of google.cloud.kms_v1. A plain-http OAuth token endpoint answers
the refresh_token grant, so an "authorized_user" ADC file whose token_uri points here lets the
real google-auth refresh flow run.

It refuses what Cloud KMS refuses: no or a malformed `authorization` bearer token
(UNAUTHENTICATED), an unknown key version (NOT_FOUND), a version that is not enabled
(FAILED_PRECONDITION), a key of another algorithm or a digest that is not SHA-256 / 32 bytes
(INVALID_ARGUMENT), a `digest_crc32c` that does not match the digest (INVALID_ARGUMENT). It
always fills the integrity fields of its answers; `corrupt_next` flips a signature bit after
the checksum is computed, to prove the client checks. `unavailable_next` answers UNAVAILABLE
that many times; `down` answers UNAVAILABLE to everything until it is cleared.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import coincurve
import google_crc32c
import grpc
from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from google.cloud import kms_v1

SERVICE = "google.cloud.kms.v1.KeyManagementService"
_ALG = kms_v1.CryptoKeyVersion.CryptoKeyVersionAlgorithm
_STATE = kms_v1.CryptoKeyVersion.CryptoKeyVersionState


def _crc(data: bytes) -> int:
    return int(google_crc32c.value(data))


@dataclass
class EmulatedVersion:
    name: str
    algorithm: Any = _ALG.EC_SIGN_SECP256K1_SHA256
    enabled: bool = True
    secret: bytes = b""
    pem: str = ""


@dataclass
class EmulatedKey:
    name: str
    labels: dict[str, str] = field(default_factory=dict)
    algorithm: Any = _ALG.EC_SIGN_SECP256K1_SHA256
    versions: list[EmulatedVersion] = field(default_factory=list)


class GcpKmsEmulator:
    """Start with `await start()`, stop with `await stop()`; see the module docstring."""

    def __init__(self, project: str = "emulator-project", location: str = "global") -> None:
        self.project, self.location = project, location
        self.keys: dict[str, EmulatedKey] = {}
        self.client_id = "emulator-client"
        self.client_secret = secrets.token_urlsafe(16)
        self.refresh_token = secrets.token_urlsafe(16)
        self.tokens: set[str] = set()
        self.client_email = f"signer@{project}.iam.gserviceaccount.com"
        self._sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.sign_calls = 0
        self.corrupt_next = 0
        self.unavailable_next = 0
        self.down = False
        self.target = ""
        self.token_uri = ""
        self._server: grpc.aio.Server | None = None
        self._runner: web.AppRunner | None = None

    # -- keys -------------------------------------------------------------------------
    def key_ring(self, ring: str = "signers") -> str:
        return f"projects/{self.project}/locations/{self.location}/keyRings/{ring}"

    def create_key(
        self,
        name: str,
        *,
        ring: str = "signers",
        labels: dict[str, str] | None = None,
        algorithm: Any = _ALG.EC_SIGN_SECP256K1_SHA256,
    ) -> EmulatedVersion:
        """A new version of key `name` in `ring` (the key is created on first use)."""
        key_name = f"{self.key_ring(ring)}/cryptoKeys/{name}"
        key = self.keys.setdefault(key_name, EmulatedKey(key_name, dict(labels or {}), algorithm))
        version = EmulatedVersion(f"{key_name}/cryptoKeyVersions/{len(key.versions) + 1}")
        version.algorithm = key.algorithm
        if key.algorithm == _ALG.EC_SIGN_SECP256K1_SHA256:
            version.secret = secrets.token_bytes(32)
            point = coincurve.PrivateKey(version.secret).public_key.format(compressed=False)
            public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256K1(), point)
        else:
            public = ec.generate_private_key(ec.SECP256R1()).public_key()
        version.pem = public.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
        key.versions.append(version)
        return version

    def public_key(self, version: EmulatedVersion) -> bytes:
        return coincurve.PrivateKey(version.secret).public_key.format(compressed=False)

    def _version(self, name: str) -> EmulatedVersion | None:
        key = self.keys.get(name.rsplit("/cryptoKeyVersions/", 1)[0])
        return next((v for v in key.versions if v.name == name), None) if key else None

    def adc(self) -> dict[str, str]:
        """An "authorized_user" Application Default Credentials file's content for us."""
        return {
            "type": "authorized_user",
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "refresh_token": self.refresh_token,
            "token_uri": self.token_uri,
        }

    def service_account_adc(self) -> dict[str, str]:
        """A "service_account" ADC file's content: google-auth honours its token_uri, so a
        process given only GOOGLE_APPLICATION_CREDENTIALS fetches its tokens here (JWT grant)."""
        pem = self._sa_key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()
        return {
            "type": "service_account",
            "project_id": self.project,
            "private_key_id": "emulator-key",
            "private_key": pem,
            "client_email": self.client_email,
            "client_id": "1",
            "token_uri": self.token_uri,
        }

    @staticmethod
    def _unpad(part: str) -> bytes:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))

    def _valid_assertion(self, assertion: str) -> bool:
        """A JWT-bearer grant: RS256 by the service account's key, for our token_uri, fresh."""
        try:
            head, body, sig = assertion.split(".")
            header, claims = json.loads(self._unpad(head)), json.loads(self._unpad(body))
            if header.get("alg") != "RS256":
                return False
            self._sa_key.public_key().verify(
                self._unpad(sig), f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256()
            )
        except (ValueError, InvalidSignature):
            return False
        now = time.time()
        return bool(
            claims.get("iss") == self.client_email
            # google-auth addresses the assertion to Google's token endpoint whatever the
            # token_uri it posts it to.
            and claims.get("aud") in (self.token_uri, "https://oauth2.googleapis.com/token")
            and claims.get("iat", 0) - 300 <= now <= claims.get("exp", 0) + 300
        )

    # -- gRPC -------------------------------------------------------------------------
    async def _authorized(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        metadata = dict(context.invocation_metadata() or ())
        auth = metadata.get("authorization", "")
        scheme, _, token = str(auth).partition(" ")
        if scheme != "Bearer" or token not in self.tokens:
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "Request had invalid authentication credentials. Expected OAuth 2 access token",
            )
        if self.down or self.unavailable_next > 0:
            self.unavailable_next = max(0, self.unavailable_next - 1)
            await context.abort(grpc.StatusCode.UNAVAILABLE, "The service is currently unavailable")

    async def _enabled_version(
        self, name: str, context: grpc.aio.ServicerContext[Any, Any]
    ) -> EmulatedVersion:
        version = self._version(name)
        if version is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"{name} not found.")
        assert version is not None
        if not version.enabled:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"{name} is not enabled, current state is: DISABLED.",
            )
        return version

    async def get_public_key(
        self, request: kms_v1.GetPublicKeyRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> kms_v1.PublicKey:
        await self._authorized(context)
        version = await self._enabled_version(request.name, context)
        return kms_v1.PublicKey(
            pem=version.pem,
            pem_crc32c=_crc(version.pem.encode()),
            algorithm=version.algorithm,
            name=version.name,
            protection_level=kms_v1.ProtectionLevel.HSM,
        )

    async def asymmetric_sign(
        self, request: kms_v1.AsymmetricSignRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> kms_v1.AsymmetricSignResponse:
        await self._authorized(context)
        version = await self._enabled_version(request.name, context)
        digest = request.digest.sha256
        if version.algorithm != _ALG.EC_SIGN_SECP256K1_SHA256 or not version.secret:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Algorithm {_ALG(version.algorithm).name} is not supported by this request",
            )
        if len(digest) != 32 or request.digest.sha384 or request.digest.sha512:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "The provided digest must be SHA-256 (32 bytes) for EC_SIGN_SECP256K1_SHA256",
            )
        verified = "digest_crc32c" in request
        if verified and request.digest_crc32c != _crc(digest):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "The checksum in field digest_crc32c did not match the data in field digest.",
            )
        self.sign_calls += 1
        signature = coincurve.PrivateKey(version.secret).sign(digest, hasher=None)  # DER
        checksum = _crc(signature)
        if self.corrupt_next > 0:
            self.corrupt_next -= 1
            signature = signature[:-1] + bytes([signature[-1] ^ 1])
        return kms_v1.AsymmetricSignResponse(
            signature=signature,
            signature_crc32c=checksum,
            verified_digest_crc32c=verified,
            name=version.name,
            protection_level=kms_v1.ProtectionLevel.HSM,
        )

    async def list_crypto_keys(
        self, request: kms_v1.ListCryptoKeysRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> kms_v1.ListCryptoKeysResponse:
        await self._authorized(context)
        keys = [k for n, k in sorted(self.keys.items()) if n.startswith(request.parent + "/")]
        return kms_v1.ListCryptoKeysResponse(
            crypto_keys=[
                kms_v1.CryptoKey(
                    name=k.name,
                    labels=k.labels,
                    purpose=kms_v1.CryptoKey.CryptoKeyPurpose.ASYMMETRIC_SIGN,
                    version_template=kms_v1.CryptoKeyVersionTemplate(algorithm=k.algorithm),
                )
                for k in keys
            ],
            total_size=len(keys),
        )

    async def list_crypto_key_versions(
        self,
        request: kms_v1.ListCryptoKeyVersionsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> kms_v1.ListCryptoKeyVersionsResponse:
        await self._authorized(context)
        key = self.keys.get(request.parent)
        if key is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"{request.parent} not found.")
        assert key is not None
        wanted = request.filter.replace(" ", "")
        if wanted not in ("", "state=ENABLED"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "unsupported filter")
        versions = [v for v in key.versions if v.enabled or not wanted]
        return kms_v1.ListCryptoKeyVersionsResponse(
            crypto_key_versions=[
                kms_v1.CryptoKeyVersion(
                    name=v.name,
                    algorithm=v.algorithm,
                    state=_STATE.ENABLED if v.enabled else _STATE.DISABLED,
                )
                for v in versions
            ],
            total_size=len(versions),
        )

    def _handler(self) -> grpc.GenericRpcHandler:
        def unary(
            method: Callable[[Any, Any], Awaitable[Any]], request_type: Any, response_type: Any
        ) -> grpc.RpcMethodHandler:
            return grpc.unary_unary_rpc_method_handler(
                method,
                request_deserializer=request_type.deserialize,
                response_serializer=response_type.serialize,
            )

        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "GetPublicKey": unary(
                    self.get_public_key, kms_v1.GetPublicKeyRequest, kms_v1.PublicKey
                ),
                "AsymmetricSign": unary(
                    self.asymmetric_sign,
                    kms_v1.AsymmetricSignRequest,
                    kms_v1.AsymmetricSignResponse,
                ),
                "ListCryptoKeys": unary(
                    self.list_crypto_keys,
                    kms_v1.ListCryptoKeysRequest,
                    kms_v1.ListCryptoKeysResponse,
                ),
                "ListCryptoKeyVersions": unary(
                    self.list_crypto_key_versions,
                    kms_v1.ListCryptoKeyVersionsRequest,
                    kms_v1.ListCryptoKeyVersionsResponse,
                ),
            },
        )

    # -- OAuth ------------------------------------------------------------------------
    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("grant_type") == "urn:ietf:params:oauth:grant-type:jwt-bearer":
            if not self._valid_assertion(str(form.get("assertion", ""))):
                return web.json_response({"error": "invalid_grant"}, status=400)
        elif form.get("grant_type") != "refresh_token":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        elif (
            form.get("client_id") != self.client_id
            or form.get("client_secret") != self.client_secret
            or form.get("refresh_token") != self.refresh_token
        ):
            return web.json_response({"error": "invalid_grant"}, status=400)
        token = secrets.token_urlsafe(24)
        self.tokens.add(token)
        return web.json_response(
            {"access_token": token, "expires_in": 3600, "token_type": "Bearer",
             "issued_at": int(time.time())}
        )  # fmt: skip

    async def start(self) -> None:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((self._handler(),))
        port = server.add_secure_port(
            "127.0.0.1:0", grpc.local_server_credentials(grpc.LocalConnectionType.LOCAL_TCP)
        )
        await server.start()
        self._server = server
        self.target = f"127.0.0.1:{port}"
        app = web.Application()
        app.router.add_post("/token", self._token)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._runner = runner
        sockets = getattr(site._server, "sockets", None) or []
        self.token_uri = f"http://127.0.0.1:{sockets[0].getsockname()[1]}/token"

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(None)
            self._server = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def emulator_client(target: str, credentials: Any) -> Any:
    """The official async client, pointed at an emulator over gRPC local credentials."""
    from google.cloud.kms_v1.services.key_management_service.transports.grpc_asyncio import (
        KeyManagementServiceGrpcAsyncIOTransport,
    )

    transport = KeyManagementServiceGrpcAsyncIOTransport(
        host=target,
        credentials=credentials,
        ssl_channel_credentials=grpc.local_channel_credentials(grpc.LocalConnectionType.LOCAL_TCP),
    )
    return kms_v1.KeyManagementServiceAsyncClient(transport=transport)
