"""The signing policy: rules per key, per client and for everyone, and each client's scope.
Pure: parsing the operator's YAML file and checking a filled transaction or a message
against it. The gate (signer_proxy.access.gate) runs these checks before any signature, keeps the
daily budgets and writes the audit log.

Every applicable rule set must allow a signature: the defaults, the key's, and the client's.
A refusal names the rule and where it was set (`PolicyDenied.rule`, `.scope`).
"""

from __future__ import annotations

import fnmatch
import functools
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml

from signer_proxy.access.auth import CLIENT_NAME_RE
from signer_proxy.config import HexTextLoader
from signer_proxy.errors import ConfigError, PolicyDenied
from signer_proxy.eth.ecdsa import keccak256
from signer_proxy.eth.fee_bump import BumpPolicy
from signer_proxy.eth.hexdata import to_data
from signer_proxy.eth.tx_encoding import UnsignedTx
from signer_proxy.eth.tx_request import DYNAMIC_FEE_TYPES

_UNITS = {"wei": 1, "gwei": 10**9, "ether": 10**18, "eth": 10**18}
_AMOUNT_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*$")
_ADDRESS_RE = re.compile(r"^0x[0-9a-fA-F]{40}$")
_SELECTOR_RE = re.compile(r"^0x[0-9a-fA-F]{8}$")
_SIGNATURE_RE = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$]*\(.*\)$")

# The local methods that produce a signature (message signing is the EIP-191/712 subset).
MESSAGE_METHODS = frozenset(
    {"personal_sign", "eth_sign", "eth_signTypedData", "eth_signTypedData_v3",
     "eth_signTypedData_v4"}
)  # fmt: skip
SIGNING_METHODS = MESSAGE_METHODS | {
    "eth_sendTransaction",
    "eth_signTransaction",
    "signer_signAuthorization",
    "signer_cancelTransaction",
    "signer_speedUpTransaction",
}
# What a read_only client may call: reading chain state and the proxy's accounts, nothing that
# signs or sends. An allowlist, so that new node methods are not let through by accident.
READ_ONLY_METHODS = (
    "eth_accounts", "eth_requestAccounts", "eth_chainId", "eth_blockNumber", "eth_call",
    "eth_estimateGas", "eth_createAccessList", "eth_simulateV1", "eth_get*", "eth_gasPrice",
    "eth_maxPriorityFeePerGas", "eth_feeHistory", "eth_blobBaseFee", "eth_syncing",
    "eth_protocolVersion", "eth_subscribe", "eth_unsubscribe", "eth_newFilter",
    "eth_newBlockFilter", "eth_newPendingTransactionFilter", "eth_uninstallFilter",
    "net_*", "web3_*", "signer_getTransactionStatus",
)  # fmt: skip


def parse_amount(value: Any, where: str) -> int:
    """Wei from an integer, 0x-hex, or "<number> wei|gwei|ether" (exact; no fractional wei)."""
    if isinstance(value, bool):
        raise ConfigError(f"{where} must be an amount such as 1000000, '30 gwei' or '1.5 ether'")
    if isinstance(value, int):
        if value < 0:
            raise ConfigError(f"{where} must not be negative")
        return value
    if isinstance(value, str):
        if value.lower().startswith("0x"):
            try:
                return int(value, 16)
            except ValueError:
                pass
        match = _AMOUNT_RE.match(value)
        if match and match.group(2).lower() in ("", *_UNITS):
            unit = _UNITS.get(match.group(2).lower(), 1)
            try:
                wei = Decimal(match.group(1)) * unit
            except InvalidOperation:
                wei = Decimal("NaN")
            if wei == wei.to_integral_value():
                return int(wei)
            raise ConfigError(f"{where} is {value!r}: less than one wei is not an amount")
    raise ConfigError(
        f"{where} is {value!r}: write an amount such as 1000000, '30 gwei' or '1.5 ether'"
    )


def parse_selector(value: Any, where: str) -> bytes:
    """A 4-byte selector from 0x-hex or a function signature like transfer(address,uint256)."""
    if isinstance(value, str):
        text = value.strip()
        if _SELECTOR_RE.match(text):
            return bytes.fromhex(text[2:])
        if _SIGNATURE_RE.match(text):
            return keccak256(text.replace(" ", "").encode())[:4]
    raise ConfigError(
        f"{where} is {value!r}: give a selector as 0x and 8 hex digits, or a function signature "
        "such as transfer(address,uint256)"
    )


