"""keys.sources: how keys are written in the settings, parsed and refused by name."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest

from signer_proxy.config import Settings, load_settings
from signer_proxy.errors import ConfigError
from signer_proxy.keys.sources import (
    DiscoverySpec,
    KeystoreSpec,
    KmsKeySpec,
    from_settings,
    key_sources,
    load_checked,
    parse_alias_prefix,
    parse_keystore,
    parse_kms_key,
    parse_tag,
)

ROLE = "arn:aws:iam::222233334444:role/signer"
ARN = "arn:aws:kms:eu-west-1:222233334444:key/1234abcd-12ab-34cd-56ef-1234567890ab"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("alias/treasury", KmsKeySpec("alias/treasury"), id="alias"),
        pytest.param(" 1234abcd ", KmsKeySpec("1234abcd"), id="id-trimmed"),
        pytest.param(ARN, KmsKeySpec(ARN), id="arn"),
        pytest.param(
            "alias/x?region=eu-west-1", KmsKeySpec("alias/x", region="eu-west-1"), id="region"
        ),
        pytest.param(
            f"alias/x?role_arn={ROLE}&region=ap-southeast-2",
            KmsKeySpec("alias/x", region="ap-southeast-2", role_arn=ROLE),
            id="role-and-region",
        ),
        pytest.param(
            "alias/x?endpoint_url=https://kms.example:4443/path",
            KmsKeySpec("alias/x", endpoint_url="https://kms.example:4443/path"),
            id="endpoint",
        ),
        pytest.param(
            "alias/x?role_arn=arn:aws-cn:iam::222233334444:role/team/signer",
            KmsKeySpec("alias/x", role_arn="arn:aws-cn:iam::222233334444:role/team/signer"),
            id="role-with-path-other-partition",
        ),
    ],
)
def test_parse_kms_key(text: str, expected: KmsKeySpec) -> None:
    assert parse_kms_key(text) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        pytest.param("?region=eu-west-1", "names nothing before its options", id="no-key"),
        pytest.param("alias/x?zone=a", "unknown option 'zone'; known: region", id="unknown"),
        pytest.param("alias/x?region=", "option region is empty", id="empty-value"),
        pytest.param("alias/x?region", "options must be NAME=VALUE", id="no-equals"),
        pytest.param("alias/x?region=eu-west-1&region=us-east-1", "gives region twice", id="twice"),
        pytest.param("alias/x?region=Europe", "not a Region name like us-east-1", id="bad-region"),
        pytest.param("alias/x?endpoint_url=kms.local", "must be an http(s):// URL", id="endpoint"),
        pytest.param(
            "alias/x?role_arn=arn:aws:iam::1:user/bob", "is not an IAM role ARN", id="user-arn"
        ),
    ],
)
def test_parse_kms_key_refuses_naming_the_key(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match="--kms-key") as info:
        parse_kms_key(text)
    assert fragment in str(info.value)


def test_kms_key_label_keeps_the_options_in_a_fixed_order() -> None:
    spec = parse_kms_key(f"alias/x?role_arn={ROLE}&region=eu-west-1")
    assert spec.label == f"alias/x?region=eu-west-1&role_arn={ROLE}"
    assert parse_kms_key(spec.label) == spec
    assert KmsKeySpec("alias/y").label == "alias/y"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("env=prod", ("env", "prod"), id="plain"),
        pytest.param(" team = payments ", ("team", "payments"), id="spaces-trimmed"),
        pytest.param("empty=", ("empty", ""), id="empty-value"),
        pytest.param("url=a=b", ("url", "a=b"), id="equals-in-value"),
        pytest.param("aws:cloudformation:stack-name=x", ("aws:cloudformation:stack-name", "x"),
                     id="colons"),
    ],
)  # fmt: skip
def test_parse_tag(text: str, expected: tuple[str, str]) -> None:
    assert parse_tag(text) == expected


@pytest.mark.parametrize("text", ["env", "=prod", " =x", "a{b}=c"])
def test_parse_tag_refuses(text: str) -> None:
    with pytest.raises(ConfigError, match="--kms-tag"):
        parse_tag(text)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        pytest.param("signer/", "must start with alias/", id="no-alias-prefix"),
        pytest.param("alias/", "must start with alias/ and name something", id="bare"),
        pytest.param("alias/aws/", "AWS managed keys", id="aws-managed"),
    ],
)
def test_parse_alias_prefix_refuses(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match="--kms-alias-prefix") as info:
        parse_alias_prefix(text)
    assert fragment in str(info.value)


def test_parse_alias_prefix_keeps_a_partial_name() -> None:
    assert parse_alias_prefix(" alias/signer/prod- ") == "alias/signer/prod-"


@pytest.mark.parametrize(
    ("text", "default", "expected"),
    [
        pytest.param("/k/a.json", "/pw", KeystoreSpec("/k/a.json", "/pw"), id="default-password"),
        pytest.param("/k?password_file=/own", "/pw", KeystoreSpec("/k", "/own"), id="own-password"),
        pytest.param("/k?password_file=/own", "", KeystoreSpec("/k", "/own"), id="own-only"),
    ],
)
def test_parse_keystore(text: str, default: str, expected: KeystoreSpec) -> None:
    assert parse_keystore(text, default) == expected


def test_parse_keystore_needs_a_password_file() -> None:
    with pytest.raises(ConfigError, match="--keystore /k has no password file") as info:
        parse_keystore("/k", "")
    assert "--keystore-password-file" in str(info.value)


def test_key_sources_refuses_a_tag_given_twice() -> None:
    with pytest.raises(ConfigError, match="--kms-tag gives env more than once"):
        key_sources((), ("env=prod", "env=staging"))


def test_from_settings_combines_every_source() -> None:
    settings = Settings(
        kms_keys=("alias/a", "alias/b?region=eu-west-1"),
        kms_discover_tags=("app=signer", "env=prod"),
        kms_discover_alias_prefixes=("alias/signer/",),
        keystores=("/k",),
        keystore_password_file="/pw",
    )
    sources = from_settings(settings)
    assert sources.kms == (KmsKeySpec("alias/a"), KmsKeySpec("alias/b", region="eu-west-1"))
    assert sources.discovery == DiscoverySpec(
        (("app", "signer"), ("env", "prod")), ("alias/signer/",)
    )
    assert (
        sources.discovery.describe() == "tag app=signer, tag env=prod, alias prefix alias/signer/"
    )
    assert sources.keystores == (KeystoreSpec("/k", "/pw"),)
    assert not sources.empty
    assert from_settings(Settings()).empty
    assert not DiscoverySpec().enabled


def test_load_checked_refuses_a_malformed_source_by_its_flag() -> None:
    with pytest.raises(ConfigError, match="--kms-tag 'env' must be KEY=VALUE"):
        load_checked({"kms_discover_tags": ["env"]}, environ={})
    with pytest.raises(ConfigError, match="unknown option 'regoin'"):
        load_checked({}, environ={"SIGNER_PROXY_KMS_KEYS": "alias/a?regoin=eu-west-1"})


def test_load_settings_reads_sources_from_the_environment() -> None:
    settings = load_settings(
        {},
        environ={
            "SIGNER_PROXY_KMS_DISCOVER_TAGS": "app=signer,env=prod",
            "SIGNER_PROXY_KMS_DISCOVER_ALIAS_PREFIXES": "alias/signer/",
        },
    )
    assert settings.kms_discover_tags == ("app=signer", "env=prod")
    assert settings.kms_discover_alias_prefixes == ("alias/signer/",)


@pytest.mark.parametrize("value", [0, 257])
def test_load_concurrency_is_bounded(value: int) -> None:
    with pytest.raises(ConfigError, match="--kms-load-concurrency"):
        load_settings({"kms_load_concurrency": value}, environ={})
    assert dataclasses.replace(Settings(), kms_load_concurrency=1).kms_load_concurrency == 1


def test_cloud_keys_in_kms_key_belong_to_their_backend_and_discovery_settings_parse() -> None:
    from signer_proxy.config import Settings
    from signer_proxy.keys.azure_kv import AzureDiscoverySource, AzureKeySource
    from signer_proxy.keys.gcp_kms import GcpDiscoverySource
    from signer_proxy.keys.sources import from_settings

    ring = "projects/my-project/locations/global/keyRings/signers"
    sources = from_settings(
        Settings(
            kms_keys=("alias/a", "azurekv://myvault/keys/k"),
            azure_discover_vaults=("myvault", "myhsm.managedhsm.azure.net"),
            azure_discover_tags=("env=prod", "team=a"),
            gcp_discover_key_rings=(ring,),
        )
    )
    assert [k.ref for k in sources.kms] == ["alias/a"]
    names = [name for name, _ in sources.others]
    assert names == ["azure", "azure", "azure", "gcp"]
    key, vault, hsm, gcp = (source for _, source in sources.others)
    assert (
        isinstance(key, AzureKeySource) and key.label == "azurekv://myvault.vault.azure.net/keys/k"
    )
    assert isinstance(vault, AzureDiscoverySource) and isinstance(hsm, AzureDiscoverySource)
    assert vault.label == "azurekv://myvault.vault.azure.net (tags env=prod, team=a)"
    assert hsm.vault_url == "https://myhsm.managedhsm.azure.net"
    assert isinstance(gcp, GcpDiscoverySource) and gcp.label == f"gcpkms://{ring} (every key)"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"azure_discover_vaults": ("v-1",), "azure_discover_tags": ("env",)},
         "--azure-tag 'env' must be KEY=VALUE"),
        ({"azure_discover_vaults": ("v-1",), "azure_discover_tags": ("a=1", "a=2")},
         "--azure-tag gives a more than once"),
        ({"azure_discover_vaults": ("no_such vault",)}, "is not a vault name"),
        ({"gcp_discover_key_rings": ("projects/p/keyRings/r",)}, "is not a key ring"),
        ({"gcp_discover_key_rings": ("projects/my-project/locations/global/keyRings/r",),
          "gcp_discover_labels": ("x",)}, "--gcp-label 'x' must be KEY=VALUE"),
        ({"key_sources": ("gcpkms://projects/my-project/locations/global/keyRings/r/"
                          "cryptoKeys/k/cryptoKeyVersions/1",),
          "gcp_kms_endpoint": "kms.example.com:443"}, "must be 127.0.0.1:PORT"),
    ],
)  # fmt: skip
def test_bad_cloud_discovery_settings_name_the_flag(fields: dict[str, Any], message: str) -> None:
    from signer_proxy.config import Settings
    from signer_proxy.keys.sources import from_settings

    with pytest.raises(ConfigError, match=re.escape(message)):
        from_settings(Settings(**fields))
