"""Loading the keys the configuration names, at startup and on every reload (SIGHUP,
POST /admin/keys/reload), and the KMS client the CLI's one-shot commands use."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from signer_proxy.config import Settings
from signer_proxy.errors import ConfigError
from signer_proxy.keys.aws_clients import KmsClients, client_config, default_region
from signer_proxy.keys.loading import KeyLoad, load_keys
from signer_proxy.keys.sources import from_settings

log = logging.getLogger(__name__)

# What a reload re-reads from the configuration; any other change needs a restart.
RELOADABLE = (
    "kms_keys",
    "kms_discover_tags",
    "kms_discover_alias_prefixes",
    "key_sources",
    "azure_discover_vaults",
    "azure_discover_tags",
    "gcp_discover_key_rings",
    "gcp_discover_labels",
    "keystores",
    "keystore_password_file",
    "kms_load_concurrency",
)


def kms_client(settings: Settings) -> Any:
    """One aioboto3 KMS client for --aws-region (an async context manager)."""
    import aioboto3

    return aioboto3.Session().client(
        "kms",
        region_name=default_region(settings),
        endpoint_url=settings.aws_endpoint_url or None,
        config=client_config(settings),
    )


def key_loader(
    settings: Settings, clients: KmsClients, reload_settings: Callable[[], Settings] | None
) -> Callable[[KeyLoad | None, bool], Any]:
    """Loads the keys the configuration names now: at startup `settings`, on a reload what
    `reload_settings` reads (flags, environment and the file again); ConfigError if it fails."""

    async def load(previous: KeyLoad | None, strict: bool) -> KeyLoad:
        current = settings if previous is None or reload_settings is None else reload_settings()
        sources = from_settings(current)
        if previous is not None and sources.empty:  # an emptied file is likelier a mistake
            raise ConfigError(
                "the configuration names no keys now (no kms_keys, discovery or keystores); "
                "keeping the keys in service"
            )
        ignored = [
            name
            for name in dataclasses.asdict(current)
            if name not in RELOADABLE and getattr(current, name) != getattr(settings, name)
        ]
        if ignored:
            log.warning("reload: %s changed; only a restart applies that", ", ".join(ignored))
        return await load_keys(
            sources,
            clients,
            previous,
            concurrency=current.kms_load_concurrency,
            strict=strict,
        )

    return load
