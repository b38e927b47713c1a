"""Credentials a node asks for: extra headers (values from the environment or a file) and
AWS SigV4 (Amazon Managed Blockchain Access), plus how a node URL may be printed.

Secrets never leave this module in text meant for people: `mask_url` hides userinfo and
query values, and `HeaderSpec`/`UpstreamAuth` reprs name only header names and sources.
Basic auth in the URL's userinfo is handled by the HTTP pool itself.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from signer_proxy.errors import ConfigError

MASK = "***"
_JSON = "application/json"


def mask_url(url: str) -> str:
    """The URL with userinfo replaced by *** and every query value by ***; the path stays
    (a provider key in the path is not recognisable: callers who print must accept that or
    use `redact_url`)."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    host = f"[{host}]" if ":" in host else host
    netloc = host + (f":{parts.port}" if parts.port else "")
    if parts.username is not None or parts.password is not None:
        netloc = f"{MASK}@{netloc}"
    query = parts.query
    if query:
        query = urlencode([(name, MASK) for name, _ in parse_qsl(query, keep_blank_values=True)])
        query = query.replace("%2A", "*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


@dataclass(frozen=True, slots=True)
class HeaderSpec:
    """One extra header: `Name: value`, `Name: env:VAR` or `Name: file:/path`."""

    name: str
    source: str  # "value", "env" or "file"
    ref: str = field(repr=False)  # the literal value (secret), the variable or the path

    @classmethod
    def parse(cls, text: str) -> HeaderSpec:
        name, sep, value = text.partition(":")
        name, value = name.strip(), value.strip()
        if not sep or not name or any(c in name for c in " \t\r\n"):
            raise ConfigError(
                "an upstream header must look like 'Name: value', 'Name: env:VAR' or "
                f"'Name: file:/path' (got one without a valid name: {name!r})"
            )
        if value.startswith("env:"):
            return cls(name, "env", value[4:])
        if value.startswith("file:"):
            return cls(name, "file", value[5:])
        return cls(name, "value", value)

    def resolve(self) -> str:
        """The header's value now; a ConfigError naming the header and its source (never the
        value) when it cannot be read."""
        if self.source == "env":
            value = os.environ.get(self.ref)
            if not value:
                raise ConfigError(
                    f"upstream header {self.name}: environment variable {self.ref} is not set"
                )
        elif self.source == "file":
            try:
                value = Path(self.ref).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(
                    f"upstream header {self.name}: cannot read {self.ref} ({type(exc).__name__})"
                ) from None
        else:
            value = self.ref
        if any(c in value for c in "\r\n"):
            raise ConfigError(f"upstream header {self.name}: the value contains a line break")
        return value


@dataclass(frozen=True, slots=True)
class SigV4:
    """AWS SigV4 for a node (`service` is managedblockchain for AMB Access)."""

    service: str
    region: str


class UpstreamAuth:
    """The headers one POST to a node carries: static extra headers resolved once (files
    re-read on `reload`) and, with SigV4, a fresh signature over each body."""

    def __init__(
        self,
        url: str,
        headers: tuple[HeaderSpec, ...] = (),
        sigv4: SigV4 | None = None,
        credentials: Any = None,
    ) -> None:
        self._url = url
        self._specs = headers
        self._sigv4 = sigv4
        self._credentials = credentials
        self._static: dict[str, str] = {}
        self.reload()
        if sigv4 is not None and self._credentials is None:
            import botocore.session

            self._credentials = botocore.session.get_session().get_credentials()
            if self._credentials is None:
                raise ConfigError(
                    f"the upstream {mask_url(url)} uses SigV4 but no AWS credentials were found "
                    "(the standard chain: environment, profile, container or instance role)"
                )

    def __repr__(self) -> str:
        names = ", ".join(spec.name for spec in self._specs)
        return f"UpstreamAuth({mask_url(self._url)}, headers=[{names}], sigv4={self._sigv4})"

    def reload(self) -> None:
        static = {"Content-Type": _JSON}
        for spec in self._specs:
            static[spec.name] = spec.resolve()
        self._static = static

    @property
    def secrets(self) -> tuple[str, ...]:
        """Values the log redactor should hide."""
        return tuple(v for k, v in self._static.items() if k != "Content-Type" and v)

    def headers(self, body: bytes) -> Mapping[str, str]:
        """The headers of one JSON POST of `body`."""
        if self._sigv4 is None:
            return self._static
        return self._signed("POST", self._url, body, dict(self._static))

    def upgrade_headers(self) -> dict[str, str]:
        """The headers of the WebSocket upgrade (a GET with no body) to this URL."""
        static = {k: v for k, v in self._static.items() if k != "Content-Type"}
        if self._sigv4 is None:
            return static
        # SigV4 covers host and path, not the scheme: sign the http(s) twin of ws(s)://.
        url = "http" + self._url[2:] if self._url.startswith("ws") else self._url
        return self._signed("GET", url, b"", static)

    def _signed(
        self, method: str, url: str, body: bytes, headers: dict[str, str]
    ) -> dict[str, str]:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        assert self._sigv4 is not None
        request = AWSRequest(method=method, url=url, data=body, headers=headers)
        SigV4Auth(self._credentials, self._sigv4.service, self._sigv4.region).add_auth(request)
        return dict(request.headers.items())


def upstream_auth(url: str, settings: Any) -> UpstreamAuth | None:
    """The credentials --upstream-header / --upstream-sigv4-region give the node at `url`;
    None when there are none (plain POSTs, the fast path)."""
    specs = tuple(HeaderSpec.parse(text) for text in settings.upstream_headers)
    region = settings.upstream_sigv4_region
    if not specs and not region:
        return None
    sigv4 = SigV4(settings.upstream_sigv4_service, region) if region else None
    return UpstreamAuth(url, specs, sigv4)
