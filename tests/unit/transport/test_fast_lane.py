"""transport.fast_lane: which request heads the lane answers itself, what it reads from them,
and the status lines it writes. Everything not ours must come back None (aiohttp's)."""

from __future__ import annotations

from typing import Any

import pytest
from yarl import URL

from signer_proxy.transport.fast_lane import Head, parse_head, status_line

BASE = "POST / HTTP/1.1\r\nHost: 127.0.0.1:8545\r\nContent-Length: 2\r\n"


def head(text: str) -> bytes:
    """A request head as the lane sees it: latin-1 bytes ending in CRLF CRLF."""
    return (text + "\r\n").encode("latin-1")


def with_headers(*lines: str, request_line: str = "POST / HTTP/1.1") -> bytes:
    return head("".join(f"{line}\r\n" for line in (request_line, *lines)))


# --- ours ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(
            head(BASE),
            {"query": "", "content_length": 2, "close": False, "host": "127.0.0.1:8545"},
            id="minimal",
        ),
        pytest.param(
            with_headers("Content-Length: 0"),
            {"content_length": 0, "host": None},
            id="empty-body-no-host",
        ),
        pytest.param(
            with_headers("content-LENGTH:   17  ", "HOST:\tlocalhost\t"),
            {"content_length": 17, "host": "localhost"},
            id="names-any-case-values-trimmed",
        ),
        pytest.param(
            with_headers("Content-Length: 007"),
            {"content_length": 7},
            id="leading-zeros",
        ),
        pytest.param(
            with_headers("Content-Length: 2", request_line="POST /?key=abc&x=1 HTTP/1.1"),
            {"query": "key=abc&x=1", "content_length": 2},
            id="query-kept",
        ),
        pytest.param(
            with_headers("Content-Length: 2", "Connection: close"),
            {"close": True},
            id="connection-close",
        ),
        pytest.param(
            with_headers("Content-Length: 2", "Connection: Keep-Alive, CLOSE"),
            {"close": True},
            id="connection-close-among-tokens",
        ),
        pytest.param(
            with_headers("Content-Length: 2", "Connection: keep-alive"),
            {"close": False},
            id="connection-keep-alive",
        ),
        pytest.param(
            with_headers("Content-Length: 2", "Connection: closed"),
            {"close": False},
            id="connection-token-not-close",
        ),
        pytest.param(
            with_headers("Content-Length: 2", "Accept: text/plain", "accept: application/json"),
            {"accept": "text/plain, application/json"},
            id="list-header-repeated-joined",
        ),
        pytest.param(
            with_headers("Content-Length: 2", "X-Empty:"),
            {"x-empty": ""},
            id="empty-value",
        ),
        pytest.param(
            with_headers("Content-Length: 2", "X-Note: caf\xe9"),
            {"x-note": "caf\xe9"},
            id="latin-1-value",
        ),
        pytest.param(
            with_headers("Content-Length: 2", *(f"X-{i}: {i}" for i in range(127))),
            {"content_length": 2, "x-126": "126"},
            id="128-headers",
        ),
        pytest.param(
            with_headers(
                "Content-Length: 2",
                "Authorization: Bearer spk_x",
                "Origin: https://app.example",
                "X-Request-Id: abc-1",
            ),
            {
                "authorization": "Bearer spk_x",
                "origin": "https://app.example",
                "x-request-id": "abc-1",
            },
            id="what-the-door-reads",
        ),
    ],
)
def test_parse_head_ours(raw: bytes, expected: dict[str, Any]) -> None:
    parsed = parse_head(raw)
    assert parsed is not None
    for name, value in expected.items():
        if name in ("query", "content_length", "close"):
            assert getattr(parsed, name) == value, name
        else:
            assert parsed.headers.get(name) == value, name