def format_wei(wei: int) -> str:
    """An amount for people: wei, with the ether or gwei figure when it is round enough."""
    if wei >= 10**15:
        return f"{Decimal(wei) / 10**18:f} ether ({wei} wei)"
    if wei >= 10**6:
        return f"{Decimal(wei) / 10**9:f} gwei ({wei} wei)"
    return f"{wei} wei"


@dataclass(frozen=True, slots=True)
class Rules:
    """One rule set; None (or the permissive default) means the rule is not set here."""

    chain_ids: frozenset[int] | None = None
    to_allowlist: frozenset[str] | None = None  # lower-case addresses
    to_denylist: frozenset[str] = frozenset()
    contract_creation: bool = True
    max_value: int | None = None
    max_gas: int | None = None
    max_fee_per_gas: int | None = None  # gasPrice for legacy and type 1 transactions
    max_priority_fee_per_gas: int | None = None
    selectors: frozenset[bytes] | None = None
    daily_value_budget: int | None = None
    message_signing: bool = True
    authorization_signing: bool = True


RULE_NAMES = tuple(f.name for f in fields(Rules))


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A token bucket: `per_second` calls on average, bursts of up to `burst` calls."""

    per_second: float
    burst: int


@dataclass(frozen=True, slots=True)
class ClientScope:
    """What one client may do besides the rules: keys, methods, rate."""

    name: str
    keys: tuple[str, ...] | None = None  # key references (addresses once bound); None: all
    methods: tuple[str, ...] | None = None  # fnmatch patterns; None: all
    deny_methods: tuple[str, ...] = ()
    read_only: bool = False
    rate_limit: RateLimit | None = None
    client_cert_names: tuple[str, ...] = ()
    rules: Rules = field(default_factory=Rules)
    chains: tuple[str, ...] | None = None  # the chains (by name) it may use; None: all

    def chain_denial(self, chain: str) -> PolicyDenied | None:
        """Why this client may not use `chain` at all (any method), or None."""
        if self.chains is None or chain in self.chains:
            return None
        return PolicyDenied(
            "chains",
            f"client {self.name}",
            f"client {self.name} may not use chain {chain}; its chains are "
            f"{', '.join(self.chains) or 'none'}",
        )

    def method_denial(self, method: str) -> PolicyDenied | None:
        """Why this client may not call `method`, or None when it may."""
        where = f"client {self.name}"
        if self.read_only and not _matches(method, READ_ONLY_METHODS):
            return PolicyDenied(
                "read_only",
                where,
                f"client {self.name} is read-only: {method} is not allowed (it signs or sends, "
                "or is not a read method)",
            )
        if any(fnmatch.fnmatchcase(method, p) for p in self.deny_methods):
            return PolicyDenied(
                "deny_methods", where, f"client {self.name} may not call {method} (deny_methods)"
            )
        if self.methods is not None and not _matches(method, self.methods):
            return PolicyDenied(
                "methods",
                where,
                f"client {self.name} may not call {method}: it is not in the client's methods",
            )
        return None


def _matches(method: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(method, p) for p in patterns)


@dataclass(frozen=True, slots=True)
class Scope:
    """A rule set with where it came from: "defaults", "key 0x…" or "client name"."""

    label: str
    rules: Rules


@functools.lru_cache(maxsize=1024)
def _unlisted_client(name: str) -> ClientScope:
    """The scope of a client no policy lists: immutable, so one per name is shared (building
    it, Rules included, cost more than the rest of a check)."""
    return ClientScope(name)


@dataclass(frozen=True)
class Policy:
    """The whole policy file: default rules, rules per key, scopes per client."""

    defaults: Rules = field(default_factory=Rules)
    keys: Mapping[str, Rules] = field(default_factory=dict)
    clients: Mapping[str, ClientScope] = field(default_factory=dict)
    # Replacing stuck transactions (signer_proxy.tracking): when, and up to which ceilings.
    fee_bumping: BumpPolicy = field(default_factory=BumpPolicy)
    # Rules that apply on one chain only (by the chain's name in the config's `chains:`).
    chains: Mapping[str, Rules] = field(default_factory=dict)

    def client(self, name: str) -> ClientScope:
        """The scope of `name`; a client the file does not list may do anything the rules allow."""
        return self.clients.get(name) or _unlisted_client(name)

    def scopes(self, client: str, address: str, chain: str = "default") -> list[Scope]:
        """The rule sets a signature by `address` for `client` on `chain` must pass, in check
        order."""
        scopes = [Scope("defaults", self.defaults)]
        chain_rules = self.chains.get(chain)
        if chain_rules is not None:
            scopes.append(Scope(f"chain {chain}", chain_rules))
        key_rules = self.keys.get(address.lower())
        if key_rules is not None:
            scopes.append(Scope(f"key {address}", key_rules))
        scope = self.clients.get(client)
        if scope is not None:
            scopes.append(Scope(f"client {client}", scope.rules))
        return scopes

    def cert_clients(self) -> dict[str, str]:
        """Client certificate name → client name."""
        return {n: c.name for c in self.clients.values() for n in c.client_cert_names}

    def bind(self, resolve: Callable[[str], str | None]) -> Policy:
        """This policy with every key reference turned into a lower-case address by `resolve`
        (address, key ARN or --kms-key reference → address); ConfigError naming an unknown one."""

        def address(ref: str, where: str) -> str:
            found = resolve(ref)
            if found is None:
                raise ConfigError(
                    f"policy file: {where} names the key {ref!r}, which is not a loaded key; "
                    "name keys by address, key ARN or exactly as given in --kms-key"
                )
            return found.lower()

        keys = {address(ref, f"keys.{ref}"): rules for ref, rules in self.keys.items()}
        clients = {
            name: replace(
                scope,
                keys=None
                if scope.keys is None
                else tuple(address(ref, f"clients.{name}.keys") for ref in scope.keys),
            )
            for name, scope in self.clients.items()
        }
        return Policy(self.defaults, keys, clients, self.fee_bumping, self.chains)

    def check_chains(self, served: Iterable[str]) -> None:
        """ConfigError when the policy names a chain the proxy does not serve (a typo would
        otherwise scope a client to nothing, or a rule to no chain, silently)."""
        names = set(served)
        named = [(f"chains.{c}", c) for c in self.chains] + [
            (f"clients.{s.name}.chains", c) for s in self.clients.values() for c in s.chains or ()
        ]
        for where, chain in named:
            if chain not in names:
                raise ConfigError(
                    f"policy file: {where} names the chain {chain!r}, which is not served; the "
                    f"chains are {', '.join(sorted(names))}"
                )


# --- checks --------------------------------------------------------------------------------


def key_denial(scope: ClientScope, address: str) -> PolicyDenied | None:
    """Why `scope`'s client may not sign with `address`, or None."""
    if scope.keys is not None and address.lower() not in scope.keys:
        return PolicyDenied(
            "keys",
            f"client {scope.name}",
            f"client {scope.name} may not sign with {address}; its keys are "
            f"{', '.join(scope.keys) or 'none'}",
        )
    return None


