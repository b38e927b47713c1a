"""One frozen Settings, from flags > environment (SIGNER_PROXY_*) > YAML file > defaults.

Each field is documented once, here; the CLI flags, the environment variable names and
docs/config.md are all derived from these fields (`python -m signer_proxy.config` rewrites
docs/config.md, and a test fails when it is stale). AWS credentials are deliberately not
settings: they come from the standard AWS chain (environment, profile, IRSA, instance role).
"""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from signer_proxy.errors import ConfigError

ENV_PREFIX = "SIGNER_PROXY_"


def _setting(default: Any, help: str, *, flag: str | None = None, example: str = "") -> Any:
    return field(default=default, metadata={"help": help, "flag": flag, "example": example})


@dataclass(frozen=True)
class Settings:
    """Everything `signer-proxy serve` can be told."""

    listen: str = _setting(
        "127.0.0.1:8545",
        "Address and port to serve JSON-RPC on (HTTP POST /). Port 0 picks a free port.",
        example="127.0.0.1:8545",
    )
    upstream: str = _setting(
        "",
        "URL of the Ethereum JSON-RPC node every unsigned call is forwarded to. Required.",
        example="http://127.0.0.1:8546",
    )
    aws_region: str = _setting(
        "",
        "AWS Region of the KMS keys. Empty: the AWS chain's (AWS_REGION, the profile).",
        example="us-east-1",
    )
    aws_endpoint_url: str = _setting(
        "",
        "KMS endpoint override, e.g. a KMS emulator or a VPC endpoint. Empty: the AWS default.",
        example="http://127.0.0.1:5000",
    )
    kms_keys: tuple[str, ...] = _setting(
        (),
        "KMS keys to sign with: key id, key ARN, alias (alias/name) or alias ARN. Repeat the "
        "flag; comma-separated in the environment; a list in the file.",
        flag="--kms-key",
        example="alias/treasury",
    )
    gas_margin: float = _setting(
        1.2,
        "eth_estimateGas result is multiplied by this when the caller gives no gas (>= 1.0).",
    )
    upstream_timeout: float = _setting(
        30.0, "Seconds the node may take to answer one call before the caller gets an error."
    )
    upstream_connect_timeout: float = _setting(
        5.0, "Seconds to wait for a TCP/TLS connection to the node."
    )
    kms_timeout: float = _setting(10.0, "Seconds one KMS request may take (connect and read).")
    max_body_bytes: int = _setting(
        5 * 1024 * 1024,
        "Largest request body accepted; larger bodies get HTTP 413. Also the largest WebSocket "
        "message: a larger one closes the connection with 1009.",
    )
    max_batch: int = _setting(1000, "Most calls accepted in one JSON-RPC batch.")
    log_level: str = _setting("info", "Log level: debug, info, warning or error.")
    log_format: str = _setting(
        "text",
        "Log line format: text (for people) or json (one object per line, for collectors).",
    )
    metrics_listen: str = _setting(
        "",
        "HOST:PORT for a separate listener serving /metrics, /health and /ready. Empty: "
        "/metrics is served on the main listener.",
        example="127.0.0.1:9090",
    )
    shutdown_timeout: float = _setting(
        30.0,
        "Seconds a SIGTERM waits for in-flight requests (signing, sends) to finish before "
        "cancelling them and exiting.",
    )
    allow_pre_eip155: bool = _setting(
        False,
        "Sign legacy transactions without EIP-155 replay protection (v = 27/28) when a request "
        "asks with chainId 0x0. Such a transaction can be replayed on every chain: leave off "
        "unless a chain needs it.",
    )
    blob_sidecar: str = _setting(
        "eip7594",
        "Network form of blob (type 0x3) transactions sent with blobs: eip7594 (cell proofs; "
        "Osaka and later, Ethereum mainnet since December 2025) or eip4844 (one proof per "
        "blob; Cancun/Prague chains).",
    )
    upstream_ws: str = _setting(
        "",
        "WebSocket URL of the node: calls arriving over WebSocket that are not signed here "
        "(eth_subscribe included) are relayed to it. Empty: derived from --upstream (http to "
        "ws, https to wss, same host, port and path), right for nodes serving both on one port "
        "(anvil, Hardhat, the dev chain); geth and most providers need it set.",
        example="ws://127.0.0.1:8546",
    )
    ws_max_connections: int = _setting(
        1000,
        "Most WebSocket client connections open at once (each may hold one connection to the "
        "node's WebSocket); more are closed with 1013 (try again later).",
    )
    ws_messages_per_second: float = _setting(
        100.0,
        "Messages per second one WebSocket connection may send, with bursts of one second's "
        "worth; calls over it are answered with error -32005. 0: no limit.",
    )
    ws_idle_timeout: float = _setting(
        600.0,
        "Seconds a WebSocket connection may go without a message from its client while it has "
        "no subscription and no call in progress; then it is closed (1000). 0: never.",
    )
    ws_send_queue_bytes: int = _setting(
        1024 * 1024,
        "Bytes of replies and notifications queued for one WebSocket client that reads slowly; "
        "when full, relaying from the node to that client pauses (backpressure).",
    )
    ws_send_timeout: float = _setting(
        10.0,
        "Seconds one message may wait for a WebSocket client to read it; a client slower than "
        "that is disconnected (1008).",
    )

    def listen_host_port(self) -> tuple[str, int]:
        return host_port(self.listen)


