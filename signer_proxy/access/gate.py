"""The one gate before every signature: client scope, policy rules, daily budgets, audit.

A method asks the gate, in an `async with`, before it signs: the gate refuses (PolicyDenied,
audited, counted) or approves, and the approval lives in a context variable for exactly the
block in which the method signs. Every key in the registry is wrapped in a `GuardedSigner`,
which refuses any digest signed outside such a block: so "nothing reaches KMS without passing
the policy" holds by construction, not by each method's care. When the block ends, the gate
writes the decision's audit line (outcome and result), before the method's reply goes out.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Any

from signer_proxy.access.audit import AuditLog, NullAuditLog, utc_timestamp
from signer_proxy.access.budgets import BudgetStore, MemoryBudgetStore, budget_key, utc_day
from signer_proxy.access.policy import (
    SIGNING_METHODS,
    ClientScope,
    Policy,
    Scope,
    authorization_denial,
    format_wei,
    key_denial,
    message_denial,
    transaction_denial,
)
from signer_proxy.errors import (
    AuditUnavailable,
    PolicyDenied,
    SignerProxyError,
    SigningFailed,
    UpstreamTimeout,
)
from signer_proxy.eth.ecdsa import Signature
from signer_proxy.eth.hexdata import to_data
from signer_proxy.eth.tx_encoding import UnsignedTx
from signer_proxy.jsonrpc import CallContext
from signer_proxy.keys.signer import Signer, SignerWrapper
from signer_proxy.ops import tracing
from signer_proxy.ops.logs import REQUEST_ID

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Approval:
    """The gate's yes: `client` may have `address` sign, inside one method call."""

    client: str
    method: str
    address: str


_APPROVAL: ContextVar[Approval | None] = ContextVar("signing_approval", default=None)


def current_approval() -> Approval | None:
    """The approval in force for the running call (None outside a gate block)."""
    return _APPROVAL.get()


class GuardedSigner(SignerWrapper):
    """A Signer that signs only inside a gate approval for its own address."""

    async def sign_digest(self, digest: bytes) -> Signature:
        approval = _APPROVAL.get()
        if approval is None or approval.address.lower() != self.address.lower():
            log.error(
                "refused to sign with %s: no policy approval for this key in this call",
                self.address,
            )
            raise SigningFailed(
                "internal error: a signature was asked for without a policy decision; "
                "nothing was signed (the server log has the details)"
            )
        return await self._inner.sign_digest(digest)


@dataclass
class Decision:
    """An approved signing decision in progress; the method notes what it produced."""

    entry: dict[str, Any]

    def signed_transaction(self, tx_hash: bytes, nonce: int) -> None:
        self.entry["nonce"] = nonce
        self.entry["tx_hash"] = to_data(tx_hash)

    def failed(self, error: SignerProxyError) -> None:
        """What went wrong when the signer handled it without raising (a filler the node
        refused): the audit line says "error", not "ok"."""
        self.entry["result"] = "error"
        self.entry["error"] = {"code": error.error_code(), "message": error.message[:300]}


# What counts each refusal: metrics.policy_denials.labels(family).inc(), family of the method.
DenialCounter = Callable[[str], None]


# The client name the audit gives to what the proxy signs on its own (gap fillers).
PROXY_CLIENT = "signer-proxy"
# Who the audit names for a signature made from the command line (sign-authorization,
# hedera-sign): the operator holding the key service's credentials, not a client.
OPERATOR_CLIENT = "operator-cli"
OPERATOR = CallContext(client=OPERATOR_CLIENT, auth="cli", transport="cli")


def _tx_fields(tx: UnsignedTx) -> dict[str, Any]:
    """What the audit keeps of a transaction."""
    return {
        "chain_id": tx.chain_id,
        "type": tx.type,
        "to": tx.to,
        "value": str(tx.value),
        "gas": tx.gas,
        "max_fee_per_gas": str(tx.max_fee_per_gas if tx.type >= 2 else tx.gas_price),
        "selector": to_data(tx.data[:4]) if tx.to is not None and len(tx.data) >= 4 else None,
        "data_bytes": len(tx.data),
    }


