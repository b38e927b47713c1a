"""Logging: text for people or one JSON object per line, a request id on every line logged
while a request is handled, and known secrets scrubbed from every line before it is written.

The request id lives in a context variable that the transport sets per request; asyncio
copies it into the tasks a request spawns, so every line of one request carries it.
"""

from __future__ import annotations

import contextvars
import itertools
import json
import logging
import re
import sys
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, TextIO
from urllib.parse import parse_qsl, urlsplit

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
REQUEST_ID_HEADER = "X-Request-Id"
REDACTED = "[redacted]"

# An incoming id is kept only if it is short and plain: it goes into every log line.
_REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")
# Attributes every LogRecord has; anything else on a record came from `extra=` and is a field.
_RECORD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "request_id"}
# Environment variables whose values must never be written anywhere.
SECRET_ENV_VARS = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID")
_MIN_SECRET_LENGTH = 6  # shorter strings ("/", "1") would shred ordinary text
_BEARER_RE = re.compile(r"([Bb]earer\s+)(?!<|realm=)[^\s\"',;]+")
_QUERY_KEY_RE = re.compile(r"([?&]key=)[^&\s\"']+")
# aiohttp's warning when a WebSocket client offers subprotocols the server does not speak
# names them; browsers' clients put API keys there (new WebSocket(url, [key])).
_SUBPROTOCOLS_RE = re.compile(r"(Client protocols ).*?(?= don)")


def request_id_from(header: str | None) -> str:
    """The caller's X-Request-Id when it is a plain token, else a fresh random id."""
    if header and _REQUEST_ID_PATTERN.fullmatch(header):
        return header
    return f"{_PROCESS_TOKEN}{next(_REQUEST_COUNTER):08x}"


# Fresh ids are a random per-process token and a counter: unique across replicas and restarts
# (96 random bits), without a urandom syscall per request as uuid4 would make.
_PROCESS_TOKEN = uuid.uuid4().hex[:24]
_REQUEST_COUNTER = itertools.count(1)


def secrets_in_url(url: str) -> list[str]:
    """The parts of a node URL that may be credentials: userinfo, path, query and its values."""
    if not url:
        return []
    try:
        parts = urlsplit(url)
    except ValueError:
        return [url]
    found = [parts.password or "", parts.username or ""]
    if parts.path not in ("", "/"):
        found += [parts.path, *(s for s in parts.path.split("/") if s)]
    if parts.query:
        found += [parts.query, *(value for _, value in parse_qsl(parts.query))]
    if any(found):  # the bare scheme://host:port is what logs show: not a secret
        found.append(url)
    return [s for s in found if s]


def secrets_in_environment(environ: Mapping[str, str]) -> list[str]:
    return [environ.get(name, "") for name in SECRET_ENV_VARS]


class Scrubber:
    """Replaces every known secret string in a line with [redacted] (longest first)."""

    def __init__(self, secrets: Iterable[str]) -> None:
        unique = {s for s in secrets if len(s) >= _MIN_SECRET_LENGTH}
        self._secrets = sorted(unique, key=len, reverse=True)

    def __call__(self, line: str) -> str:
        for secret in self._secrets:
            if secret in line:
                line = line.replace(secret, REDACTED)
        # API keys are only known as hashes: scrub their shapes (a Bearer token, a ?key=).
        if "earer" in line or "key=" in line:
            line = _BEARER_RE.sub(r"\1" + REDACTED, line)
            line = _QUERY_KEY_RE.sub(r"\1" + REDACTED, line)
        if "Client protocols" in line:
            line = _SUBPROTOCOLS_RE.sub(r"\1" + REDACTED, line)
        return line


class MalformedRequestFilter(logging.Filter):
    """aiohttp logs each malformed HTTP request (which anyone can send) at error level with a
    traceback: a flood of them would bury the log. This makes each one line at debug, without
    the traceback, and counts it (`count`, the metric signer_proxy_malformed_requests_total)."""

    def __init__(self, count: Callable[[], None]) -> None:
        super().__init__()
        self._count = count

    def filter(self, record: logging.LogRecord) -> bool:
        from aiohttp.http_exceptions import HttpProcessingError

        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            self._count()
            reason = str(exc.message).strip().splitlines()[0][:120] if exc.message else ""
            original = record.getMessage()
            record.msg = "%s: refused with HTTP %s (%s)"
            record.args = (original, exc.code, reason)
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            record.exc_info = record.exc_text = None
            # The logger let it through at error: handlers see it only if debug is on.
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


def quiet_malformed_requests(count: Callable[[], None]) -> None:
    """Install MalformedRequestFilter on aiohttp's server logger (once: a new app replaces it)."""
    server = logging.getLogger("aiohttp.server")
    for old in [f for f in server.filters if isinstance(f, MalformedRequestFilter)]:
        server.removeFilter(old)
    server.addFilter(MalformedRequestFilter(count))


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


class TextFormatter(logging.Formatter):
    def __init__(self, scrub: Scrubber) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
        self._scrub = scrub

    def format(self, record: logging.LogRecord) -> str:
        return self._scrub(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id, extra fields."""

    def __init__(self, scrub: Scrubber) -> None:
        super().__init__()
        self._scrub = scrub

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", "-")
        if request_id != "-":
            entry["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return self._scrub(json.dumps(entry, default=str))


def configure(
    level: str, log_format: str, secrets: Iterable[str] = (), stream: TextIO | None = None
) -> None:
    """Route all logging to one handler on stderr in the chosen format, secrets scrubbed."""
    scrub = Scrubber(secrets)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter(scrub) if log_format == "json" else TextFormatter(scrub))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
    # botocore logs request details (including signed headers) at debug: keep it quiet.
    for name in ("botocore", "aiobotocore", "boto3", "urllib3"):
        logging.getLogger(name).setLevel(logging.WARNING)