def _deny(rule: str, scope: Scope, message: str) -> PolicyDenied:
    return PolicyDenied(rule, scope.label, f"policy rule {rule} ({scope.label}) refused: {message}")


def transaction_denial(scopes: Iterable[Scope], tx: UnsignedTx) -> PolicyDenied | None:
    """The first rule a filled transaction breaks, or None (the daily budget is not checked
    here: it needs the budget store)."""
    for scope in scopes:
        denial = _transaction_denial(scope, tx)
        if denial is not None:
            return denial
    return None


def _transaction_denial(scope: Scope, tx: UnsignedTx) -> PolicyDenied | None:
    r = scope.rules
    if r.chain_ids is not None and tx.chain_id not in r.chain_ids:
        allowed = ", ".join(map(str, sorted(r.chain_ids)))
        return _deny("chain_ids", scope, f"chain id {tx.chain_id} is not one of {allowed}")
    if tx.to is None:
        if not r.contract_creation:
            return _deny("contract_creation", scope, "contract creation is not allowed")
    else:
        if tx.to.lower() in r.to_denylist:
            return _deny("to_denylist", scope, f"{tx.to} is on the deny list")
        if r.to_allowlist is not None and tx.to.lower() not in r.to_allowlist:
            return _deny("to_allowlist", scope, f"{tx.to} is not on the allow list")
    if r.max_value is not None and tx.value > r.max_value:
        return _deny(
            "max_value",
            scope,
            f"value {format_wei(tx.value)} is over the limit {format_wei(r.max_value)}",
        )
    if r.max_gas is not None and tx.gas > r.max_gas:
        return _deny("max_gas", scope, f"gas {tx.gas} is over the limit {r.max_gas}")
    fee = tx.max_fee_per_gas if tx.type in DYNAMIC_FEE_TYPES else tx.gas_price
    if r.max_fee_per_gas is not None and fee > r.max_fee_per_gas:
        return _deny(
            "max_fee_per_gas",
            scope,
            f"fee per gas {format_wei(fee)} is over the limit {format_wei(r.max_fee_per_gas)}",
        )
    if (
        r.max_priority_fee_per_gas is not None
        and tx.type in DYNAMIC_FEE_TYPES
        and tx.max_priority_fee_per_gas > r.max_priority_fee_per_gas
    ):
        return _deny(
            "max_priority_fee_per_gas",
            scope,
            f"priority fee {format_wei(tx.max_priority_fee_per_gas)} is over the limit "
            f"{format_wei(r.max_priority_fee_per_gas)}",
        )
    # A plain transfer (no calldata) calls no function; creations run init code, not a selector.
    calls_function = tx.to is not None and bool(tx.data)
    if r.selectors is not None and calls_function and tx.data[:4] not in r.selectors:
        shown = to_data(tx.data[:4])
        return _deny("selectors", scope, f"function selector {shown} is not allowed")
    return None