# --- aiohttp's, and why -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        # The request line: only POST / over HTTP/1.1.
        pytest.param(head(BASE.replace("POST", "GET", 1)), id="method-get"),
        pytest.param(head(BASE.replace("POST", "post", 1)), id="method-lower-case"),
        pytest.param(head(BASE.replace("POST", "OPTIONS", 1)), id="method-options"),
        pytest.param(head(BASE.replace("/", "/health", 1)), id="path-health"),
        pytest.param(head(BASE.replace("/", "//", 1)), id="path-double-slash"),
        pytest.param(head(BASE.replace("/", "/rpc?key=a", 1)), id="path-with-query"),
        pytest.param(head(BASE.replace("/", "http://127.0.0.1/", 1)), id="absolute-form"),
        pytest.param(head(BASE.replace("/", "*", 1)), id="asterisk-form"),
        pytest.param(head(BASE.replace("/", "/#frag", 1)), id="fragment"),
        pytest.param(head(BASE.replace("HTTP/1.1", "HTTP/1.0", 1)), id="http-1.0"),
        pytest.param(head(BASE.replace("HTTP/1.1", "HTTP/2.0", 1)), id="http-2.0"),
        pytest.param(head(BASE.replace("HTTP/1.1", "http/1.1", 1)), id="version-lower-case"),
        pytest.param(head(BASE.replace("POST /", "POST  /", 1)), id="two-spaces"),
        pytest.param(head(BASE.replace("POST / ", "POST\t/ ", 1)), id="tab-separator"),
        pytest.param(head(BASE.replace("POST / HTTP/1.1", "POST /", 1)), id="http-0.9-style"),
        pytest.param(head(BASE.replace("/", "/?a b", 1)), id="space-in-target"),
        pytest.param(head("garbage\r\n"), id="garbage-request-line"),
        # Framing the lane does not do, or semantics it leaves to aiohttp.
        pytest.param(head("POST / HTTP/1.1\r\nHost: a\r\n"), id="no-content-length"),
        pytest.param(head(BASE + "Transfer-Encoding: chunked\r\n"), id="transfer-encoding"),
        pytest.param(head(BASE + "transfer-encoding: identity\r\n"), id="transfer-encoding-any"),
        pytest.param(head(BASE + "Upgrade: websocket\r\n"), id="upgrade"),
        pytest.param(head(BASE + "Expect: 100-continue\r\n"), id="expect"),
        pytest.param(head(BASE + "Connection: Upgrade\r\n"), id="connection-upgrade"),
        pytest.param(head(BASE + "Connection: keep-alive, upgrade\r\n"), id="connection-upgrade-2"),
        # Duplicates of single-valued headers: which one counts is aiohttp's call.
        pytest.param(head(BASE + "Content-Length: 2\r\n"), id="duplicate-content-length-same"),
        pytest.param(head(BASE + "content-length: 3\r\n"), id="duplicate-content-length"),
        pytest.param(head(BASE + "Host: evil.example\r\n"), id="duplicate-host"),
        pytest.param(head(BASE + "Authorization: a\r\nAuthorization: b\r\n"), id="dup-auth"),
        pytest.param(head(BASE + "Origin: a\r\nOrigin: b\r\n"), id="duplicate-origin"),
        pytest.param(head(BASE + "X-Request-Id: a\r\nx-request-id: b\r\n"), id="duplicate-id"),
        pytest.param(head(BASE + "Connection: a\r\nConnection: b\r\n"), id="duplicate-connection"),
        # Content-Length that is not plain ASCII digits.
        pytest.param(head(BASE).replace(b": 2", ": \u0662".encode()), id="arabic-indic-utf-8"),
        pytest.param(head(BASE.replace(": 2", ": \xb2", 1)), id="superscript-two-latin-1"),
        pytest.param(head(BASE.replace(": 2", ": +2", 1)), id="plus-sign"),
        pytest.param(head(BASE.replace(": 2", ": -1", 1)), id="negative"),
        pytest.param(head(BASE.replace(": 2", ": 0x2", 1)), id="hex"),
        pytest.param(head(BASE.replace(": 2", ": 2, 2", 1)), id="list-of-lengths"),
        pytest.param(head(BASE.replace(": 2", ": 1 2", 1)), id="inner-space"),
        pytest.param(head(BASE.replace(": 2", ": 1_0", 1)), id="underscore"),
        pytest.param(head(BASE.replace(": 2", ":", 1)), id="empty"),
        # Lines a strict parser refuses and a lenient one reads some other way.
        pytest.param(head(BASE + "X-Foo : bar\r\n"), id="space-before-colon"),
        pytest.param(head(BASE + "X-Foo\t: bar\r\n"), id="tab-before-colon"),
        pytest.param(head(BASE.replace("Content-Length", " Content-Length", 1)), id="lead-sp"),
        pytest.param(head(BASE + "X-Foo: bar\r\n baz\r\n"), id="folded-space"),
        pytest.param(head(BASE + "X-Foo: bar\r\n\tbaz\r\n"), id="folded-tab"),
        pytest.param(head(BASE + "no colon here\r\n"), id="no-colon"),
        pytest.param(head(BASE + ": value\r\n"), id="empty-name"),
        # More header lines than aiohttp accepts (it answers 400).
        pytest.param(head(BASE + "".join(f"X-{i}: {i}\r\n" for i in range(127))), id="129"),
        # A bare LF or CR inside the head: another parser would see other header lines.
        pytest.param(head(BASE + "X-Foo: a\nContent-Length: 5\r\n"), id="bare-lf-in-value"),
        pytest.param(head(BASE + "X-Foo: a\rContent-Length: 5\r\n"), id="bare-cr-in-value"),
        pytest.param(head(BASE + "Origin: https://a\nSet-Cookie: x\r\n"), id="bare-lf-origin"),
        pytest.param(head(BASE.replace("HTTP/1.1\r\n", "HTTP/1.1\n", 1)), id="bare-lf-line"),
        pytest.param(head(BASE + "X-Foo: a\x00b\r\n"), id="nul-in-value"),
        pytest.param(head(BASE + "X-Foo: a\x1bb\r\n"), id="escape-in-value"),
        pytest.param(head(BASE + "X-Foo: a\x7fb\r\n"), id="del-in-value"),
        # Header names are RFC 9110 tokens.
        pytest.param(head(BASE + "X Foo: bar\r\n"), id="space-in-name"),
        pytest.param(head(BASE + "X(Foo): bar\r\n"), id="paren-in-name"),
        pytest.param(head(BASE + "X-F\xf6o: bar\r\n"), id="non-ascii-name"),
    ],
)
def test_parse_head_hands_the_rest_to_aiohttp(raw: bytes) -> None:
    assert parse_head(raw) is None


