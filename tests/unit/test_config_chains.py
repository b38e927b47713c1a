"""The `chains:` list of the YAML config: what it accepts, and every refusal naming its entry."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from signer_proxy.config import ChainConfig, Settings, load_settings, require_serve_settings
from signer_proxy.errors import ConfigError

KEY = "0x71C7656EC7ab88b098defB751B7401B5f6d8976F"


def load(tmp_path: Path, document: object) -> Settings:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(document))
    return load_settings({}, environ={}, config_file=str(path))


def test_entries_become_chain_configs_with_their_own_settings(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        {
            "gas_margin": 1.1,
            "chains": [
                {"name": "mainnet", "upstream": "http://a", "chain_id": 1, "default": True},
                {"name": "base", "upstream": "http://b", "gas_margin": 1.5, "keys": [KEY]},
            ],
        },
    )
    mainnet, base = settings.chains
    assert mainnet == ChainConfig("mainnet", 1, True, (), (("upstream", "http://a"),))
    assert base.keys == (KEY.lower(),)
    assert settings.for_chain(mainnet).gas_margin == 1.1  # the process's
    assert settings.for_chain(base).gas_margin == 1.5  # its own
    assert settings.for_chain(base).upstream == "http://b"
    assert settings.for_chain(base).chains == ()


def test_without_chains_there_is_one_default_chain() -> None:
    (only,) = Settings(upstream="http://a").chain_list()
    assert (only.name, only.default, only.overrides) == ("default", True, ())


@pytest.mark.parametrize(
    ("document", "fragment"),
    [
        ({"chains": []}, "must be a list of chains"),
        ({"chains": ["mainnet"]}, "chains[0] must be a mapping"),
        ({"chains": [{"upstream": "http://a"}]}, "chains[0].name must be a name"),
        ({"chains": [{"name": "Main Net", "upstream": "http://a"}]}, "chains[0].name"),
        ({"chains": [{"name": "10", "upstream": "http://a"}]}, "not only digits"),
        ({"chains": [{"name": "a"}]}, "chains[a] needs an upstream"),
        ({"chains": [{"name": "a", "upstream": "http://a", "rpc": "x"}]}, "unknown key(s) rpc"),
        ({"chains": [{"name": "a", "upstream": "http://a", "chain_id": 0}]}, "positive integer"),
        ({"chains": [{"name": "a", "upstream": "http://a", "chain_id": "1"}]}, "positive"),
        ({"chains": [{"name": "a", "upstream": "http://a", "default": "yes"}]}, "true or false"),
        ({"chains": [{"name": "a", "upstream": "http://a", "keys": ["alice"]}]}, "0x addresses"),
        (
            {"chains": [{"name": "a", "upstream": "http://a", "gas_margin": 0.5}]},
            "--gas-margin must be at least 1.0",
        ),
        (
            {"chains": [{"name": "a", "upstream": "http://a", "blob_sidecar": "x"}]},
            "--blob-sidecar",
        ),
        (
            {"chains": [{"name": "a", "upstream": "http://a"}, {"name": "a", "upstream": "b"}]},
            "the name a is used twice",
        ),
        (
            {
                "chains": [
                    {"name": "a", "upstream": "http://a", "chain_id": 1},
                    {"name": "b", "upstream": "http://b", "chain_id": 1},
                ]
            },
            "a and b both have chain_id 1",
        ),
        (
            {
                "chains": [
                    {"name": "a", "upstream": "http://a", "default": True},
                    {"name": "b", "upstream": "http://b", "default": True},
                ]
            },
            "a and b are both marked default",
        ),
        (
            {"upstream": "http://x", "chains": [{"name": "a", "upstream": "http://a"}]},
            "remove the top-level upstream",
        ),
    ],
)
def test_refusals_name_the_entry(tmp_path: Path, document: object, fragment: str) -> None:
    with pytest.raises(ConfigError, match=None) as raised:
        load(tmp_path, document)
    assert fragment in str(raised.value)


def test_serve_checks_each_chains_upstream_url(tmp_path: Path) -> None:
    settings = load(
        tmp_path, {"kms_keys": ["alias/a"], "chains": [{"name": "a", "upstream": "ftp://a"}]}
    )
    with pytest.raises(ConfigError, match=r"chains\[a\].upstream must be an http"):
        require_serve_settings(settings)


def test_chains_has_no_flag_and_no_environment_variable() -> None:
    from signer_proxy.config import FIELDS

    assert "chains" not in FIELDS


def test_unquoted_addresses_and_hex_chain_ids_read_as_written(tmp_path: Path) -> None:
    """YAML 1.1 would read 0x… as a number; the config file keeps it text."""
    path = tmp_path / "c.yaml"
    path.write_text(
        "chains:\n"
        "  - name: base\n"
        "    upstream: http://b\n"
        "    chain_id: 0x2105\n"
        "    keys: [0x00C7656EC7ab88b098defB751B7401B5f6d8976F]\n"
    )
    (base,) = load_settings({}, environ={}, config_file=str(path)).chains
    assert base.chain_id == 8453
    assert base.keys == ("0x00c7656ec7ab88b098defb751b7401b5f6d8976f",)