def message_denial(scopes: Iterable[Scope], chain_id: int | None) -> PolicyDenied | None:
    """Message signing (EIP-191, EIP-712) allowed? `chain_id`: typed data's domain.chainId."""
    for scope in scopes:
        if not scope.rules.message_signing:
            return _deny("message_signing", scope, "message signing is switched off")
        ids = scope.rules.chain_ids
        if chain_id is not None and ids is not None and chain_id not in ids:
            allowed = ", ".join(map(str, sorted(ids)))
            return _deny(
                "chain_ids", scope, f"typed data domain.chainId {chain_id} is not one of {allowed}"
            )
    return None


def authorization_denial(scopes: Iterable[Scope], chain_id: int) -> PolicyDenied | None:
    """An EIP-7702 authorization allowed? Chain id 0 (any chain) passes no chain_ids rule."""
    for scope in scopes:
        if not scope.rules.authorization_signing:
            return _deny(
                "authorization_signing", scope, "EIP-7702 authorization signing is switched off"
            )
        ids = scope.rules.chain_ids
        if ids is not None and chain_id not in ids:
            allowed = ", ".join(map(str, sorted(ids)))
            what = "0 (valid on every chain)" if chain_id == 0 else str(chain_id)
            return _deny(
                "chain_ids", scope, f"authorization chain id {what} is not one of {allowed}"
            )
    return None


# --- the policy file -----------------------------------------------------------------------

_CLIENT_FIELDS = (
    "keys", "methods", "deny_methods", "read_only", "rate_limit", "client_cert_names", "rules",
    "chains",
)  # fmt: skip


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a mapping")
    return value


def _known(value: dict[str, Any], known: Iterable[str], where: str) -> None:
    unknown = sorted(str(k) for k in set(value) - set(known))
    if unknown:
        raise ConfigError(
            f"{where} has unknown entries {', '.join(unknown)}; known: {', '.join(known)}"
        )


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where} must be a list of strings")
    return tuple(value)


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where} must be true or false")
    return value


def _addresses(value: Any, where: str) -> frozenset[str]:
    items = _strings(value, where)
    for item in items:
        if not _ADDRESS_RE.match(item):
            raise ConfigError(f"{where}: {item!r} is not a 0x address of 40 hex digits")
    return frozenset(a.lower() for a in items)


def parse_rules(value: Any, where: str) -> Rules:
    """A rule set from its YAML mapping; ConfigError naming the rule that is wrong."""
    raw = _mapping(value, where)
    _known(raw, RULE_NAMES, where)
    out: dict[str, Any] = {}
    for name, item in raw.items():
        at = f"{where}.{name}"
        if name == "chain_ids":
            if not isinstance(item, list) or not all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in item
            ):
                raise ConfigError(f"{at} must be a list of chain ids (integers)")
            out[name] = frozenset(item)
        elif name in ("to_allowlist", "to_denylist"):
            out[name] = _addresses(item, at)
        elif name in ("contract_creation", "message_signing", "authorization_signing"):
            out[name] = _bool(item, at)
        elif name == "max_gas":
            if not isinstance(item, int) or isinstance(item, bool) or item < 0:
                raise ConfigError(f"{at} must be a whole number of gas")
            out[name] = item
        elif name == "selectors":
            out[name] = frozenset(
                parse_selector(s, f"{at}[{i}]") for i, s in enumerate(_strings(item, at))
            )
        else:
            out[name] = parse_amount(item, at)
    return Rules(**out)


def _rate_limit(value: Any, where: str) -> RateLimit:
    raw = _mapping(value, where)
    _known(raw, ("per_second", "burst"), where)
    per_second = raw.get("per_second")
    if not isinstance(per_second, int | float) or isinstance(per_second, bool) or per_second <= 0:
        raise ConfigError(f"{where}.per_second must be a positive number of calls per second")
    burst = raw.get("burst", max(1, int(per_second)))
    if not isinstance(burst, int) or isinstance(burst, bool) or burst < 1:
        raise ConfigError(f"{where}.burst must be a whole number of calls, at least 1")
    return RateLimit(float(per_second), burst)