def host_port(address: str) -> tuple[str, int]:
    """HOST:PORT (IPv6 in brackets) as (host, port); ValueError when the port is not a number."""
    host, _, port = address.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


FIELDS = {f.name: f for f in dataclasses.fields(Settings)}


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def flag_name(name: str) -> str:
    return FIELDS[name].metadata["flag"] or "--" + name.replace("_", "-")


def field_type(name: str) -> Any:
    hints = typing.get_type_hints(Settings)
    return hints[name]


def _is_tuple(tp: Any) -> bool:
    return typing.get_origin(tp) is tuple


def coerce(name: str, value: Any, source: str) -> Any:
    """`value` as the field's type; ConfigError naming the source when it cannot be."""
    tp = field_type(name)
    try:
        if _is_tuple(tp):
            if isinstance(value, str):
                return tuple(v.strip() for v in value.split(",") if v.strip())
            if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
                return tuple(value)
            raise ValueError("expected a list of strings")
        if tp is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("1", "true", "yes", "on"):
                return True
            if str(value).lower() in ("0", "false", "no", "off", ""):
                return False
            raise ValueError("expected true or false")
        if tp is int:
            if isinstance(value, bool | float):  # int(1.5) would silently drop the .5
                raise ValueError("expected an integer")
            return int(value)
        if tp is float:
            if isinstance(value, bool):
                raise ValueError("expected a number")
            return float(value)
        if not isinstance(value, str):
            raise ValueError("expected a string")
        return value
    except (ValueError, TypeError) as exc:  # TypeError: int([1]), float(None) from YAML
        raise ConfigError(f"{source} has an invalid value {value!r}: {exc}") from None


def _from_file(path: str) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must be a mapping of setting: value")
    unknown = sorted(set(loaded) - set(FIELDS))
    if unknown:
        raise ConfigError(
            f"config file {path} has unknown setting(s) {', '.join(map(str, unknown))}; "
            f"known settings: {', '.join(FIELDS)}"
        )
    return {k: coerce(k, v, f"{path}: {k}") for k, v in loaded.items()}


def load_settings(
    flags: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
    config_file: str | None = None,
) -> Settings:
    """Merge the three sources (flags win, then environment, then file) and validate."""
    environ = os.environ if environ is None else environ
    config_file = config_file or environ.get(ENV_PREFIX + "CONFIG") or None
    values: dict[str, Any] = _from_file(config_file) if config_file else {}
    for name in FIELDS:
        if env_name(name) in environ:
            values[name] = coerce(name, environ[env_name(name)], env_name(name))
    for name, value in flags.items():
        if value is not None:
            values[name] = coerce(name, value, flag_name(name))
    settings = Settings(**values)
    validate(settings)
    return settings


