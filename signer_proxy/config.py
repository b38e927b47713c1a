"""One frozen Settings, from flags > environment (SIGNER_PROXY_*) > YAML file > defaults.

Each field is documented once, here; the CLI flags, the environment variable names and
docs/config.md are all derived from these fields (`python -m signer_proxy.config` rewrites
docs/config.md, and a test fails when it is stale). AWS credentials are deliberately not
settings: they come from the standard AWS chain (environment, profile, IRSA, instance role).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
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


# The settings one entry of `chains:` may set for its chain (the rest are the process's).
CHAIN_SETTINGS = (
    "upstream", "upstream_ws", "upstream_headers", "upstream_sigv4_region",
    "upstream_sigv4_service", "upstream_ca_file", "upstream_timeout", "upstream_connect_timeout",
    "upstream_health_interval", "upstream_max_lag_blocks", "gas_margin", "blob_sidecar",
    "allow_pre_eip155", "track_transactions", "tracking_interval", "tracking_confirmations",
)  # fmt: skip
CHAIN_ENTRY_KEYS = ("name", "chain_id", "default", "keys", *CHAIN_SETTINGS)
# A chain's name is a path segment (/chain/NAME) and a metric label; all digits would read as
# a chain id.
CHAIN_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")


@dataclass(frozen=True)
class ChainConfig:
    """One entry of the YAML file's `chains:` list: a chain served on /chain/NAME and
    /chain/CHAIN_ID (and on / when it is the default)."""

    name: str
    chain_id: int | None = None  # expected: the node's eth_chainId must say the same
    default: bool = False
    keys: tuple[str, ...] = ()  # the keys that sign on this chain (addresses); empty: all
    overrides: tuple[tuple[str, Any], ...] = ()  # (setting, value) from CHAIN_SETTINGS


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
        "URL of the Ethereum JSON-RPC node every unsigned call is forwarded to. Required. "
        "Several comma-separated URLs: reads fail over between healthy nodes, sends go to the "
        "first healthy one (see README, Replicas and failover).",
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
        "flag; comma-separated in the environment; a list in the file. A key may name its own "
        "Region, endpoint and IAM role to assume (keys of other accounts): "
        "KEY?region=eu-west-1&role_arn=arn:aws:iam::222233334444:role/signer&endpoint_url=URL.",
        flag="--kms-key",
        example="alias/treasury",
    )
    azure_ca_file: str = _setting(
        "",
        "A CA certificate (PEM) to trust for azurekv:// vaults (--key, --azure-vault), e.g. a "
        "local Key Vault emulator's self-signed one. Empty: the system's trust store.",
        example="/etc/signer-proxy/azure-emulator-ca.pem",
    )
    gcp_kms_endpoint: str = _setting(
        "",
        "Google Cloud KMS endpoint override for gcpkms:// keys (--key, --gcp-key-ring): "
        "127.0.0.1:PORT of an emulator (gRPC, local credentials). Empty: Cloud KMS itself.",
        example="127.0.0.1:8443",
    )
    kms_discover_tags: tuple[str, ...] = _setting(
        (),
        "Discover every enabled ECC_SECG_P256K1 SIGN_VERIFY key of the default Region and "
        "account carrying all of these KEY=VALUE tags. Repeat the flag; with "
        "--kms-alias-prefix a key must match both. Re-run on every reload.",
        flag="--kms-tag",
        example="env=prod",
    )
    kms_discover_alias_prefixes: tuple[str, ...] = _setting(
        (),
        "Discover the keys behind every alias starting with one of these prefixes (e.g. "
        "alias/signer/). Lists aliases, not keys: it never touches keys the proxy may not "
        "read, so prefer it to --kms-tag under a least-privilege policy.",
        flag="--kms-alias-prefix",
        example="alias/signer/",
    )
    azure_discover_vaults: tuple[str, ...] = _setting(
        (),
        "Discover every enabled EC P-256K key of these Azure Key Vaults (a vault name, or a "
        "host such as myhsm.managedhsm.azure.net) whose tags include every --azure-tag. "
        "Repeat the flag. Needs keys/list besides keys/get and keys/sign. Re-run on every "
        "reload.",
        flag="--azure-vault",
        example="myvault",
    )
    azure_discover_tags: tuple[str, ...] = _setting(
        (),
        "KEY=VALUE tags a key of an --azure-vault must all carry to be discovered. Repeat the "
        "flag. None: every P-256K key of the vault.",
        flag="--azure-tag",
        example="signer-proxy=prod",
    )
    gcp_discover_key_rings: tuple[str, ...] = _setting(
        (),
        "Discover every enabled EC_SIGN_SECP256K1_SHA256 key version of these Google Cloud KMS "
        "key rings (projects/P/locations/L/keyRings/R) whose key carries every --gcp-label. "
        "Repeat the flag. Needs roles/cloudkms.viewer on the ring. Re-run on every reload.",
        flag="--gcp-key-ring",
        example="projects/my-project/locations/global/keyRings/signers",
    )
    gcp_discover_labels: tuple[str, ...] = _setting(
        (),
        "KEY=VALUE labels a key of a --gcp-key-ring must all carry to be discovered. Repeat "
        "the flag. None: every secp256k1 key of the ring.",
        flag="--gcp-label",
        example="signer-proxy=prod",
    )
    keystores: tuple[str, ...] = _setting(
        (),
        "Encrypted V3 keystore files (as geth writes them) or directories of them, signed with "
        "locally: for development and setups without KMS. Each needs a password file: "
        "PATH?password_file=FILE, else --keystore-password-file.",
        flag="--keystore",
        example="/etc/signer-proxy/keystore",
    )
    keystore_password_file: str = _setting(
        "",
        "File whose first line is the password of every --keystore that names no "
        "password_file of its own.",
        example="/etc/signer-proxy/keystore-password",
    )
    key_sources: tuple[str, ...] = _setting(
        (),
        "Keys of the other backends, one source string each, told apart by its scheme: "
        "pkcs11:token=T;object=LABEL (an RFC 7512 PKCS#11 URI; id=%01 instead of object, or "
        "neither for every secp256k1 key of the token; ?x-label-prefix=P selects by label "
        "prefix; ?module-path=SO and ?pin-source=file:PATH override the pkcs11_* settings), "
        "azurekv://VAULT/keys/NAME[/VERSION] (Azure Key Vault or Managed HSM), "
        "gcpkms://projects/P/locations/L/keyRings/R/cryptoKeys/K/cryptoKeyVersions/N (Google "
        "Cloud KMS). "
        "Repeat the flag; comma-separated in the environment; a list in the file.",
        flag="--key",
        example="pkcs11:token=signer;object=treasury",
    )
    pkcs11_module: str = _setting(
        "",
        "Path of the PKCS#11 module (.so) of the pkcs11: keys that name no module-path, e.g. "
        "/opt/cloudhsm/lib/libcloudhsm_pkcs11.so, /usr/lib/libyubihsm_pkcs11.so, "
        "/usr/safenet/lavasecclient/libs/64/libCryptoki2.so, libsofthsm2.so.",
        example="/usr/lib/softhsm/libsofthsm2.so",
    )
    pkcs11_pin_file: str = _setting(
        "",
        "File whose first line is the PKCS#11 user PIN (CloudHSM: CRYPTO_USER:password) of "
        "the pkcs11: keys that name no pin-source. Never logged or shown.",
        example="/etc/signer-proxy/pkcs11-pin",
    )
    pkcs11_pin_env: str = _setting(
        "",
        "Name of an environment variable holding the PKCS#11 user PIN, when there is no "
        "--pkcs11-pin-file (the variable's value is never logged or shown).",
        example="SIGNER_PROXY_HSM_PIN",
    )
    pkcs11_user_type: str = _setting(
        "user",
        "Who the PKCS#11 PIN logs in as: user (CKU_USER: an AWS CloudHSM crypto user, PIN "
        "USER:PASSWORD; a YubiHSM 2 authentication key, PIN 0001password; a Luna partition's "
        "Crypto Officer; SoftHSM2) or crypto-user (CKU_CRYPTO_USER, the vendor-defined "
        "0x80000001: a Thales Luna partition's Crypto User, who may sign but not make keys).",
        example="crypto-user",
    )
    pkcs11_sessions: int = _setting(
        4,
        "PKCS#11 sessions (and worker threads) kept per token. Calls into one PKCS#11 "
        "module are made one at a time (python-pkcs11 initialises modules without "
        "CKF_OS_LOCKING_OK), so more sessions do not sign faster.",
    )
    aws_sts_endpoint_url: str = _setting(
        "",
        "STS endpoint used to assume the role_arn of a --kms-key (another account's keys). "
        "Empty: the AWS default for the key's Region.",
    )
    kms_load_concurrency: int = _setting(
        16,
        "Most KMS calls in flight while keys load (startup, reload, discovery). They also "
        "count against --kms-max-in-flight: keep this below it, so signing keeps slots while "
        "a reload runs.",
    )
    allow_key_failures: bool = _setting(
        False,
        "Start even when a --kms-key or --keystore cannot be loaded, or discovery cannot list "
        "keys: serve the keys that load and report the others (log, /ready, "
        "signer_proxy_key_load_failures). Off: such a key refuses startup. Discovered keys "
        "that fail are always skipped and reported; a reload never stops the proxy.",
    )
    admin_token_file: str = _setting(
        "",
        "File holding the bearer token for POST /admin/keys/reload, which reloads the keys, "
        "the policy file and the API keys file without a restart (as SIGHUP does). With "
        "--admin-clients empty too: no admin route.",
    )
    admin_clients: tuple[str, ...] = _setting(
        (),
        "Authenticated clients (API key or client certificate names) that may call POST "
        "/admin/keys/reload with their own credentials. Needs authentication configured.",
        example="ops",
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
    request_deadline: float = _setting(
        60.0,
        "Seconds one JSON-RPC call may take in all (filling, KMS retries, sending, resends); "
        "every step is bounded by what is left, so no client waits longer.",
    )
    kms_max_in_flight: int = _setting(
        32,
        "Most KMS requests in flight at once, process-wide; a burst queues (within the "
        "request deadline) instead of tripping the account's KMS request quota.",
    )
    kms_backoff_base: float = _setting(
        0.05,
        "Seconds of the first retry backoff after a throttled or failed KMS request; doubles "
        "each retry, with full jitter, until the request deadline.",
    )
    kms_backoff_max: float = _setting(2.0, "Longest backoff between two KMS retries, seconds.")
    nonce_store: str = _setting(
        "",
        "Where nonce state lives. Empty: in this process (run one replica). redis://HOST:PORT/DB "
        "or rediss://… : shared by every replica pointed at the same Redis.",
        example="redis://127.0.0.1:6379/0",
    )
    nonce_lease_seconds: float = _setting(
        30.0,
        "With --nonce-store: how long a reserved nonce stays reserved without being sent; a "
        "replica that dies holding one frees it after this long (gap repair).",
    )
    track_transactions: bool = _setting(
        True,
        "Track every transaction the proxy sends until it is final (mined, replaced or "
        "superseded): rebroadcast it if the node forgets it, bump its fees if the policy's "
        "fee_bumping allows, answer signer_getTransactionStatus. With --nonce-store the "
        "tracked state is shared through the same Redis (README, When a transaction gets stuck).",
    )
    tracking_interval: float = _setting(
        2.0,
        "With --track-transactions: seconds between two looks at each address's pending "
        "transactions (receipts, the node's pool, bump deadlines).",
    )
    tracking_confirmations: int = _setting(
        0,
        "With --track-transactions: blocks on top of a transaction's block before tracking "
        "calls it final. Until then a reorg that takes it out of the chain is noticed (the "
        "address's mined count falls back), and the transaction is watched as pending again "
        "and rebroadcast if the node forgot it; at depth its receipt is checked once more, and "
        "a reorg that moved it to another block counts the N blocks again from there. 0: final "
        "when first seen mined, reorgs not followed. A chain that reorgs more deeply than this "
        "loses what a reorg drops after.",
    )
    upstream_health_interval: float = _setting(
        5.0,
        "With several --upstream URLs: seconds between health probes (eth_chainId) of a node "
        "taken out of rotation (and, with --upstream-max-lag-blocks, of every node's head).",
    )
    upstream_max_lag_blocks: int = _setting(
        20,
        "With several --upstream URLs: a node whose head is more than this many blocks behind "
        "the highest head of the others (asked every --upstream-health-interval) is taken out "
        "of rotation until it catches up, so reads and pending counts do not come from a "
        "node that fell behind. 0: heads are not compared.",
    )
    max_body_bytes: int = _setting(
        5 * 1024 * 1024,
        "Largest request body accepted; larger bodies get HTTP 413. Also the largest WebSocket "
        "message: a larger one closes the connection with 1009.",
    )
    max_batch: int = _setting(1000, "Most calls accepted in one JSON-RPC batch.")
    head_timeout: float = _setting(
        60.0,
        "Seconds a client may take to send a request's head (request line and headers), from "
        "its first byte; then the connection gets HTTP 408 and is closed (nginx's "
        "client_header_timeout). A slow client dripping bytes holds a connection no longer.",
    )
    body_timeout: float = _setting(
        60.0,
        "Seconds a client may take to send a request's body once its head is in; then HTTP 408 "
        "and the connection is closed. A whole deadline, not one per read as nginx's "
        "client_body_timeout: a byte a minute does not keep it alive.",
    )
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
    operator_page: bool = _setting(
        True,
        "Serve the read-only operator page at /operator (and its data at "
        "/operator/status.json) on --metrics-listen if set, else on the main listener. It "
        "takes the admin credentials (--admin-token-file, --admin-clients); with neither, it "
        "is served to loopback clients only, and not at all when client authentication is on.",
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
    kms_sign_client: str = _setting(
        "lean",
        "How KMS Sign calls are made: lean (the KMS JSON protocol over a keep-alive pool, SigV4 "
        "by botocore, ~20x less CPU) or aioboto3 (the full botocore client). Key loading and "
        "management always use aioboto3.",
    )
    # --- who may sign what (docs/security.md) ---
    api_keys_file: str = _setting(
        "",
        "Clients' API key hashes: a YAML file (client: hash, or client: [hashes]) or a "
        "directory with one file per client (a Kubernetes Secret mount). Make hashes with "
        "`signer-proxy hash-api-key`. Set: every JSON-RPC request must authenticate. Read "
        "again on a reload (SIGHUP, POST /admin/keys/reload).",
        example="/etc/signer-proxy/api-keys",
    )
    allow_api_key_in_query: bool = _setting(
        False,
        "Also accept the API key as ?key= in the URL, for clients that cannot set headers. "
        "Weaker: URLs end up in proxies' logs and browser history.",
    )
    insecure_no_auth: bool = _setting(
        False,
        "Serve a non-loopback --listen address without authentication. Anyone who reaches the "
        "port can sign with every key: only behind a network you fully control.",
    )
    policy_file: str = _setting(
        "",
        "YAML signing policy: rules for every key, per key and per client, and each client's "
        "scope (keys, methods, rate limit, certificate names). Empty: no rules. Read again on "
        "a reload (SIGHUP, POST /admin/keys/reload).",
        example="/etc/signer-proxy/policy.yaml",
    )
    audit_log: str = _setting(
        "",
        "File the audit log (one JSON line per signing decision) is appended to; - for "
        "stdout; empty: no audit log.",
        example="/var/log/signer-proxy/audit.jsonl",
    )
    audit_log_max_bytes: int = _setting(
        100 * 1024 * 1024,
        "Rotate the audit log file when it would grow past this size; 0: never (rotate it "
        "with logrotate: a moved file is noticed and reopened).",
    )
    audit_log_backups: int = _setting(
        10, "Rotated audit log files kept (audit.jsonl.1 is the newest)."
    )
    tls_cert_file: str = _setting(
        "",
        "PEM certificate (chain) to serve HTTPS with; re-read when it changes. Needs "
        "--tls-key-file.",
        example="/etc/signer-proxy/tls/tls.crt",
    )
    tls_key_file: str = _setting(
        "", "PEM private key of --tls-cert-file.", example="/etc/signer-proxy/tls/tls.key"
    )
    tls_client_ca_file: str = _setting(
        "",
        "PEM CA certificates that client certificates must chain to (mTLS). A verified "
        "certificate authenticates as the client whose client_cert_names (policy file) "
        "has its subject CN or a subjectAltName.",
    )
    tls_reload_interval: float = _setting(
        10.0,
        "Seconds between checks of the TLS files (certificate, key, client CA) for changes; "
        "new connections get the new ones (0: never re-read).",
    )
    upstream_ca_file: str = _setting(
        "",
        "PEM CA certificates to verify an https:// upstream with, instead of the system's "
        "(a private CA).",
    )
    upstream_headers: tuple[str, ...] = _setting(
        (),
        "Extra HTTP headers sent with every request to the node, as 'Name: value', "
        "'Name: env:VAR' (from an environment variable) or 'Name: file:/path' (a mounted "
        "Secret). Values never appear in logs or errors; prefer env: or file: for secrets.",
        flag="--upstream-header",
        example="Authorization: env:NODE_TOKEN",
    )
    upstream_sigv4_region: str = _setting(
        "",
        "AWS region to sign node requests for with SigV4 (Amazon Managed Blockchain Access); "
        "credentials come from the standard AWS chain, as for KMS. Empty: no SigV4.",
        example="us-east-1",
    )
    upstream_sigv4_service: str = _setting(
        "managedblockchain",
        "AWS service name the SigV4 signature is scoped to (with --upstream-sigv4-region).",
    )
    cors_origins: tuple[str, ...] = _setting(
        (),
        "Web page origins (https://app.example) allowed to call the proxy from a browser; * "
        "for any. A request with another Origin is refused.",
        flag="--cors-origin",
        example="https://app.example",
    )
    allowed_hosts: tuple[str, ...] = _setting(
        ("localhost", "127.0.0.1", "::1"),
        "Host header names the proxy answers to (patterns like *.example.com; * for any); "
        "others get HTTP 403, which stops DNS rebinding from web pages.",
        flag="--allowed-host",
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

    # YAML only (`chains:` in the --config file; see docs/chains.md): no flag, no environment.
    chains: tuple[ChainConfig, ...] = field(default=(), metadata={"yaml_only": True})

    @property
    def auth_configured(self) -> bool:
        """Whether JSON-RPC requests must authenticate (API keys or client certificates)."""
        return bool(self.api_keys_file or self.tls_client_ca_file)

    def listen_host_port(self) -> tuple[str, int]:
        return host_port(self.listen)

    def chain_list(self) -> tuple[ChainConfig, ...]:
        """The chains served: the `chains:` entries, or one default chain named "default" from
        the top-level upstream settings."""
        return self.chains or (ChainConfig("default", default=True),)

    def for_chain(self, chain: ChainConfig) -> Settings:
        """These settings with `chain`'s own (upstream, gas margin …) in place."""
        return dataclasses.replace(self, chains=(), **dict(chain.overrides))


