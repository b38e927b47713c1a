"""logs: request ids, secrets found in URLs and the environment, scrubbing, JSON lines."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from signer_proxy.ops.logs import (
    REDACTED,
    REQUEST_ID,
    Scrubber,
    configure,
    request_id_from,
    secrets_in_environment,
    secrets_in_url,
)


@pytest.mark.parametrize(
    ("header", "kept"),
    [
        pytest.param("req-42", True, id="plain"),
        pytest.param("6f1c2e9a-6a3b-4c1d-9a1e-0b2f3c4d5e6f", True, id="uuid"),
        pytest.param("a" * 128, True, id="max-length"),
        pytest.param("a" * 129, False, id="too-long"),
        pytest.param("x\nINFO forged line", False, id="newline-injection"),
        pytest.param('x" , "level": "error', False, id="json-injection"),
        pytest.param("", False, id="empty"),
        pytest.param(None, False, id="absent"),
    ],
)
def test_request_id_from(header: str | None, kept: bool) -> None:
    got = request_id_from(header)
    if kept:
        assert got == header
    else:
        assert got != header
        assert len(got) == 32 and int(got, 16) >= 0


def test_request_ids_are_unique() -> None:
    assert len({request_id_from(None) for _ in range(1000)}) == 1000


@pytest.mark.parametrize(
    ("url", "secrets"),
    [
        pytest.param("http://127.0.0.1:8546", [], id="bare"),
        pytest.param("https://node.example:8545/", [], id="root-path"),
        pytest.param(
            "https://mainnet.example/v3/abcdef0123456789",
            ["/v3/abcdef0123456789", "abcdef0123456789"],
            id="key-in-path",
        ),
        pytest.param(
            "https://rpc.example/?apikey=s3cr3t-key&x=1",
            ["apikey=s3cr3t-key&x=1", "s3cr3t-key"],
            id="key-in-query",
        ),
        pytest.param(
            "https://alice:hunter2-long@rpc.example/",
            ["hunter2-long", "alice"],
            id="userinfo",
        ),
    ],
)
def test_secrets_in_url(url: str, secrets: list[str]) -> None:
    found = secrets_in_url(url)
    for secret in secrets:
        assert secret in found
    if secrets:
        assert url in found  # the whole URL too
    else:
        assert found == []  # scheme://host:port is what the logs are meant to show


def test_secrets_in_environment_reads_aws_credentials() -> None:
    environ = {"AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI", "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE"}
    assert set(secrets_in_environment(environ)) >= {"wJalrXUtnFEMI", "AKIAEXAMPLE"}


def test_scrubber_replaces_longest_first_and_ignores_short_strings() -> None:
    scrub = Scrubber(["/v3/abcdef0123456789", "abcdef0123456789", "/", "ab"])
    line = "POST https://h/v3/abcdef0123456789 failed; key abcdef0123456789 / ab"
    assert scrub(line) == f"POST https://h{REDACTED} failed; key {REDACTED} / ab"


@pytest.fixture
def captured() -> Iterator[tuple[io.StringIO, list[str]]]:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    stream = io.StringIO()
    secrets = ["apikey-0123456789", "AWSSECRETVALUE0123"]
    yield stream, secrets
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved[0]:
        root.addHandler(handler)
    root.setLevel(saved[1])


def test_json_lines_carry_request_id_fields_and_no_secrets(
    captured: tuple[io.StringIO, list[str]],
) -> None:
    stream, secrets = captured
    configure("info", "json", secrets, stream=stream)
    log = logging.getLogger("signer_proxy.test")
    token = REQUEST_ID.set("req-7")
    try:
        log.info("signing digest=%s", "0xabc", extra={"digest": "0xabc", "key": "arn:k"})
        try:
            raise RuntimeError("upstream https://h/?apikey-0123456789 down")
        except RuntimeError:
            log.exception("failed with AWSSECRETVALUE0123")
    finally:
        REQUEST_ID.reset(token)
    log.debug("below the level")
    log.warning("outside any request")

    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 3
    first, second, third = lines
    assert first["message"] == "signing digest=0xabc"
    assert first["level"] == "info" and first["logger"] == "signer_proxy.test"
    assert first["request_id"] == "req-7"
    assert first["digest"] == "0xabc" and first["key"] == "arn:k"
    assert "time" in first
    assert second["message"] == f"failed with {REDACTED}"
    assert "RuntimeError" in second["exception"]
    assert "request_id" not in third
    for secret in secrets:
        assert secret not in stream.getvalue()


def test_text_lines_carry_request_id_and_no_secrets(
    captured: tuple[io.StringIO, list[str]],
) -> None:
    stream, secrets = captured
    configure("debug", "text", secrets, stream=stream)
    token = REQUEST_ID.set("req-8")
    try:
        logging.getLogger("signer_proxy.test").debug("node at https://h/apikey-0123456789")
    finally:
        REQUEST_ID.reset(token)

    line = stream.getvalue()
    assert "DEBUG signer_proxy.test [req-8] node at https://h/" + REDACTED in line
    assert "apikey-0123456789" not in line


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        pytest.param(
            "header Authorization: Bearer spk_abcdefghijklmnopqrstuvwxyz0123456789 seen",
            "header Authorization: Bearer [redacted] seen",
            id="bearer",
        ),
        pytest.param(
            "GET /?key=spk_abcdefghijklmnopqrstuvwxyz0123&x=1 HTTP/1.1",
            "GET /?key=[redacted]&x=1 HTTP/1.1",
            id="query-key",
        ),
        pytest.param(
            '"url": "http://h/?a=1&key=secretsecret"',
            '"url": "http://h/?a=1&key=[redacted]"',
            id="query-key-json",
        ),
        pytest.param(
            "send an API key as Authorization: Bearer <key>",
            "send an API key as Authorization: Bearer <key>",
            id="advice-untouched",
        ),
        pytest.param("monkey=1 and key=value", "monkey=1 and key=value", id="not-a-query"),
    ],
)
def test_scrubber_removes_api_key_shapes(line: str, expected: str) -> None:
    assert Scrubber([])(line) == expected