def validate(settings: Settings) -> None:
    """Cross-field checks with messages that name the setting to change."""
    try:
        _, port = settings.listen_host_port()
        if not 0 <= port <= 65535:
            raise ValueError
    except ValueError:
        raise ConfigError(
            f"--listen {settings.listen!r} must be HOST:PORT, e.g. 127.0.0.1:8545"
        ) from None
    if settings.gas_margin < 1.0:
        raise ConfigError(f"--gas-margin must be at least 1.0, got {settings.gas_margin}")
    for name in ("upstream_timeout", "upstream_connect_timeout", "kms_timeout"):
        if getattr(settings, name) <= 0:
            raise ConfigError(f"{flag_name(name)} must be positive")
    if settings.max_body_bytes < 1024 or settings.max_batch < 1:
        raise ConfigError("--max-body-bytes must be at least 1024 and --max-batch at least 1")
    if settings.log_level.lower() not in ("debug", "info", "warning", "error"):
        raise ConfigError("--log-level must be debug, info, warning or error")
    if settings.log_format not in ("text", "json"):
        raise ConfigError(f"--log-format must be text or json, got {settings.log_format!r}")
    if settings.metrics_listen:
        try:
            _, port = host_port(settings.metrics_listen)
            if ":" not in settings.metrics_listen or not 0 <= port <= 65535:
                raise ValueError
        except ValueError:
            raise ConfigError(
                f"--metrics-listen {settings.metrics_listen!r} must be HOST:PORT, "
                "e.g. 127.0.0.1:9090, or empty"
            ) from None
    if settings.shutdown_timeout < 0:
        raise ConfigError("--shutdown-timeout must be zero or more seconds")
    if settings.blob_sidecar not in ("eip7594", "eip4844"):
        raise ConfigError(
            f"--blob-sidecar must be eip7594 or eip4844, got {settings.blob_sidecar!r}"
        )
    if settings.upstream_ws:
        try:
            ws_parts = urlsplit(settings.upstream_ws)
            ws_parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            ws_parts = None
        if ws_parts is None or ws_parts.scheme not in ("ws", "wss") or not ws_parts.hostname:
            raise ConfigError("--upstream-ws must be a ws:// or wss:// URL with a host, or empty")
    if settings.ws_max_connections < 1 or settings.ws_send_queue_bytes < 1024:
        raise ConfigError(
            "--ws-max-connections must be at least 1 and --ws-send-queue-bytes at least 1024"
        )
    for name in ("ws_messages_per_second", "ws_idle_timeout"):
        if getattr(settings, name) < 0:
            raise ConfigError(f"{flag_name(name)} must be zero (no limit) or more")
    if settings.ws_send_timeout <= 0:
        raise ConfigError("--ws-send-timeout must be positive")


def require_serve_settings(settings: Settings) -> None:
    """What `serve` needs beyond a valid Settings."""
    if not settings.upstream:
        raise ConfigError(
            f"no upstream node: set --upstream (or {env_name('upstream')}) to the node's URL"
        )
    try:
        parts = urlsplit(settings.upstream)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError("--upstream must be an http:// or https:// URL with a host")
    if not settings.kms_keys:
        raise ConfigError(
            f"no keys: give at least one --kms-key (or {env_name('kms_keys')}) to sign with"
        )


def render_reference() -> str:
    """docs/config.md, generated from the Settings fields."""
    lines = [
        "# Configuration reference",
        "",
        "<!-- generated by `python -m signer_proxy.config > docs/config.md`; do not edit -->",
        "",
        "Every setting can be given as a command-line flag, as an environment variable, or as",
        "a key in the YAML file named by `--config` (or `SIGNER_PROXY_CONFIG`). Precedence:",
        "flags, then environment, then file, then the default. AWS credentials are not",
        "settings: they come from the standard AWS chain (environment variables, shared",
        "profile, web identity / IRSA, instance role).",
        "",
        "| file key | flag | environment | default | meaning |",
        "|---|---|---|---|---|",
    ]
    for name, f in FIELDS.items():
        default = f.default
        shown = "(none)" if default in ("", ()) else f"`{default}`"
        lines.append(
            f"| `{name}` | `{flag_name(name)}` | `{env_name(name)}` | {shown} | "
            f"{f.metadata['help']} |"
        )
    lines += [
        "",
        "An example file (more under `config/`, each loaded by a test):",
        "",
        "```yaml",
    ]
    for name, f in FIELDS.items():
        example = f.metadata["example"]
        if example:
            value = [example] if _is_tuple(field_type(name)) else example
            lines.append(yaml.safe_dump({name: value}, default_flow_style=False).rstrip())
    lines += ["```", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    print(render_reference(), end="")
