"""The lean KMS Sign client against the emulator, side by side with aioboto3's client."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aioboto3
import aiohttp
import pytest
from aiohttp import web
from botocore.credentials import Credentials
from botocore.exceptions import ClientError, EndpointConnectionError

from signer_proxy.deadline import deadline_scope
from signer_proxy.dev.kms_emulator import KmsEmulator
from signer_proxy.eth.ecdsa import canonical_signature, keccak256, public_key_from_spki
from signer_proxy.keys.kms_sign import LeanKmsClient, kms_endpoint
from tests.conftest import REGION, KeyFactory, free_port

pytestmark = pytest.mark.integration

DIGEST = keccak256(b"lean and aioboto3 must agree")
SIGN = {"MessageType": "DIGEST", "SigningAlgorithm": "ECDSA_SHA_256"}


@pytest.fixture
async def boto(kms: KmsEmulator) -> AsyncIterator[Any]:
    async with aioboto3.Session().client("kms", region_name=REGION, endpoint_url=kms.url) as c:
        yield c


@pytest.fixture
async def lean(kms: KmsEmulator) -> AsyncIterator[LeanKmsClient]:
    client = await LeanKmsClient.from_default_chain(REGION, kms.url, 5)
    yield client
    await client.aclose()


async def outcome(client: Any, key_id: str) -> tuple[str, Any]:
    try:
        return "ok", await client.sign(KeyId=key_id, Message=DIGEST, **SIGN)
    except ClientError as exc:
        return "error", exc.response["Error"]["Code"]


async def test_lean_sign_gives_a_valid_signature_like_aioboto3(
    boto: Any, lean: LeanKmsClient, kms_client: Any, make_key: KeyFactory
) -> None:
    key = make_key()
    public_key = public_key_from_spki(kms_client.get_public_key(KeyId=key.arn)["PublicKey"])
    for client in (boto, lean):
        kind, answer = await outcome(client, key.arn)
        assert kind == "ok"
        assert answer["KeyId"] == key.arn
        assert answer["SigningAlgorithm"] == "ECDSA_SHA_256"
        signature = canonical_signature(answer["Signature"], DIGEST, public_key)  # verifies
        assert signature.s <= 2**255


@pytest.mark.parametrize("state", ["unknown", "disabled"])
async def test_lean_sign_raises_the_same_client_errors_as_aioboto3(
    boto: Any, lean: LeanKmsClient, kms_client: Any, make_key: KeyFactory, state: str
) -> None:
    key = make_key()
    key_id = "alias/does-not-exist" if state == "unknown" else key.arn
    if state == "disabled":
        kms_client.disable_key(KeyId=key.key_id)
    try:
        assert await outcome(lean, key_id) == await outcome(boto, key_id)
        assert (await outcome(lean, key_id))[0] == "error"
    finally:
        if state == "disabled":
            kms_client.enable_key(KeyId=key.key_id)


def sigv4_signature(headers: dict[str, str], body: bytes, secret: str) -> str:
    """The SigV4 signature of a POST / with `headers` and `body`, as AWS would compute it on
    receipt (from the AWS documentation, sharing no code with botocore)."""
    auth = headers["Authorization"]
    _key_id, day, region, service, _ = auth.split("Credential=")[1].split(",")[0].split("/")
    signed = auth.split("SignedHeaders=")[1].split(",")[0].split(";")
    lower = {name.lower(): value.strip() for name, value in headers.items()}
    header_lines = [f"{name}:{lower[name]}" for name in signed]
    canonical = "\n".join(
        ["POST", "/", "", *header_lines, "", ";".join(signed), hashlib.sha256(body).hexdigest()]
    )
    scope = f"{day}/{region}/{service}/aws4_request"
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    to_sign = "\n".join(["AWS4-HMAC-SHA256", lower["x-amz-date"], scope, digest])
    key = ("AWS4" + secret).encode()
    for part in (day, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


async def test_lean_sign_sends_what_aioboto3_sends(
    aiohttp_server: Any, kms: KmsEmulator, make_key: KeyFactory
) -> None:
    """Same target, content type, JSON fields and SigV4 credential scope and signed headers,
    and a signature that verifies for the request as it arrived (Host included)."""
    key = make_key()
    seen: list[tuple[dict[str, str], dict[str, Any]]] = []
    signatures: list[tuple[str, str]] = []

    async def record(request: web.Request) -> web.Response:
        body = await request.read()
        seen.append((dict(request.headers), json.loads(body)))
        received = request.headers["Authorization"].rsplit("Signature=", 1)[1]
        signatures.append((received, sigv4_signature(dict(request.headers), body, "testing")))
        async with (
            aiohttp.ClientSession() as session,
            session.post(kms.url, data=body, headers=dict(request.headers)) as answer,
        ):
            return web.Response(
                body=await answer.read(),
                status=answer.status,
                content_type="application/x-amz-json-1.1",
            )

    app = web.Application()
    app.router.add_post("/", record)
    server = await aiohttp_server(app, host="127.0.0.1")
    url = f"http://127.0.0.1:{server.port}"
    async with aioboto3.Session().client("kms", region_name=REGION, endpoint_url=url) as boto:
        await boto.sign(KeyId=key.arn, Message=DIGEST, **SIGN)
    lean = await LeanKmsClient.from_default_chain(REGION, url, 5)
    try:
        await lean.sign(KeyId=key.arn, Message=DIGEST, **SIGN)
    finally:
        await lean.aclose()

    (boto_headers, boto_body), (lean_headers, lean_body) = seen
    assert lean_body == boto_body
    for name in ("X-Amz-Target", "Content-Type", "Host"):
        assert lean_headers[name] == boto_headers[name]

    def scope(headers: dict[str, str]) -> tuple[str, str]:
        auth = headers["Authorization"]
        credential = auth.split("Credential=")[1].split(",")[0]
        signed = auth.split("SignedHeaders=")[1].split(",")[0]
        return credential.split("/", 2)[2], signed  # region/kms/aws4_request; header list

    assert scope(lean_headers)[0] == f"{REGION}/kms/aws4_request"
    assert set(scope(lean_headers)[1].split(";")) <= set(scope(boto_headers)[1].split(";"))
    assert "host" in scope(lean_headers)[1].split(";")
    (boto_sent, boto_expected), (lean_sent, lean_expected) = signatures
    assert boto_sent == boto_expected  # the independent check agrees with aioboto3 ...
    assert lean_sent == lean_expected  # ... and with the lean client


def test_lean_sign_includes_the_session_token_of_temporary_credentials() -> None:
    client = LeanKmsClient(Credentials("AKIDEXAMPLE", "secret", "session-token"), REGION, "", 5)
    headers = client.signed_headers(json.dumps({"KeyId": "k"}).encode(), client._credentials)
    assert headers["X-Amz-Security-Token"] == "session-token"
    assert "Credential=AKIDEXAMPLE/" in headers["Authorization"]
    assert "secret" not in json.dumps(headers)


def test_kms_endpoint_is_the_regions_unless_overridden() -> None:
    assert kms_endpoint("eu-west-1") == "https://kms.eu-west-1.amazonaws.com/"
    assert kms_endpoint("eu-west-1", "http://127.0.0.1:5000") == "http://127.0.0.1:5000"


async def test_lean_sign_unreachable_endpoint_is_a_botocore_connection_error() -> None:
    client = LeanKmsClient(Credentials("a", "b"), REGION, f"http://127.0.0.1:{free_port()}", 2)
    try:
        with pytest.raises(EndpointConnectionError):
            await client.sign(KeyId="k", Message=DIGEST, **SIGN)
    finally:
        await client.aclose()


@pytest.fixture
async def stalled() -> AsyncIterator[str]:
    """A KMS endpoint that accepts the request and never answers."""
    release = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(status=500)

    app = web.Application()
    app.router.add_post("/", hang)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}"
    release.set()
    await runner.cleanup()


async def test_lean_sign_ends_at_the_deadline_not_its_longer_timeout(stalled: str) -> None:
    # KmsCalls opens no timeout around the lean client (times_itself): it must stop by itself.
    client = LeanKmsClient(Credentials("a", "b"), REGION, stalled, 30)
    assert client.times_itself
    try:
        started = time.monotonic()
        with deadline_scope(0.3), pytest.raises(TimeoutError):
            await client.sign(KeyId="k", Message=DIGEST, **SIGN)
        assert time.monotonic() - started < 1.0
    finally:
        await client.aclose()


class SlowRefresh:
    """Refreshable credentials whose refresh is due and hangs (an STS that stopped answering)."""

    def __init__(self, due: bool) -> None:
        self.due = due
        self.fetched = 0

    def refresh_needed(self) -> bool:
        return self.due

    async def get_frozen_credentials(self) -> Credentials:
        self.fetched += 1
        if self.due:
            await asyncio.sleep(30)
        return Credentials("a", "b")


async def test_lean_sign_bounds_a_credential_refresh_by_the_deadline(kms: KmsEmulator) -> None:
    credentials = SlowRefresh(due=True)
    client = LeanKmsClient(credentials, REGION, kms.url, 30)
    try:
        started = time.monotonic()
        with deadline_scope(0.3), pytest.raises(TimeoutError):
            await client.sign(KeyId="k", Message=DIGEST, **SIGN)
        assert time.monotonic() - started < 1.0
        credentials.due = False  # in memory: asked without a timer, and the call goes on
        with pytest.raises(ClientError):  # the emulator knows no key "k"
            await client.sign(KeyId="k", Message=DIGEST, **SIGN)
        assert credentials.fetched == 2
    finally:
        await client.aclose()
