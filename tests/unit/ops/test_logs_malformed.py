"""ops/logs.py: malformed requests are one counted debug line; offered subprotocols are
scrubbed from aiohttp's warning."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest
from aiohttp.http_exceptions import BadHttpMessage

from signer_proxy.ops.logs import MalformedRequestFilter, Scrubber, quiet_malformed_requests


@pytest.fixture
def server_log() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    logger = logging.getLogger("aiohttp.server")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    old_level = logger.level
    yield logger, stream
    logger.removeHandler(handler)
    logger.setLevel(old_level)
    for f in [f for f in logger.filters if isinstance(f, MalformedRequestFilter)]:
        logger.removeFilter(f)


def log_bad_request(logger: logging.Logger) -> None:
    try:
        raise BadHttpMessage("Invalid character in Content-Length:\n\n  b'abc'")
    except BadHttpMessage as exc:
        logger.error("Error handling request from %s", "127.0.0.1", exc_info=exc)


@pytest.mark.parametrize(("level", "shown"), [(logging.INFO, False), (logging.DEBUG, True)])
def test_a_malformed_request_is_one_counted_debug_line(
    server_log: tuple[logging.Logger, io.StringIO], level: int, shown: bool
) -> None:
    logger, stream = server_log
    logger.setLevel(level)
    counted: list[int] = []
    quiet_malformed_requests(lambda: counted.append(1))
    quiet_malformed_requests(lambda: counted.append(1))  # a second app replaces the filter
    log_bad_request(logger)
    assert counted == [1]
    text = stream.getvalue()
    assert "Traceback" not in text
    if shown:
        assert text.count("\n") == 1
        assert "refused with HTTP 400 (Invalid character in Content-Length:)" in text
    else:
        assert text == ""


def test_other_errors_keep_their_traceback(server_log: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = server_log
    quiet_malformed_requests(lambda: None)
    try:
        raise RuntimeError("a bug")
    except RuntimeError as exc:
        logger.error("Error handling request", exc_info=exc)
    assert "Traceback" in stream.getvalue()


DONT = "don\u2019t"  # aiohttp's apostrophe


@pytest.mark.parametrize(
    "offered",
    ["['spk_live-secret-0123456789']", "['a', 'spk_live-secret-0123456789]x']"],
)
def test_offered_subprotocols_are_scrubbed(offered: str) -> None:
    line = f"127.0.0.1: Client protocols {offered} {DONT} overlap server-known ones ()"
    scrubbed = Scrubber([])(line)
    assert "spk_live" not in scrubbed
    assert f"Client protocols [redacted] {DONT} overlap" in scrubbed
