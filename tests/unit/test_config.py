"""config: flags > environment > file > defaults, type checks naming the source, validation."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from signer_proxy.config import (
    ENV_PREFIX,
    FIELDS,
    Settings,
    env_name,
    flag_name,
    load_settings,
    render_reference,
    require_serve_settings,
    validate,
)
from signer_proxy.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "serve.yaml"
    path.write_text(text)
    return str(path)


def test_load_settings_defaults_with_nothing_given() -> None:
    assert load_settings({}, environ={}) == Settings()


def test_load_settings_precedence_flags_over_env_over_file(tmp_path: Path) -> None:
    config = _write(tmp_path, "listen: 127.0.0.1:1111\nupstream: http://file\nmax_batch: 10\n")
    environ = {
        "SIGNER_PROXY_LISTEN": "127.0.0.1:2222",
        "SIGNER_PROXY_UPSTREAM": "http://env",
    }

    settings = load_settings({"listen": "127.0.0.1:3333"}, environ, config)

    assert settings.listen == "127.0.0.1:3333"  # flag beats env and file
    assert settings.upstream == "http://env"  # env beats file
    assert settings.max_batch == 10  # file beats default
    assert settings.gas_margin == 1.2  # default


def test_load_settings_unset_flags_do_not_override(tmp_path: Path) -> None:
    config = _write(tmp_path, "log_level: debug\n")

    settings = load_settings({"log_level": None}, {"SIGNER_PROXY_UPSTREAM": "http://env"}, config)

    assert settings.log_level == "debug"
    assert settings.upstream == "http://env"


def test_load_settings_config_file_from_the_environment(tmp_path: Path) -> None:
    config = _write(tmp_path, "max_batch: 7\n")

    settings = load_settings({}, {"SIGNER_PROXY_CONFIG": config})

    assert settings.max_batch == 7


def test_load_settings_kms_keys_from_comma_separated_env() -> None:
    environ = {"SIGNER_PROXY_KMS_KEYS": " alias/a, arn:aws:kms:us-east-1:1:key/b ,,alias/c "}

    settings = load_settings({}, environ)

    assert settings.kms_keys == ("alias/a", "arn:aws:kms:us-east-1:1:key/b", "alias/c")


def test_load_settings_kms_keys_from_a_yaml_list(tmp_path: Path) -> None:
    config = _write(
        tmp_path, "kms_keys:\n  - alias/treasury\n  - 1234abcd-12ab-34cd-56ef-1234567890ab\n"
    )

    settings = load_settings({}, {}, config)

    assert settings.kms_keys == ("alias/treasury", "1234abcd-12ab-34cd-56ef-1234567890ab")


def test_load_settings_kms_keys_flags_replace_env(tmp_path: Path) -> None:
    settings = load_settings(
        {"kms_keys": ["alias/flag"]}, {"SIGNER_PROXY_KMS_KEYS": "alias/env1,alias/env2"}
    )

    assert settings.kms_keys == ("alias/flag",)


def test_load_settings_numbers_from_env_strings() -> None:
    environ = {
        "SIGNER_PROXY_GAS_MARGIN": "1.5",
        "SIGNER_PROXY_MAX_BATCH": "25",
        "SIGNER_PROXY_KMS_TIMEOUT": "3",
    }

    settings = load_settings({}, environ)

    assert (settings.gas_margin, settings.max_batch, settings.kms_timeout) == (1.5, 25, 3.0)
    assert isinstance(settings.kms_timeout, float)


def test_load_settings_unknown_yaml_key_lists_the_known_names(tmp_path: Path) -> None:
    config = _write(tmp_path, "upstream: http://x\nkms_key: alias/a\nregion: us-east-1\n")

    with pytest.raises(ConfigError) as info:
        load_settings({}, {}, config)

    message = str(info.value)
    assert config in message
    assert "kms_key, region" in message
    for name in FIELDS:
        assert name in message


@pytest.mark.parametrize(
    ("yaml_text", "fragment"),
    [
        pytest.param("max_batch: lots\n", "max_batch", id="int-word"),
        pytest.param("max_batch: true\n", "max_batch", id="int-bool"),
        pytest.param("max_batch: 1.5\n", "max_batch", id="int-fraction"),
        pytest.param("max_batch: [1, 2]\n", "max_batch", id="int-list"),
        pytest.param("gas_margin: high\n", "gas_margin", id="float-word"),
        pytest.param("gas_margin:\n", "gas_margin", id="float-null"),
        pytest.param("gas_margin: {a: 1}\n", "gas_margin", id="float-mapping"),
        pytest.param("upstream: 8545\n", "upstream", id="str-number"),
        pytest.param("listen: [a]\n", "listen", id="str-list"),
        pytest.param("kms_keys: [alias/a, 5]\n", "kms_keys", id="list-with-number"),
        pytest.param("kms_keys: {a: 1}\n", "kms_keys", id="list-mapping"),
    ],
)
def test_load_settings_bad_file_type_names_file_and_key(
    tmp_path: Path, yaml_text: str, fragment: str
) -> None:
    config = _write(tmp_path, yaml_text)

    with pytest.raises(ConfigError) as info:
        load_settings({}, {}, config)

    assert f"{config}: {fragment}" in str(info.value)
    assert "invalid value" in str(info.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        pytest.param("SIGNER_PROXY_MAX_BATCH", "ten", id="int"),
        pytest.param("SIGNER_PROXY_MAX_BATCH", "1.5", id="int-fraction"),
        pytest.param("SIGNER_PROXY_GAS_MARGIN", "1,2", id="float-comma"),
        pytest.param("SIGNER_PROXY_UPSTREAM_TIMEOUT", "", id="float-empty"),
    ],
)
def test_load_settings_bad_env_type_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({}, {name: value})

    assert str(info.value).startswith(f"{name} has an invalid value {value!r}")


def test_load_settings_bad_flag_type_names_the_flag() -> None:
    with pytest.raises(ConfigError, match=r"^--max-batch has an invalid value"):
        load_settings({"max_batch": "many"}, {})


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        pytest.param("- a\n- b\n", "must be a mapping", id="list"),
        pytest.param("upstream: [unclosed\n", "not valid YAML", id="bad-yaml"),
    ],
)
def test_load_settings_bad_file_shape(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        load_settings({}, {}, _write(tmp_path, text))


def test_load_settings_missing_file_names_it(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.yaml")

    with pytest.raises(ConfigError, match=r"nope\.yaml cannot be read"):
        load_settings({}, {}, missing)


def test_load_settings_empty_file_is_all_defaults(tmp_path: Path) -> None:
    assert load_settings({}, {}, _write(tmp_path, "")) == Settings()


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        pytest.param(
            {"listen": "localhost"}, "--listen 'localhost' must be HOST:PORT", id="no-port"
        ),
        pytest.param({"listen": "127.0.0.1:http"}, "must be HOST:PORT", id="port-name"),
        pytest.param({"listen": "127.0.0.1:70000"}, "must be HOST:PORT", id="port-too-big"),
        pytest.param({"gas_margin": 0.9}, "--gas-margin must be at least 1.0", id="margin"),
        pytest.param({"upstream_timeout": 0.0}, "--upstream-timeout must be positive", id="t1"),
        pytest.param(
            {"upstream_connect_timeout": -1.0},
            "--upstream-connect-timeout must be positive",
            id="connect-timeout",
        ),
        pytest.param({"kms_timeout": 0.0}, "--kms-timeout must be positive", id="kms-timeout"),
        pytest.param(
            {"tracking_confirmations": -1},
            "--tracking-confirmations must be 0 or more",
            id="confirmations",
        ),
        pytest.param({"max_body_bytes": 1023}, "--max-body-bytes must be at least 1024", id="b"),
        pytest.param({"max_batch": 0}, "--max-batch at least 1", id="batch"),
        pytest.param({"log_level": "verbose"}, "--log-level must be debug", id="log-level"),
        pytest.param({"log_format": "xml"}, "--log-format must be text or json", id="log-format"),
        pytest.param({"metrics_listen": "9090"}, "--metrics-listen '9090' must be", id="m-port"),
        pytest.param({"metrics_listen": "h:99999"}, "--metrics-listen 'h:99999'", id="m-range"),
        pytest.param({"shutdown_timeout": -1.0}, "--shutdown-timeout must be zero", id="drain"),
        pytest.param(
            {"upstream_ws": "http://127.0.0.1:8546"}, "--upstream-ws must be a ws://", id="ws-http"
        ),
        pytest.param({"upstream_ws": "ws://"}, "--upstream-ws must be", id="ws-no-host"),
        pytest.param({"upstream_ws": "ws://h:99999"}, "--upstream-ws must be", id="ws-port"),
        pytest.param({"ws_max_connections": 0}, "--ws-max-connections must be", id="ws-max"),
        pytest.param({"ws_send_queue_bytes": 10}, "--ws-send-queue-bytes at least", id="ws-q"),
        pytest.param(
            {"ws_messages_per_second": -1.0}, "--ws-messages-per-second must be zero", id="ws-rate"
        ),
        pytest.param({"ws_idle_timeout": -1.0}, "--ws-idle-timeout must be zero", id="ws-idle"),
        pytest.param({"ws_send_timeout": 0.0}, "--ws-send-timeout must be positive", id="ws-send"),
    ],
)
def test_validate_errors_name_the_setting(changes: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate(dataclasses.replace(Settings(), **changes))

    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("listen", "host", "port"),
    [
        pytest.param("0.0.0.0:8545", "0.0.0.0", 8545, id="any"),
        pytest.param(":9000", "127.0.0.1", 9000, id="port-only"),
        pytest.param("[::1]:0", "::1", 0, id="ipv6-free-port"),
    ],
)
def test_listen_host_port(listen: str, host: str, port: int) -> None:
    settings = dataclasses.replace(Settings(), listen=listen)

    validate(settings)

    assert settings.listen_host_port() == (host, port)


@pytest.mark.parametrize(
    "upstream_ws",
    ["", "ws://127.0.0.1:8546", "wss://node.example/ws/v3/KEY", "ws://[::1]:8546/"],
)
def test_validate_accepts_websocket_node_urls(upstream_ws: str) -> None:
    validate(dataclasses.replace(Settings(), upstream_ws=upstream_ws))


def test_validate_accepts_uppercase_log_level() -> None:
    validate(dataclasses.replace(Settings(), log_level="DEBUG"))


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        pytest.param(
            {"kms_keys": ("alias/a",)},
            "no upstream node: set --upstream (or SIGNER_PROXY_UPSTREAM)",
            id="no-upstream",
        ),
        pytest.param(
            {"upstream": "ws://127.0.0.1:8546", "kms_keys": ("alias/a",)},
            "--upstream must be an http:// or https:// URL",
            id="websocket-upstream",
        ),
        pytest.param(
            {"upstream": "http://127.0.0.1:8546"},
            "give at least one --kms-key (or SIGNER_PROXY_KMS_KEYS)",
            id="no-keys",
        ),
    ],
)
def test_require_serve_settings_says_what_to_set(changes: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        require_serve_settings(dataclasses.replace(Settings(), **changes))

    assert fragment in str(info.value)


def test_require_serve_settings_accepts_a_complete_setup() -> None:
    require_serve_settings(
        dataclasses.replace(Settings(), upstream="https://node", kms_keys=("alias/a",))
    )


def test_names_derived_from_fields() -> None:
    assert env_name("kms_keys") == ENV_PREFIX + "KMS_KEYS"
    assert flag_name("kms_keys") == "--kms-key"
    assert flag_name("upstream_connect_timeout") == "--upstream-connect-timeout"


def test_every_field_is_documented() -> None:
    for name, f in FIELDS.items():
        assert f.metadata["help"].strip(), name


def test_docs_config_md_is_up_to_date() -> None:
    path = ROOT / "docs" / "config.md"
    current = path.read_text() if path.exists() else ""

    assert current == render_reference(), (
        "docs/config.md is stale: run `python -m signer_proxy.config > docs/config.md`"
    )


def test_render_reference_lists_every_setting_three_ways() -> None:
    reference = render_reference()

    for name in FIELDS:
        assert f"| `{name}` | `{flag_name(name)}` | `{env_name(name)}` |" in reference


def test_render_reference_says_chains_is_yaml_only_and_links_its_page() -> None:
    from signer_proxy.config import CHAIN_SETTINGS

    reference = render_reference()
    section = reference.split("## Several chains", 1)[1].split("```", 1)[0]
    assert "`chains:` is a key of the YAML file only" in section
    assert "[chains.md](chains.md)" in section
    assert all(f"`{name}`" in section for name in CHAIN_SETTINGS if name != "upstream")
    assert (ROOT / "docs" / "chains.md").is_file()


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("ftp://node:8545", id="wrong-scheme"),
        pytest.param("http://node:port", id="bad-port"),
        pytest.param("http://", id="no-host"),
    ],
)
def test_require_serve_settings_rejects_bad_upstream_urls(url: str) -> None:
    settings = Settings(upstream=url, kms_keys=("alias/x",))
    with pytest.raises(ConfigError, match="--upstream must be an http"):
        require_serve_settings(settings)


def test_upstream_urls_one_or_several_comma_separated() -> None:
    from signer_proxy.config import upstream_urls

    assert upstream_urls("http://a:1") == ("http://a:1",)
    assert upstream_urls(" http://a:1 , https://b/x ,") == ("http://a:1", "https://b/x")


def test_require_serve_settings_checks_every_upstream_url() -> None:
    settings = Settings(upstream="http://127.0.0.1:1,ws://127.0.0.1:2", kms_keys=("alias/x",))
    with pytest.raises(ConfigError, match="--upstream must be an http"):
        require_serve_settings(settings)
    require_serve_settings(dataclasses.replace(settings, upstream="http://a:1, https://b"))


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        pytest.param({"nonce_store": "memcached://x"}, "--nonce-store must be", id="store-scheme"),
        pytest.param({"request_deadline": 0.0}, "--request-deadline must", id="deadline"),
        pytest.param({"kms_max_in_flight": 0}, "--kms-max-in-flight must", id="in-flight"),
        pytest.param({"nonce_lease_seconds": -1.0}, "--nonce-lease-seconds", id="lease"),
    ],
)
def test_validate_replica_settings(overrides: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        validate(Settings(**overrides))


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/0", "rediss://:pw@cache.internal:6380"])
def test_validate_accepts_redis_nonce_stores(url: str) -> None:
    validate(Settings(nonce_store=url))


# --- who may sign what: the loopback rule, TLS pairs -------------------------------------

_SERVABLE = {"upstream": "http://127.0.0.1:8546", "kms_keys": ("alias/a",)}
_TLS = {"tls_cert_file": "/c", "tls_key_file": "/k"}


@pytest.mark.parametrize(
    ("changes", "refused"),
    [
        pytest.param({"listen": "127.0.0.1:8545"}, False, id="loopback-v4"),
        pytest.param({"listen": "127.0.0.5:8545"}, False, id="loopback-net"),
        pytest.param({"listen": "[::1]:8545"}, False, id="loopback-v6"),
        pytest.param({"listen": "localhost:8545"}, False, id="localhost"),
        pytest.param({"listen": "0.0.0.0:8545"}, True, id="everywhere"),
        pytest.param({"listen": "[::]:8545"}, True, id="everywhere-v6"),
        pytest.param({"listen": "10.0.0.5:8545"}, True, id="private-address"),
        pytest.param({"listen": "proxy.internal:8545"}, True, id="hostname"),
        pytest.param({"listen": "0.0.0.0:8545", "insecure_no_auth": True}, False, id="insecure"),
        pytest.param({"listen": "0.0.0.0:8545", "api_keys_file": "/k"}, False, id="api-keys"),
        pytest.param(
            {"listen": "0.0.0.0:8545", "tls_client_ca_file": "/ca", **_TLS}, False, id="mtls"
        ),
        pytest.param(
            {"listen": "0.0.0.0:8545", "policy_file": "/p", "audit_log": "-"},
            True,
            id="policy-is-not-authentication",
        ),
    ],
)
def test_serve_refuses_a_non_loopback_listen_without_authentication(
    changes: dict[str, Any], refused: bool
) -> None:
    settings = dataclasses.replace(Settings(), **_SERVABLE, **changes)
    if refused:
        with pytest.raises(ConfigError) as info:
            require_serve_settings(settings)
        assert "no authentication is configured" in str(info.value)
        assert "--insecure-no-auth" in str(info.value)
        assert "--api-keys-file" in str(info.value)
    else:
        require_serve_settings(settings)


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        pytest.param({"tls_cert_file": "/c"}, "go together", id="cert-without-key"),
        pytest.param({"tls_key_file": "/k"}, "go together", id="key-without-cert"),
        pytest.param({"tls_client_ca_file": "/ca"}, "needs HTTPS", id="mtls-without-tls"),
        pytest.param({"audit_log_backups": -1}, "must not be negative", id="backups"),
        pytest.param({"tls_reload_interval": -1.0}, "--tls-reload-interval", id="reload"),
    ],
)
def test_validate_auth_and_tls_settings(changes: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError, match=None) as info:
        validate(dataclasses.replace(Settings(), **changes))
    assert fragment in str(info.value)


def test_bool_flag_alone_means_true_and_lists_repeat() -> None:
    from signer_proxy.cli.main import build_parser

    args = build_parser().parse_args(
        ["serve", "--insecure-no-auth", "--cors-origin", "https://a.example",
         "--cors-origin", "https://b.example", "--allow-pre-eip155", "false"]
    )  # fmt: skip
    settings = load_settings(
        {name: getattr(args, name) for name in FIELDS}, environ={}, config_file=None
    )
    assert settings.insecure_no_auth is True
    assert settings.allow_pre_eip155 is False
    assert settings.cors_origins == ("https://a.example", "https://b.example")
    assert Settings().allowed_hosts == ("localhost", "127.0.0.1", "::1")
