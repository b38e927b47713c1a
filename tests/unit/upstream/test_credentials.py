"""Upstream credentials: masking, header sources, and SigV4 checked the way AWS checks it
(a local front recomputes the signature with botocore over the request it received)."""

from __future__ import annotations

import datetime
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from botocore.credentials import Credentials

from signer_proxy.errors import ConfigError, UpstreamUnavailable
from signer_proxy.upstream.credentials import HeaderSpec, SigV4, UpstreamAuth, mask_url
from signer_proxy.upstream.http import HttpUpstream
from tests.conftest import start_app
from tests.integration.sigv4_front import verify_sigv4

KEY_ID = "AKIDEXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"


def test_mask_url_hides_userinfo_and_query_values() -> None:
    masked = mask_url("https://user:hunter2@node.example:8545/v3/path?apikey=s3cret&x=1")
    assert masked == "https://***@node.example:8545/v3/path?apikey=***&x=***"
    assert "hunter2" not in masked and "s3cret" not in masked
    assert mask_url("http://127.0.0.1:8545") == "http://127.0.0.1:8545"


def test_header_spec_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NODE_TOKEN", "tok-env")
    secret_file = tmp_path / "token"
    secret_file.write_text("tok-file\n")
    assert HeaderSpec.parse("X-Api-Key: plain").resolve() == "plain"
    assert HeaderSpec.parse("Authorization: env:NODE_TOKEN").resolve() == "tok-env"
    assert HeaderSpec.parse(f"X-Key: file:{secret_file}").resolve() == "tok-file"
    spec = HeaderSpec.parse("X-Api-Key: plain")
    assert "plain" not in repr(spec)


def test_header_spec_errors_name_the_source_not_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MISSING_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="MISSING_TOKEN is not set"):
        HeaderSpec.parse("Authorization: env:MISSING_TOKEN").resolve()
    with pytest.raises(ConfigError, match="cannot read /nonexistent/token"):
        HeaderSpec.parse("Authorization: file:/nonexistent/token").resolve()
    with pytest.raises(ConfigError, match="Name: value"):
        HeaderSpec.parse("no colon here")


def _verify_sigv4(
    request_headers: dict[str, str], url: str, body: bytes, method: str = "POST"
) -> bool:
    """What AWS does: rebuild the canonical request from what arrived and recompute."""
    return verify_sigv4(request_headers, url, body, method, KEY_ID, SECRET)


@pytest.fixture
async def sigv4_front() -> AsyncIterator[tuple[str, list[str]]]:
    seen: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        url = f"http://{request.host}{request.path_qs}"
        if not _verify_sigv4(dict(request.headers), url, body, request.method):
            seen.append("refused")
            return web.json_response(
                {
                    "message": "The request signature we calculated does "
                    "not match the signature you provided."
                },
                status=403,
            )
        seen.append("ok")
        call = orjson.loads(body)
        return web.json_response({"jsonrpc": "2.0", "id": call["id"], "result": "0x539"})

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    port, runner = await start_app(app)
    yield f"http://127.0.0.1:{port}/v1/eth?billingtoken=abc", seen
    await runner.cleanup()


async def test_sigv4_accepted_by_recomputing_front(sigv4_front: tuple[str, list[str]]) -> None:
    url, seen = sigv4_front
    auth = UpstreamAuth(
        url,
        sigv4=SigV4("managedblockchain", "us-east-1"),
        credentials=Credentials(KEY_ID, SECRET),
    )
    node = HttpUpstream(url, 5.0, auth=auth)
    try:
        assert await node.call("eth_chainId", []) == "0x539"
        assert await node.call("eth_chainId", []) == "0x539"  # a fresh signature per body
    finally:
        await node.aclose()
    assert seen == ["ok", "ok"]
    assert SECRET not in repr(auth) and "abc" not in repr(auth)


async def test_wrong_sigv4_secret_gives_a_clear_error_without_the_secret(
    sigv4_front: tuple[str, list[str]], caplog: pytest.LogCaptureFixture
) -> None:
    url, seen = sigv4_front
    wrong = "not-the-secret-0123456789"
    auth = UpstreamAuth(
        url,
        sigv4=SigV4("managedblockchain", "us-east-1"),
        credentials=Credentials(KEY_ID, wrong),
    )
    node = HttpUpstream(url, 5.0, auth=auth)
    caplog.set_level(logging.DEBUG)
    try:
        with pytest.raises(UpstreamUnavailable) as refused:
            await node.call("eth_chainId", [])
    finally:
        await node.aclose()
    message = str(refused.value)
    assert "refused the proxy's credentials" in message and "127.0.0.1" in message
    assert wrong not in message and "billingtoken" not in message
    assert wrong not in caplog.text
    assert seen == ["refused"]


