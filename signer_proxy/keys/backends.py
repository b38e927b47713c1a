"""Key backends told apart by the scheme of their source string (`--key SOURCE`).

AWS KMS (`--kms-key`, discovery) and V3 keystores (`--keystore`) have settings of their own.
Every other backend is one entry of BACKENDS: the scheme its source strings start with, the
name its keys carry in reports and metrics (`source`), and the module whose
`parse_source(text, settings)` turns one source string into a BackendSource. Adding a
backend is that module plus one line here; loading, reload, `keys list|verify`, the
duplicate-address check, metrics and /ready then treat its keys like any other.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from signer_proxy.errors import ConfigError, KeyLoadFailed

if TYPE_CHECKING:
    from signer_proxy.config import Settings
    from signer_proxy.keys.signer import Signer


@dataclass(frozen=True, slots=True)
class LoadedKey:
    """One key a BackendSource found: a signer, or why there is none.

    `required` keys refuse startup when they fail (a key named explicitly); a key found by
    listing a token or vault is reported instead, as KMS discovery's are."""

    ref: str  # as configured, or as found: never a secret
    key: str = ""  # the backend's name of the key (the signer's key_name)
    location: str = ""  # token, vault, project: the REGION column of `keys list`
    signer: Signer | None = None
    failure: KeyLoadFailed | None = None
    required: bool = True


class BackendSource(Protocol):
    """One parsed source string of a backend."""

    @property
    def label(self) -> str:
        """The source as operators wrote it, secrets left out (logs, reports)."""
        ...

    async def load(self, previous: Mapping[str, Signer]) -> list[LoadedKey]:
        """Every key of the source. `previous` holds the signers of the last load by ref, to
        reuse. Raises KeyLoadFailed only when the source as a whole cannot be read (a token
        that cannot be listed); a key's own failure is a LoadedKey with `failure`."""
        ...


@dataclass(frozen=True, slots=True)
class Backend:
    scheme: str  # what its source strings start with, e.g. "pkcs11:"
    source: str  # KeyStatus.source and the metrics label, e.g. "pkcs11"
    title: str  # for people: "PKCS#11"
    module: str  # defines parse_source(text: str, settings: Settings | None) -> BackendSource

    def parse(self, text: str, settings: Settings | None) -> BackendSource:
        parse = importlib.import_module(self.module).parse_source
        source: BackendSource = parse(text, settings)
        return source


BACKENDS: tuple[Backend, ...] = (
    Backend("pkcs11:", "pkcs11", "PKCS#11", "signer_proxy.keys.pkcs11_keys"),
)


def backend_for(text: str) -> Backend:
    """The backend whose scheme starts `text`; ConfigError listing the schemes otherwise."""
    for backend in BACKENDS:
        if text.strip().startswith(backend.scheme):
            return backend
    schemes = ", ".join(f"{b.scheme}… ({b.title})" for b in BACKENDS)
    raise ConfigError(f"--key {text!r} names no known backend: a source starts with {schemes}")


def parse_key_source(text: str, settings: Settings | None = None) -> tuple[str, BackendSource]:
    """(the backend's source name, the parsed source) for one `--key`."""
    backend = backend_for(text)
    return backend.source, backend.parse(text.strip(), settings)
