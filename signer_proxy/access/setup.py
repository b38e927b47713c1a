"""Building the door's authenticator and the signing gate from the settings and the policy."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from signer_proxy.access.audit import AuditLog, StreamAuditLog, open_audit_log
from signer_proxy.access.auth import Authenticator, load_api_keys
from signer_proxy.access.budgets import BudgetStore
from signer_proxy.access.gate import SigningGate
from signer_proxy.access.key_names import key_resolver
from signer_proxy.access.policy import Policy, RateLimit, load_policy
from signer_proxy.config import Settings
from signer_proxy.errors import ConfigError
from signer_proxy.keys.signer import Signer
from signer_proxy.ops.metrics import Metrics, method_family

log = logging.getLogger(__name__)


def build_gate(
    policy: Policy,
    resolve: Callable[[str], str | None],
    budgets: BudgetStore,
    audit: AuditLog,
    metrics: Metrics,
) -> SigningGate:
    """The policy bound to the loaded keys, counting refusals in `metrics`."""

    def count_denial(method: str) -> None:
        metrics.policy_denials.labels(method_family(method, True)).inc()

    return SigningGate(policy.bind(resolve), budgets, audit, count_denial)


@contextmanager
def operator_gate(settings: Settings, signer: Signer) -> Iterator[SigningGate]:
    """The gate for a signature made from the command line with `signer`: the policy file's
    rules (the references to other keys, which this process did not load, match nothing) and
    the audit log the settings name, so that a signature made by hand is checked and recorded
    as one made by `serve`. The log is appended to and never rotated (the server rotates
    it); "-" writes to stderr, since stdout carries the command's answer."""
    known = key_resolver([signer])
    policy = load_policy(settings.policy_file).bind(lambda ref: known(ref) or ref)
    path = settings.audit_log
    try:
        audit = StreamAuditLog(sys.stderr) if path == "-" else open_audit_log(path, 0, 0)
    except OSError as exc:
        raise ConfigError(
            f"--audit-log {path} cannot be opened for appending: {exc.strerror}"
        ) from None
    try:
        yield SigningGate(policy, audit=audit)
    finally:
        close = getattr(audit, "close", None)
        if close is not None:
            close()


def rate_limits(policy: Policy) -> dict[str, RateLimit]:
    """Each client's rate limit that the policy sets."""
    return {name: c.rate_limit for name, c in policy.clients.items() if c.rate_limit}


def build_authenticator(settings: Settings, policy: Policy) -> Authenticator:
    api_keys = load_api_keys(settings.api_keys_file) if settings.api_keys_file else {}
    authenticator = Authenticator(
        api_keys,
        policy.cert_clients(),
        required=settings.auth_configured,
        allow_query_key=settings.allow_api_key_in_query,
    )
    if authenticator.required:
        log.info(
            "authentication on: %d client(s) with API keys%s%s",
            len(api_keys),
            ", client certificates" if settings.tls_client_ca_file else "",
            ", ?key= accepted" if settings.allow_api_key_in_query else "",
        )
        silent = sorted(set(policy.clients) - authenticator.clients - {"anonymous"})
        if silent:
            log.warning(
                "policy file clients with no API key and no certificate name cannot "
                "authenticate: %s",
                ", ".join(silent),
            )
        if not authenticator.clients:
            log.warning("authentication is on but no client can authenticate: every call gets 401")
    return authenticator