def parse_client(name: str, value: Any, where: str) -> ClientScope:
    raw = _mapping(value, where)
    _known(raw, _CLIENT_FIELDS, where)
    if not CLIENT_NAME_RE.match(name):
        raise ConfigError(
            f"{where}: {name!r} is not a valid client name (letters, digits, ._@- and at most "
            "64 characters)"
        )
    return ClientScope(
        name=name,
        keys=None if raw.get("keys") is None else _strings(raw["keys"], f"{where}.keys"),
        methods=None
        if raw.get("methods") is None
        else _strings(raw["methods"], f"{where}.methods"),
        deny_methods=_strings(raw.get("deny_methods", []), f"{where}.deny_methods"),
        read_only=_bool(raw.get("read_only", False), f"{where}.read_only"),
        rate_limit=None
        if raw.get("rate_limit") is None
        else _rate_limit(raw["rate_limit"], f"{where}.rate_limit"),
        client_cert_names=_strings(raw.get("client_cert_names", []), f"{where}.client_cert_names"),
        rules=parse_rules(raw.get("rules"), f"{where}.rules"),
        chains=None if raw.get("chains") is None else _strings(raw["chains"], f"{where}.chains"),
    )


def parse_policy(value: Any, where: str = "policy file") -> Policy:
    """The policy from the YAML document's mapping; ConfigError naming the entry that is wrong."""
    raw = _mapping(value, where)
    _known(raw, ("defaults", "keys", "clients", "fee_bumping", "chains"), where)
    keys = {
        str(ref): parse_rules(rules, f"{where}: keys.{ref}")
        for ref, rules in _mapping(raw.get("keys"), f"{where}: keys").items()
    }
    clients = {
        str(name): parse_client(str(name), scope, f"{where}: clients.{name}")
        for name, scope in _mapping(raw.get("clients"), f"{where}: clients").items()
    }
    seen: dict[str, str] = {}
    for scope in clients.values():
        for cert_name in scope.client_cert_names:
            if cert_name in seen:
                raise ConfigError(
                    f"{where}: the certificate name {cert_name!r} is mapped to both "
                    f"{seen[cert_name]} and {scope.name}"
                )
            seen[cert_name] = scope.name
    return Policy(
        parse_rules(raw.get("defaults"), f"{where}: defaults"),
        keys,
        clients,
        parse_fee_bumping(raw.get("fee_bumping"), f"{where}: fee_bumping"),
        {
            str(name): parse_rules(rules, f"{where}: chains.{name}")
            for name, rules in _mapping(raw.get("chains"), f"{where}: chains").items()
        },
    )


_BUMP_COUNTS = ("after_blocks", "min_bump_percent", "blob_min_bump_percent", "max_bumps")
_BUMP_AMOUNTS = (
    "max_fee_per_gas", "max_fee_per_blob_gas", "max_extra_cost_per_tx", "max_extra_cost_per_day",
)  # fmt: skip


def parse_fee_bumping(value: Any, where: str) -> BumpPolicy:
    """The fee_bumping section (off, with geth's bump rules, when absent)."""
    raw = _mapping(value, where)
    _known(raw, ("enabled", "after_seconds", *_BUMP_COUNTS, *_BUMP_AMOUNTS), where)
    out: dict[str, Any] = {}
    for name, item in raw.items():
        at = f"{where}.{name}"
        if name == "enabled":
            out[name] = _bool(item, at)
        elif name == "after_seconds":
            if not isinstance(item, int | float) or isinstance(item, bool) or item <= 0:
                raise ConfigError(f"{at} must be a positive number of seconds")
            out[name] = float(item)
        elif name in _BUMP_COUNTS:
            if not isinstance(item, int) or isinstance(item, bool) or item < 1:
                raise ConfigError(f"{at} must be a whole number, at least 1")
            out[name] = item
        else:
            out[name] = parse_amount(item, at)
    return BumpPolicy(**out)


def load_policy(path: str) -> Policy:
    """The policy file at `path` (empty path: no rules, every client unrestricted)."""
    if not path:
        return Policy()
    try:
        loaded = yaml.load(Path(path).read_text(), Loader=HexTextLoader)
    except OSError as exc:
        raise ConfigError(f"policy file {path} cannot be read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"policy file {path} is not valid YAML: {exc}") from None
    return parse_policy(loaded, f"policy file {path}")