class SigningGate:
    """Checks every signature against the client's scope and the policy; audits each decision."""

    def __init__(
        self,
        policy: Policy | None = None,
        budgets: BudgetStore | None = None,
        audit: AuditLog | None = None,
        count_denial: DenialCounter | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.policy = policy or Policy()
        self._budgets = budgets or MemoryBudgetStore()
        self._audit = audit or NullAuditLog()
        self._count_denial = count_denial
        self._clock = clock

    # -- scope: which methods and keys a client may use --

    def client_scope(self, client: str) -> ClientScope:
        return self.policy.client(client)

    def visible_accounts(self, client: str, addresses: Iterable[str]) -> list[str]:
        """The addresses `client` may sign with, in the registry's order."""
        keys = self.client_scope(client).keys
        return [a for a in addresses if keys is None or a.lower() in keys]

    def call_denial(self, method: str, context: CallContext) -> PolicyDenied | None:
        """Why `context.client` may not call `method` at all (any method, local or forwarded),
        or on this chain."""
        scope = self.client_scope(context.client)
        denial = scope.chain_denial(context.chain) or scope.method_denial(method)
        if denial is not None and method in SIGNING_METHODS:
            self._refused(self._entry(context, method), denial)
        return denial

    # -- the decisions --

    def _entry(
        self, context: CallContext, method: str, signer: Signer | None = None
    ) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "time": utc_timestamp(self._clock()),
            "request_id": REQUEST_ID.get(),
            "client": context.client,
            "auth": context.auth,
            "transport": context.transport,
            "chain": context.chain,
            "method": method,
        }
        if signer is not None:
            entry["from"] = signer.address
            entry["key"] = signer.key_name
        return entry

    def _write(self, entry: Mapping[str, Any]) -> None:
        try:
            self._audit.write(entry)
        except AuditUnavailable as exc:
            # The decision is made (a transaction may be on its way): keep the line in the
            # server log instead, and refuse new signatures until the audit log works again.
            log.error("%s; the decision was: %s", exc.message, dict(entry))

    def _refused(self, entry: dict[str, Any], denial: PolicyDenied) -> None:
        entry.update(
            outcome="denied", rule=denial.rule, scope=denial.scope, result="refused",
            error={"code": denial.code, "message": denial.message},
        )  # fmt: skip
        log.warning("%s refused for client %s: %s", entry["method"], entry["client"], denial)
        if self._count_denial is not None:
            self._count_denial(entry["method"])
        self._write(entry)

    def check_key(self, context: CallContext, method: str, signer: Signer) -> None:
        """PolicyDenied (audited) when the client may not sign with this key at all; early, so
        a refused client costs no node queries."""
        denial = key_denial(self.client_scope(context.client), signer.address)
        if denial is not None:
            self._refused(self._entry(context, method, signer), denial)
            raise denial

    async def _spend(
        self, scopes: list[Scope], address: str, value: int
    ) -> tuple[list[tuple[str, int]], PolicyDenied | None]:
        """Charge `value` to every daily budget that applies; all or none."""
        day = ""  # worked out for the first budget only: most rule sets have none
        held: list[tuple[str, int]] = []
        for scope in scopes:
            limit = scope.rules.daily_value_budget
            if limit is None:
                continue
            day = day or utc_day(self._clock())
            key = budget_key(scope.label, address, day)
            if not await self._budgets.spend(key, value, limit):
                await self._refund(held)
                return [], PolicyDenied(
                    "daily_value_budget",
                    scope.label,
                    f"policy rule daily_value_budget ({scope.label}) refused: {address} would "
                    f"go over its budget of {format_wei(limit)} for {day} (UTC) with "
                    f"{format_wei(value)} more",
                )
            held.append((key, value))
        return held, None

    async def _refund(self, held: list[tuple[str, int]]) -> None:
        for key, value in held:
            await self._budgets.refund(key, value)

    @asynccontextmanager
    async def _approved(
        self,
        entry: dict[str, Any],
        context: CallContext,
        signer: Signer,
        denial: PolicyDenied | None,
        scopes: list[Scope],
        value: int = 0,
    ) -> AsyncIterator[Decision]:
        held: list[tuple[str, int]] = []
        with tracing.span("policy gate", {"signer.address": signer.address}) as span:
            scope = self.client_scope(context.client)
            # The router refuses a method outside the client's scope before it runs; asked
            # again here so that no path to a signature (a transport, a new method) skips it.
            denial = (
                scope.chain_denial(context.chain) or scope.method_denial(entry["method"]) or denial
            )
            if denial is None:
                denial = key_denial(scope, signer.address)
            if denial is None:
                self._audit.check()  # AuditUnavailable: refuse before anything is spent
                held, denial = await self._spend(scopes, signer.address, value)
            if span is not None:
                span.set_attribute("policy.outcome", "refused" if denial else "allowed")
                if denial is not None:
                    span.set_attribute("policy.rule", denial.rule)
        if denial is not None:
            self._refused(entry, denial)
            raise denial
        decision, token = self._allowed(entry, context, signer)
        try:
            yield decision
        except BaseException as exc:
            await self._ended(entry, token, held, exc)
            raise
        await self._ended(entry, token, held, None)

    @staticmethod
    def _allowed(
        entry: dict[str, Any], context: CallContext, signer: Signer
    ) -> tuple[Decision, Token[Approval | None]]:
        """An allowed decision: its signer may sign until `_ended`."""
        entry["outcome"] = "allowed"
        token = _APPROVAL.set(Approval(context.client, entry["method"], signer.address))
        return Decision(entry), token

    async def _ended(
        self,
        entry: dict[str, Any],
        token: Token[Approval | None],
        held: list[tuple[str, int]],
        exc: BaseException | None,
    ) -> None:
        """The audit line of an allowed decision, with how it ended (`exc`: what was raised);
        value `held` in budgets is given back when nothing went out."""
        _APPROVAL.reset(token)
        if exc is None:
            entry.setdefault("result", "ok")
            self._write(entry)
            return
        if isinstance(exc, UpstreamTimeout) and isinstance(exc.data, dict):
            entry.setdefault("tx_hash", exc.data.get("txHash"))
        # Only an error that proves nothing went out gives the value back: a timeout, a
        # cancellation or a bug may have left a transaction on its way to the node.
        if isinstance(exc, SignerProxyError) and not isinstance(exc, UpstreamTimeout):
            await self._refund(held)
        entry["result"] = "error"
        if isinstance(exc, SignerProxyError):
            entry["error"] = {"code": exc.error_code(), "message": exc.message[:300]}
        else:
            entry["error"] = {"code": SignerProxyError.code, "message": type(exc).__name__}
        self._write(entry)

    def on_its_own(
        self, chain: str, signer: Signer, tx: UnsignedTx, reason: str
    ) -> AbstractAsyncContextManager[Decision]:
        """`async with gate.on_its_own(...)`: a transaction the proxy signs for itself, not for
        a client (a gap filler: a zero-value transfer from the key to itself that closes a
        nonce hole). No client's scope or rule applies, but it is audited as any signature
        (client "signer-proxy", with `reason`), and refused while the audit log is down."""
        context = CallContext(client=PROXY_CLIENT, transport="internal", chain=chain)
        entry = self._entry(context, "eth_sendTransaction", signer)
        entry.update(_tx_fields(tx), reason=reason)
        return self._unruled(entry, context, signer)

    def by_operator(
        self, method: str, signer: Signer, details: Mapping[str, Any]
    ) -> AbstractAsyncContextManager[Decision]:
        """`async with gate.by_operator(...)`: a signature the operator makes from the command
        line that no policy rule speaks to (a Hedera transaction). Audited as any signature
        (client "operator-cli", with `details`), and refused while the audit log is down."""
        entry = self._entry(OPERATOR, method, signer)
        entry.update(details)
        return self._unruled(entry, OPERATOR, signer)

    @asynccontextmanager
    async def _unruled(
        self, entry: dict[str, Any], context: CallContext, signer: Signer
    ) -> AsyncIterator[Decision]:
        self._audit.check()  # AuditUnavailable: nothing is signed unaudited
        decision, token = self._allowed(entry, context, signer)
        try:
            yield decision
        except BaseException as exc:
            await self._ended(entry, token, [], exc)
            raise
        await self._ended(entry, token, [], None)

    def transaction(
        self,
        context: CallContext,
        method: str,
        signer: Signer,
        tx: UnsignedTx,
        replaces: str | None = None,
    ) -> AbstractAsyncContextManager[Decision]:
        """`async with gate.transaction(...) as decision:` sign (and send) inside; the filled
        transaction is checked against every rule first. PolicyDenied when refused.

        `replaces`: the hash of the pending transaction this one replaces (same nonce): audited
        as its replacement, and its value not charged again (only one of them can be mined)."""
        entry = self._entry(context, method, signer)
        if replaces is not None:
            entry["replaces"] = replaces
        entry.update(_tx_fields(tx))
        scopes = self.policy.scopes(context.client, signer.address, context.chain)
        denial = transaction_denial(scopes, tx)
        value = 0 if replaces is not None else tx.value
        return self._approved(entry, context, signer, denial, scopes, value)

    def message(
        self,
        context: CallContext,
        method: str,
        signer: Signer,
        digest: bytes,
        chain_id: int | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> AbstractAsyncContextManager[Decision]:
        """`async with gate.message(...)`: an EIP-191 / EIP-712 signature over `digest`;
        `details` are what the audit keeps of the message (never the message itself)."""
        entry = self._entry(context, method, signer)
        entry.update(chain_id=chain_id, digest=to_data(digest), **(details or {}))
        scopes = self.policy.scopes(context.client, signer.address, context.chain)
        return self._approved(entry, context, signer, message_denial(scopes, chain_id), scopes)

    def authorization(
        self,
        context: CallContext,
        signer: Signer,
        chain_id: int,
        delegate: str,
        nonce: int,
        digest: bytes,
    ) -> AbstractAsyncContextManager[Decision]:
        """`async with gate.authorization(...)`: an EIP-7702 authorization by `signer`."""
        entry = self._entry(context, "signer_signAuthorization", signer)
        entry.update(chain_id=chain_id, to=delegate, nonce=nonce, digest=to_data(digest))
        scopes = self.policy.scopes(context.client, signer.address, context.chain)
        denial = authorization_denial(scopes, chain_id)
        return self._approved(entry, context, signer, denial, scopes)
