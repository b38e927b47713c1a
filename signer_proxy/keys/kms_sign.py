"""A lean KMS `Sign` call: the KMS JSON protocol over a keep-alive pool, signed with SigV4 and
the standard AWS credential chain.

Why: through aioboto3 one `Sign` costs ~2 ms of client CPU (botocore's request machinery:
parameter validation, serializers, event hooks, retry handlers, response parsing), so one
core could not keep AWS's 1,000 ECC signatures/s busy. This path does only what `Sign` needs:
one JSON body, SigV4 (keys/sigv4.py: what botocore's `SigV4Auth` adds, byte for byte), one
POST, one JSON answer. The credentials come from aiobotocore's provider chain (environment,
profile, web identity / IRSA, container and instance roles), refreshed by it before they
expire, exactly as the aioboto3 client's are. Everything else (DescribeKey, GetPublicKey, key
management) stays on aioboto3.

`LeanKmsClient.sign(...)` takes the same arguments as the aioboto3 client's and raises the same
`botocore.exceptions.ClientError` for KMS errors, so `KmsSigner` works with either. Unlike
it, the lean client ends each call within its timeout and the request's deadline by itself
(`times_itself`), so `KmsCalls` opens no timeout scope around it.
"""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import orjson
from botocore.auth import _host_from_url
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

from signer_proxy.deadline import bounded
from signer_proxy.jsonrpc import loads
from signer_proxy.keys.sigv4 import PostSigner
from signer_proxy.upstream.http_pool import HttpError, HttpPool

_HEADERS = {
    "Content-Type": "application/x-amz-json-1.1",
    "X-Amz-Target": "TrentService.Sign",
}


def kms_endpoint(region: str, endpoint_url: str = "") -> str:
    """The KMS endpoint the aioboto3 client would use: an override, else the Region's."""
    return endpoint_url or f"https://kms.{region}.amazonaws.com/"


class LeanKmsClient:
    """KMS `Sign` only, for one Region and endpoint; `aclose` when done.

    `timeout` bounds each call (the KMS attempt timeout), and so does what is left of the
    request's deadline: a call, a credential refresh included, never outlives either."""

    times_itself = True  # KmsCalls reads this: no asyncio.timeout around our calls

    def __init__(self, credentials: Any, region: str, endpoint_url: str, timeout: float) -> None:
        self._credentials = credentials  # aiobotocore credentials (refreshable or static)
        self._region = region
        self._url = kms_endpoint(region, endpoint_url).rstrip("/") + "/"
        self._pool = HttpPool(self._url, connect_timeout=timeout)
        self._timeout = timeout
        # The Host that is signed, worked out once by botocore; the pool sends the same Host.
        self._headers = {**_HEADERS, "Host": _host_from_url(self._url)}
        self._signer = PostSigner(self._url, self._headers, region, "kms")

    @classmethod
    async def from_default_chain(
        cls, region: str, endpoint_url: str, request_seconds: float
    ) -> LeanKmsClient:
        """Credentials from the standard AWS chain, as aioboto3 would find them."""
        from aiobotocore.session import get_session

        credentials = await get_session().get_credentials()
        if credentials is None:
            raise NoCredentialsError()
        return cls(credentials, region, endpoint_url, request_seconds)

    async def aclose(self) -> None:
        await self._pool.close()

    async def _frozen(self, seconds: float) -> Any:
        credentials = self._credentials
        getter = getattr(credentials, "get_frozen_credentials", None)
        if getter is None:
            return credentials
        refresh_needed = getattr(credentials, "refresh_needed", None)
        if refresh_needed is not None and refresh_needed():
            # aiobotocore refreshes now, over the network (STS, the instance or container
            # role): bounded like the exchange. Otherwise the answer is in memory.
            async with asyncio.timeout(seconds):
                return await _resolved(getter())
        return await _resolved(getter())

    def signed_headers(self, body: bytes, frozen: Any) -> dict[str, str]:
        """SigV4 headers for a Sign request with `body`, as botocore's `SigV4Auth` makes
        them (keys/sigv4.py; the tests compare the two)."""
        return self._signer.headers(
            body, frozen.access_key, frozen.secret_key, frozen.token, time.time()
        )

    async def sign(
        self, *, KeyId: str, Message: bytes, MessageType: str, SigningAlgorithm: str
    ) -> dict[str, Any]:
        """KMS Sign; {"KeyId", "Signature" (bytes), "SigningAlgorithm"} or ClientError."""
        body = orjson.dumps(
            {
                "KeyId": KeyId,
                "Message": base64.b64encode(Message).decode(),
                "MessageType": MessageType,
                "SigningAlgorithm": SigningAlgorithm,
            }
        )
        seconds = bounded(self._timeout)
        ends = time.monotonic() + seconds
        headers = self.signed_headers(body, await self._frozen(seconds))
        try:
            response = await self._pool.post(body, max(0.0, ends - time.monotonic()), headers)
        except HttpError as exc:
            raise EndpointConnectionError(endpoint_url=self._url, error=exc) from exc
        try:
            answer = loads(response.body) if response.body else {}
        except ValueError:
            answer = {}
        if response.status != 200:
            code = str(answer.get("__type", "")).rsplit("#", 1)[-1] or f"HTTP{response.status}"
            message = answer.get("message") or answer.get("Message") or ""
            raise ClientError(
                {
                    "Error": {"Code": code, "Message": str(message)},
                    "ResponseMetadata": {"HTTPStatusCode": response.status},
                },
                "Sign",
            )
        return {
            "KeyId": answer.get("KeyId"),
            "Signature": base64.b64decode(answer.get("Signature", "")),
            "SigningAlgorithm": answer.get("SigningAlgorithm"),
        }


async def _resolved(value: Any) -> Any:
    return await value if hasattr(value, "__await__") else value