def host_port(address: str) -> tuple[str, int]:
    """HOST:PORT (IPv6 in brackets) as (host, port); ValueError when the port is not a number."""
    host, _, port = address.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


# The settings with a flag and an environment variable (all but the YAML-only ones).
FIELDS = {f.name: f for f in dataclasses.fields(Settings) if not f.metadata.get("yaml_only")}


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


class HexTextLoader(yaml.SafeLoader):
    """YAML 1.1 reads an unquoted 0x... as an integer, so an address (a chain's keys, a policy
    allowlist) would arrive as a number, its leading zeros and form lost. With this loader
    0x-hex stays text; the readers that take numbers accept 0x text."""


HexTextLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:int"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
HexTextLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(  # PyYAML's YAML 1.1 int, without its 0x alternative
        r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)"
        r"|[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+)$"
    ),
    list("-+0123456789"),
)


def _from_file(path: str) -> dict[str, Any]:
    try:
        loaded = yaml.load(Path(path).read_text(), Loader=HexTextLoader) or {}
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must be a mapping of setting: value")
    unknown = sorted(set(loaded) - set(FIELDS) - {"chains"})
    if unknown:
        raise ConfigError(
            f"config file {path} has unknown setting(s) {', '.join(map(str, unknown))}; "
            f"known settings: {', '.join(FIELDS)}, chains"
        )
    values = {k: coerce(k, v, f"{path}: {k}") for k, v in loaded.items() if k != "chains"}
    if "chains" in loaded:
        values["chains"] = parse_chains(loaded["chains"], f"{path}: chains")
    return values