# --- Head.query_key: what aiohttp's request.query.get("key") would give -----------------------


@pytest.mark.parametrize(
    ("query", "key"),
    [
        pytest.param("", None, id="no-query"),
        pytest.param("key=spk_abc", "spk_abc", id="key"),
        pytest.param("a=1&key=spk_abc&b=2", "spk_abc", id="among-others"),
        pytest.param("key=first&key=second", "first", id="first-wins"),
        pytest.param("key=%73pk%5Fabc", "spk_abc", id="percent-decoded"),
        pytest.param("key=a+b", "a b", id="plus-is-space"),
        pytest.param("Key=spk_abc", None, id="name-is-case-sensitive"),
        pytest.param("keys=spk_abc", None, id="other-name"),
        pytest.param("key", "", id="bare-name"),
        pytest.param("key=", "", id="empty-value"),
        pytest.param("key=&key=spk_abc", "", id="empty-first-wins"),
        pytest.param("x=1;key=spk_abc", None, id="semicolon-is-no-separator"),
    ],
)
def test_head_query_key_as_aiohttp_reads_it(query: str, key: str | None) -> None:
    assert Head({}, query, 0, False).query_key == key
    # The same answer as aiohttp's request.query (yarl), which the handed-off requests use.
    assert URL(f"/?{query}" if query else "/").query.get("key") == key


# --- status lines -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "line"),
    [
        pytest.param(200, b"HTTP/1.1 200 OK\r\n", id="200"),
        pytest.param(204, b"HTTP/1.1 204 No Content\r\n", id="204"),
        pytest.param(401, b"HTTP/1.1 401 Unauthorized\r\n", id="401"),
        pytest.param(403, b"HTTP/1.1 403 Forbidden\r\n", id="403"),
        pytest.param(413, b"HTTP/1.1 413 Request Entity Too Large\r\n", id="413"),
        pytest.param(429, b"HTTP/1.1 429 Too Many Requests\r\n", id="429"),
        pytest.param(500, b"HTTP/1.1 500 Internal Server Error\r\n", id="500"),
        pytest.param(503, b"HTTP/1.1 503 Service Unavailable\r\n", id="503"),
        pytest.param(599, b"HTTP/1.1 599 Unknown\r\n", id="unknown-code"),
    ],
)
def test_status_line(status: int, line: bytes) -> None:
    assert status_line(status) == line
    assert status_line(status) is status_line(status)  # built once, then reused