async def test_header_front_sees_the_header(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NODE_KEY", "k-123")
    got: list[Any] = []

    async def handle(request: web.Request) -> web.Response:
        got.append(request.headers.get("X-Api-Key"))
        if request.headers.get("X-Api-Key") != "k-123":
            return web.json_response({"error": "bad key"}, status=401)
        call = orjson.loads(await request.read())
        return web.json_response({"jsonrpc": "2.0", "id": call["id"], "result": "0x1"})

    app = web.Application()
    app.router.add_post("/", handle)
    port, runner = await start_app(app)
    url = f"http://127.0.0.1:{port}/"
    try:
        good = HttpUpstream(
            url, 5.0, auth=UpstreamAuth(url, (HeaderSpec.parse("X-Api-Key: env:NODE_KEY"),))
        )
        bad = HttpUpstream(url, 5.0, auth=UpstreamAuth(url, (HeaderSpec.parse("X-Api-Key: nope"),)))
        try:
            assert await good.call("eth_chainId", []) == "0x1"
            with pytest.raises(UpstreamUnavailable, match="refused the proxy's credentials"):
                await bad.call("eth_chainId", [])
        finally:
            await good.aclose()
            await bad.aclose()
    finally:
        await runner.cleanup()
    assert got == ["k-123", "nope"]


@pytest.fixture
async def sigv4_ws_front() -> AsyncIterator[tuple[str, list[str]]]:
    """A node WebSocket that checks the upgrade's SigV4 as AWS does, then answers calls."""
    seen: list[str] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        url = f"http://{request.host}{request.path_qs}"
        if not _verify_sigv4(dict(request.headers), url, b"", request.method):
            seen.append("refused")
            return web.Response(status=403, text="signature mismatch")
        seen.append("ok")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            call = orjson.loads(message.data)
            await ws.send_bytes(
                orjson.dumps({"jsonrpc": "2.0", "id": call["id"], "result": "0x539"})
            )
        return ws

    app = web.Application()
    app.router.add_get("/ws", handle)
    port, runner = await start_app(app)
    yield f"ws://127.0.0.1:{port}/ws", seen
    await runner.cleanup()


@pytest.mark.parametrize("secret", [SECRET, "not-the-secret-0123456789"])
async def test_sigv4_on_the_websocket_upgrade(
    sigv4_ws_front: tuple[str, list[str]], secret: str
) -> None:
    import aiohttp

    from signer_proxy.upstream.ws import UpstreamSocket

    url, seen = sigv4_ws_front
    auth = UpstreamAuth(
        url,
        sigv4=SigV4("managedblockchain", "us-east-1"),
        credentials=Credentials(KEY_ID, secret),
    )

    async def deliver(_: bytes) -> None:
        return None

    async with aiohttp.ClientSession() as session:
        socket = UpstreamSocket(url, session, 5.0, deliver, lambda _: None, auth.upgrade_headers)
        try:
            if secret == SECRET:
                assert await socket.call("eth_chainId", []) == "0x539"
                assert seen == ["ok"]
            else:
                with pytest.raises(UpstreamUnavailable) as refused:
                    await socket.call("eth_chainId", [])
                assert "refused the proxy's credentials on the WebSocket upgrade" in str(
                    refused.value
                )
                assert secret not in str(refused.value)
                assert seen == ["refused"]
        finally:
            await socket.close()


def test_the_front_refuses_expired_and_tampered_signatures() -> None:
    url = "http://127.0.0.1:1/v1"
    auth = UpstreamAuth(
        url, sigv4=SigV4("managedblockchain", "us-east-1"), credentials=Credentials(KEY_ID, SECRET)
    )
    headers = dict(auth.headers(b"{}"))
    headers["Host"] = "127.0.0.1:1"
    assert _verify_sigv4(headers, url, b"{}")
    assert not _verify_sigv4(headers, url, b'{"x":1}')  # another body
    old = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=10)
    with_old_date = {**headers, "X-Amz-Date": old.strftime("%Y%m%dT%H%M%SZ")}
    assert not _verify_sigv4(with_old_date, url, b"{}")


def test_serve_refuses_an_unreadable_header_source_with_exit_2() -> None:
    import os
    import subprocess
    import sys

    environ = {k: v for k, v in os.environ.items() if k != "NODE_TOKEN_UNSET_HERE"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "signer_proxy",
            "serve",
            "--upstream",
            "http://127.0.0.1:9",
            "--listen",
            "127.0.0.1:0",
            "--upstream-header",
            "Authorization: env:NODE_TOKEN_UNSET_HERE",
            "--kms-key",
            "alias/never-loaded",  # the header is refused before any key is looked at
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=environ,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert (
        "upstream header Authorization: environment variable NODE_TOKEN_UNSET_HERE is not set"
        in done.stderr
    )


def test_header_values_are_scrubbed_from_the_log() -> None:
    import subprocess
    import sys

    script = "\n".join(
        [
            "import logging, os",
            "from signer_proxy.cli.main import configure_logging, header_secrets",
            "os.environ['NODE_TOKEN_X'] = 'Bearer sekret-abcdef123456'",
            "headers = ('Authorization: env:NODE_TOKEN_X', 'X-Key: literal-key-9876543210')",
            "configure_logging('info', 'text', '', '', header_secrets(headers))",
            "logging.getLogger('t').warning('Bearer sekret-abcdef123456 literal-key-9876543210')",
        ]
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert "sekret-abcdef123456" not in done.stderr and "literal-key-9876543210" not in done.stderr
    assert "[redacted]" in done.stderr