def parse_chains(value: Any, where: str) -> tuple[ChainConfig, ...]:
    """The `chains:` list; ConfigError naming the entry and key that is wrong."""
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where} must be a list of chains, each with a name and an upstream")
    chains = []
    for i, item in enumerate(value):
        at = f"{where}[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{at} must be a mapping (name, upstream, chain_id …)")
        unknown = sorted(str(k) for k in set(item) - set(CHAIN_ENTRY_KEYS))
        if unknown:
            raise ConfigError(
                f"{at} has unknown key(s) {', '.join(unknown)}; known: "
                f"{', '.join(CHAIN_ENTRY_KEYS)}"
            )
        name = item.get("name")
        if not isinstance(name, str) or not CHAIN_NAME_RE.fullmatch(name) or name.isdigit():
            raise ConfigError(
                f"{at}.name must be a name for the URL path /chain/NAME: lower-case letters, "
                f"digits and ._- (not only digits), e.g. mainnet; got {name!r}"
            )
        at = f"{where}[{name}]"
        chain_id = item.get("chain_id")
        if isinstance(chain_id, str) and re.fullmatch(r"0x[0-9a-fA-F]{1,16}", chain_id):
            chain_id = int(chain_id, 16)
        if chain_id is not None and (
            not isinstance(chain_id, int) or isinstance(chain_id, bool) or chain_id < 1
        ):
            raise ConfigError(f"{at}.chain_id must be a positive integer, e.g. 1, 10 or 0x2105")
        default = item.get("default", False)
        if not isinstance(default, bool):
            raise ConfigError(f"{at}.default must be true or false")
        keys = item.get("keys", [])
        if not isinstance(keys, list) or not all(
            isinstance(k, str) and re.fullmatch(r"0x[0-9a-fA-F]{40}", k) for k in keys
        ):
            raise ConfigError(f"{at}.keys must be a list of 0x addresses (the keys that sign here)")
        if "upstream" not in item:
            raise ConfigError(f"{at} needs an upstream: the URL of that chain's node")
        overrides = tuple((k, coerce(k, item[k], f"{at}.{k}")) for k in CHAIN_SETTINGS if k in item)
        chains.append(
            ChainConfig(name, chain_id, default, tuple(k.lower() for k in keys), overrides)
        )
    return tuple(chains)


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
    if settings.upstream_max_lag_blocks < 0:
        raise ConfigError(
            f"--upstream-max-lag-blocks must be 0 or more, got {settings.upstream_max_lag_blocks}"
        )
    if settings.tracking_confirmations < 0:
        raise ConfigError(
            f"--tracking-confirmations must be 0 or more, got {settings.tracking_confirmations}"
        )
    for name in (
        "upstream_timeout",
        "upstream_connect_timeout",
        "kms_timeout",
        "request_deadline",
        "kms_max_in_flight",
        "kms_backoff_base",
        "kms_backoff_max",
        "nonce_lease_seconds",
        "upstream_health_interval",
        "head_timeout",
        "body_timeout",
        "tracking_interval",
    ):
        if getattr(settings, name) <= 0:
            raise ConfigError(f"{flag_name(name)} must be positive")
    if settings.nonce_store and urlsplit(settings.nonce_store).scheme not in ("redis", "rediss"):
        raise ConfigError("--nonce-store must be empty (in-process) or a redis:// or rediss:// URL")
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
    if settings.kms_sign_client not in ("lean", "aioboto3"):
        raise ConfigError(
            f"--kms-sign-client must be lean or aioboto3, got {settings.kms_sign_client!r}"
        )
    if settings.blob_sidecar not in ("eip7594", "eip4844"):
        raise ConfigError(
            f"--blob-sidecar must be eip7594 or eip4844, got {settings.blob_sidecar!r}"
        )
    if bool(settings.tls_cert_file) != bool(settings.tls_key_file):
        raise ConfigError("--tls-cert-file and --tls-key-file go together: set both or neither")
    if settings.tls_client_ca_file and not settings.tls_cert_file:
        raise ConfigError(
            "--tls-client-ca-file (client certificates) needs HTTPS: set --tls-cert-file and "
            "--tls-key-file too"
        )
    if settings.audit_log_max_bytes < 0 or settings.audit_log_backups < 0:
        raise ConfigError("--audit-log-max-bytes and --audit-log-backups must not be negative")
    if settings.tls_reload_interval < 0:
        raise ConfigError("--tls-reload-interval must be zero or more seconds")

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

    if "anonymous" in settings.admin_clients:
        raise ConfigError("--admin-clients cannot name anonymous: name authenticated clients")
    if settings.admin_clients and not settings.auth_configured:
        raise ConfigError(
            "--admin-clients needs authentication: set --api-keys-file (or client "
            "certificates), or use --admin-token-file"
        )
    if not 1 <= settings.kms_load_concurrency <= 256:
        raise ConfigError("--kms-load-concurrency must be between 1 and 256")
    if not 1 <= settings.pkcs11_sessions <= 64:
        raise ConfigError("--pkcs11-sessions must be between 1 and 64")
    _validate_chains(settings)
    # The key sources' grammar (--kms-key, --kms-tag, --key …) is checked by the keys
    # package, which sits above config: see signer_proxy.keys.sources.load_checked.


