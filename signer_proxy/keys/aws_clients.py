"""The process's KMS clients: one per (Region, endpoint, IAM role), created on first use.

Keys of other accounts are reached by assuming a role: its credentials come from STS with
the process's own credentials (the standard AWS chain) and are refreshed before they expire.
Clients live until the process stops, so a reload never closes a client a signature in
flight still uses.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Hashable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from signer_proxy.errors import ConfigError
from signer_proxy.keys.aws_kms import KmsCalls

if TYPE_CHECKING:
    from signer_proxy.config import Settings
    from signer_proxy.keys.backends import C

ROLE_SESSION_NAME = "signer-proxy"


@dataclass(frozen=True, slots=True)
class KmsLocation:
    """Where a key is reached: Region, endpoint ("" = AWS's) and role to assume ("" = none)."""

    region: str
    endpoint_url: str = ""
    role_arn: str = ""


def client_config(settings: Settings) -> Any:
    """botocore's Config for every KMS client: timeouts, one attempt per call, a wide pool."""
    from botocore.config import Config

    return Config(
        connect_timeout=settings.kms_timeout,
        read_timeout=settings.kms_timeout,
        # One attempt per call: KmsCalls retries, with backoff inside the request deadline.
        retries={"total_max_attempts": 1, "mode": "standard"},
        max_pool_connections=128,
    )


def default_region(settings: Settings) -> str:
    """--aws-region, else the AWS chain's Region; ConfigError when there is none."""
    import aioboto3

    region = settings.aws_region or aioboto3.Session().region_name
    if not region:
        raise ConfigError("no AWS Region: set --aws-region (or AWS_REGION)")
    return str(region)


def location_of(
    settings: Settings, region: str = "", endpoint_url: str = "", role_arn: str = ""
) -> KmsLocation:
    """Where a key with these options lives. A key naming its own Region uses that Region's
    AWS endpoint unless it names one: --aws-endpoint-url is the default Region's."""
    home = settings.aws_region or default_region(settings)
    key_region = region or home
    if not endpoint_url and key_region == home:
        endpoint_url = settings.aws_endpoint_url
    return KmsLocation(key_region, endpoint_url, role_arn)


class _AssumedRole:
    """A botocore credential provider handing out one assumed role's refreshing credentials."""

    METHOD = "assume-role"

    def __init__(self, credentials: Any) -> None:
        self._credentials = credentials

    async def load(self) -> Any:
        return self._credentials


async def role_credentials(role_arn: str, region: str, sts_endpoint_url: str) -> Any:
    """Refreshing credentials of `role_arn`, assumed with the process's own (the AWS chain)."""
    from aiobotocore.credentials import (
        AioAssumeRoleCredentialFetcher,
        AioDeferredRefreshableCredentials,
    )
    from aiobotocore.session import AioSession

    base = AioSession()
    source = await base.get_credentials()
    if source is None:
        raise ConfigError(
            f"no AWS credentials to assume {role_arn} with: configure the standard AWS chain"
        )
    fetcher = AioAssumeRoleCredentialFetcher(
        client_creator=functools.partial(
            base.create_client, region_name=region, endpoint_url=sts_endpoint_url or None
        ),
        source_credentials=source,
        role_arn=role_arn,
        extra_args={"RoleSessionName": ROLE_SESSION_NAME},
    )
    return AioDeferredRefreshableCredentials(
        refresh_using=fetcher.fetch_credentials, method="assume-role"
    )


def session_with(credentials: Any) -> Any:
    """An aioboto3 Session that signs with `credentials` (an assumed role's)."""
    import aioboto3
    from aiobotocore.credentials import AioCredentialResolver
    from aiobotocore.session import AioSession

    session = AioSession()
    session.register_component(
        "credential_provider", AioCredentialResolver([_AssumedRole(credentials)])
    )
    return aioboto3.Session(botocore_session=session)


async def role_session(role_arn: str, region: str, sts_endpoint_url: str) -> Any:
    """An aioboto3 Session whose credentials are `role_arn` assumed with the process's own."""
    return session_with(await role_credentials(role_arn, region, sts_endpoint_url))


class KmsClients:
    """KMS clients by location, opened on first use and closed together (`async with`), and
    the process's KmsCalls (the cap on KMS requests in flight, retries) every call goes
    through. With --kms-sign-client lean, Sign goes through a LeanKmsClient per location
    (same credentials); everything else through aioboto3."""

    def __init__(self, settings: Settings, calls: KmsCalls | None = None) -> None:
        self._settings = settings
        self.calls = calls or KmsCalls(
            settings.kms_max_in_flight,
            settings.kms_timeout,
            settings.kms_backoff_base,
            settings.kms_backoff_max,
        )
        self._config = client_config(settings)
        self._stack = AsyncExitStack()
        self._clients: dict[KmsLocation, Any] = {}
        self._signing: dict[KmsLocation, Any] = {}
        self._roles: dict[tuple[str, str], Any] = {}
        self._shared: dict[Hashable, Any] = {}
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> KmsClients:
        await self._stack.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        self._clients.clear()
        self._signing.clear()
        self._shared.clear()
        await self._stack.__aexit__(*exc_info)

    def shared(self, key: Hashable, make: Callable[[], C]) -> C:
        """keys/backends.LoadContext: one object per `key` (the other backends' clients), made
        on first use, kept as long as these clients and closed with them (its `aclose`)."""
        found: C | None = self._shared.get(key)
        if found is None:
            found = self._shared[key] = make()
            self._stack.push_async_callback(found.aclose)
        return found

    def location(self, region: str = "", endpoint_url: str = "", role_arn: str = "") -> KmsLocation:
        return location_of(self._settings, region, endpoint_url, role_arn)

    async def _role(self, location: KmsLocation) -> Any:
        """The assumed role's credentials for `location`, one set per role and Region."""
        key = (location.role_arn, location.region)
        if key not in self._roles:
            self._roles[key] = await role_credentials(
                location.role_arn, location.region, self._settings.aws_sts_endpoint_url
            )
        return self._roles[key]

    async def get(self, location: KmsLocation) -> Any:
        """The aioboto3 client for `location`, created (its role assumed) on first use."""
        client = self._clients.get(location)
        if client is not None:
            return client
        async with self._lock:
            client = self._clients.get(location)
            if client is None:
                if location.role_arn:
                    session = session_with(await self._role(location))
                else:
                    import aioboto3

                    session = aioboto3.Session()
                client = await self._stack.enter_async_context(
                    session.client(
                        "kms",
                        region_name=location.region,
                        endpoint_url=location.endpoint_url or None,
                        config=self._config,
                    )
                )
                self._clients[location] = client
        return client

    async def signing_client(self, location: KmsLocation) -> Any:
        """What signs for keys at `location`: a LeanKmsClient (--kms-sign-client lean) or the
        aioboto3 client; both take `sign(KeyId=…, …)` and raise botocore's ClientError."""
        if self._settings.kms_sign_client != "lean":
            return await self.get(location)
        client = self._signing.get(location)
        if client is not None:
            return client
        from aiobotocore.session import get_session

        from signer_proxy.keys.kms_sign import LeanKmsClient

        async with self._lock:
            client = self._signing.get(location)
            if client is None:
                if location.role_arn:
                    credentials = await self._role(location)
                else:
                    credentials = await get_session().get_credentials()
                if credentials is None:
                    raise ConfigError("no AWS credentials: configure the standard AWS chain")
                client = LeanKmsClient(
                    credentials,
                    location.region,
                    location.endpoint_url,
                    self._settings.kms_timeout,
                )
                self._stack.push_async_callback(client.aclose)
                self._signing[location] = client
        return client
