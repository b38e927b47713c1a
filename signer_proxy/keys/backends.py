"""Key backends told apart by the scheme of their source string (`--key SOURCE`).

AWS KMS (`--kms-key`, discovery) and V3 keystores (`--keystore`) have settings of their own.
Every other backend (PKCS#11, Azure Key Vault, Google Cloud KMS) is one entry of BACKENDS:
the scheme its source strings start with, the name its keys carry in reports and metrics
(`source`), and the module whose `parse_source(text, settings)` turns one source string into
a BackendSource. A backend that can list its keys names the setting that turns its
discovery on (`discovery`); its module's `discovery_sources(settings)` then gives the
sources to list. Adding a backend is that module plus one line here; loading, reload,
`keys list|verify`, `address`, the duplicate-address check, metrics and /ready then treat
its keys like any other.

A source's `load` is lent a LoadContext (keys/aws_clients.KmsClients is one): the process's
cap on key-service calls in flight (`calls`) and `shared`, which keeps one client object
(an Azure credential and its vault clients, a Cloud KMS channel) for every load of the
process and closes it with the others.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from signer_proxy.errors import ConfigError, KeyLoadFailed

if TYPE_CHECKING:
    from signer_proxy.config import Settings
    from signer_proxy.keys.signer import Signer


class Closeable(Protocol):
    async def aclose(self) -> None: ...


C = TypeVar("C", bound=Closeable)


class LoadContext(Protocol):
    """What a load lends its sources (keys/aws_clients.KmsClients)."""

    @property
    def calls(self) -> Any:
        """keys/aws_kms.KmsCalls: the cap on key-service requests in flight, the deadline."""
        ...

    def shared(self, key: Hashable, make: Callable[[], C]) -> C:
        """One object per `key`, made on first use, kept for later loads, closed at the end."""
        ...


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

    async def load(self, previous: Mapping[str, Signer], context: LoadContext) -> list[LoadedKey]:
        """Every key of the source. `previous` holds the signers of the last load by ref, to
        reuse; `context` lends clients. Raises KeyLoadFailed only when the source as a whole
        cannot be read (a token or vault that cannot be listed); a key's own failure is a
        LoadedKey with `failure`."""
        ...


@dataclass(frozen=True, slots=True)
class Backend:
    scheme: str  # what its source strings start with, e.g. "pkcs11:"
    source: str  # KeyStatus.source and the metrics label, e.g. "pkcs11"
    title: str  # for people: "PKCS#11"
    module: str  # defines parse_source(text: str, settings: Settings | None) -> BackendSource
    # The Settings field that turns discovery on; the module then defines
    # discovery_sources(settings: Settings) -> list[BackendSource].
    discovery: str = ""

    def parse(self, text: str, settings: Settings | None) -> BackendSource:
        parse = importlib.import_module(self.module).parse_source
        source: BackendSource = parse(text, settings)
        return source


BACKENDS: tuple[Backend, ...] = (
    Backend("pkcs11:", "pkcs11", "PKCS#11", "signer_proxy.keys.pkcs11_keys"),
    Backend(
        "azurekv://", "azure", "Azure Key Vault", "signer_proxy.keys.azure_kv",
        "azure_discover_vaults",
    ),
    Backend(
        "gcpkms://", "gcp", "Google Cloud KMS", "signer_proxy.keys.gcp_kms",
        "gcp_discover_key_rings",
    ),
)  # fmt: skip


def is_backend_source(text: str) -> bool:
    """Whether `text` starts with the scheme of one of BACKENDS."""
    return text.strip().startswith(tuple(backend.scheme for backend in BACKENDS))


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


def parse_filter(texts: tuple[str, ...], flag: str) -> tuple[tuple[str, str], ...]:
    """`KEY=VALUE` filters (tags, labels) of a discovery setting; ConfigError naming `flag`."""
    pairs: dict[str, str] = {}
    for text in texts:
        key, sep, value = text.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"{flag} {text!r} must be KEY=VALUE, e.g. env=prod")
        if key in pairs:
            raise ConfigError(
                f"{flag} gives {key} more than once: a key has one value each, so none could match"
            )
        pairs[key] = value.strip()
    return tuple(pairs.items())


def describe_filter(pairs: tuple[tuple[str, str], ...], what: str) -> str:
    return f"{what} " + ", ".join(f"{k}={v}" for k, v in pairs) if pairs else "every key"


def discovery_sources(settings: Settings) -> list[tuple[str, BackendSource]]:
    """(the backend's source name, a source to list) for each backend whose discovery
    setting is on."""
    found: list[tuple[str, BackendSource]] = []
    for backend in BACKENDS:
        if backend.discovery and getattr(settings, backend.discovery, None):
            make = importlib.import_module(backend.module).discovery_sources
            found += [(backend.source, source) for source in make(settings)]
    return found