def _validate_chains(settings: Settings) -> None:
    if not settings.chains:
        return
    if settings.upstream or settings.upstream_ws:
        raise ConfigError(
            "chains: is set, so each chain names its own upstream: remove the top-level "
            "upstream / upstream_ws (--upstream, SIGNER_PROXY_UPSTREAM) or move it into an entry"
        )
    names: set[str] = set()
    ids: dict[int, str] = {}
    defaults = [c.name for c in settings.chains if c.default]
    for chain in settings.chains:
        if chain.name in names:
            raise ConfigError(f"chains: the name {chain.name} is used twice; names must differ")
        names.add(chain.name)
        if chain.chain_id is not None:
            if chain.chain_id in ids:
                raise ConfigError(
                    f"chains: {ids[chain.chain_id]} and {chain.name} both have chain_id "
                    f"{chain.chain_id}; each chain is served once"
                )
            ids[chain.chain_id] = chain.name
        validate(settings.for_chain(chain))  # its upstream, gas margin … checked as the top's
    if len(defaults) > 1:
        raise ConfigError(
            f"chains: {' and '.join(defaults)} are both marked default; at most one is served on /"
        )


def is_loopback(host: str) -> bool:
    """Whether a --listen host only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def upstream_urls(value: str) -> tuple[str, ...]:
    """The node URLs of --upstream: one, or several separated by commas."""
    return tuple(url.strip() for url in value.split(",") if url.strip())


def require_serve_settings(settings: Settings) -> None:
    """What `serve` needs beyond a valid Settings."""
    for chain in settings.chains:
        require_upstream(settings.for_chain(chain), f"chains[{chain.name}].upstream")
    if not settings.chains:
        require_upstream(settings, "--upstream")
    _require_keys_and_door(settings)


def require_upstream(settings: Settings, where: str) -> None:
    """`settings.upstream` is set and every URL in it is http(s) with a host."""
    if not settings.upstream:
        raise ConfigError(
            f"no upstream node: set {where} (or {env_name('upstream')}) to the node's URL"
        )
    for url in upstream_urls(settings.upstream):
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            parts = None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"{where} must be an http:// or https:// URL with a host (several: comma-separated)"
            )


def _require_keys_and_door(settings: Settings) -> None:
    if not (
        settings.kms_keys
        or settings.kms_discover_tags
        or settings.kms_discover_alias_prefixes
        or settings.keystores
        or settings.key_sources
        or settings.azure_discover_vaults
        or settings.gcp_discover_key_rings
    ):
        raise ConfigError(
            f"no keys: give at least one --kms-key (or {env_name('kms_keys')}), a discovery "
            "filter (--kms-tag, --kms-alias-prefix, --azure-vault, --gcp-key-ring), a "
            "--keystore or a --key (pkcs11:…, azurekv://…, gcpkms://…) to sign with"
        )
    host, _ = settings.listen_host_port()
    if not (settings.auth_configured or is_loopback(host) or settings.insecure_no_auth):
        raise ConfigError(
            f"--listen {settings.listen} is not a loopback address and no authentication is "
            "configured, so anyone who reaches it could sign with every key: set "
            "--api-keys-file (API keys) or --tls-client-ca-file (client certificates), listen "
            "on 127.0.0.1, or pass --insecure-no-auth true if a network you control guards it"
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
        "## Several chains",
        "",
        "`chains:` is a key of the YAML file only (no flag, no environment variable): a list of",
        "the chains one proxy serves, each on `/chain/NAME` and `/chain/CHAIN_ID`. An entry has",
        "a `name`, its node's `upstream`, optionally `chain_id`, `default` and `keys`, and may",
        "set these settings of the table for its chain alone: "
        + ", ".join(f"`{name}`" for name in CHAIN_SETTINGS if name != "upstream")
        + ". With `chains:` set, the top-level `upstream` is left out. See",
        "[chains.md](chains.md) for the shape, the paths and how chains are kept apart.",
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
