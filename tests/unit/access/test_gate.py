"""gate: the guard refuses any signature outside an approval; each decision is checked,
budgeted, counted and audited exactly once, with what the audit promises to keep."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import pytest

from signer_proxy.access.budgets import MemoryBudgetStore
from signer_proxy.access.gate import GuardedSigner, SigningGate, current_approval
from signer_proxy.access.policy import ClientScope, Policy, Rules
from signer_proxy.errors import (
    AuditUnavailable,
    NodeRejected,
    PolicyDenied,
    SigningFailed,
    UpstreamTimeout,
)
from signer_proxy.eth.tx_encoding import UnsignedTx
from signer_proxy.jsonrpc import CallContext
from signer_proxy.keys.signer import sign_checked
from tests.auth_support import RecordingSigner

ETHER = 10**18
TO = "0x000000000000000000000000000000000000dEaD"
DIGEST = b"\x42" * 32
CI = CallContext(client="ci", transport="http", auth="api_key")
TX = UnsignedTx(
    type=2, chain_id=1, nonce=0, gas=21000, to=TO, value=ETHER, data=b"",
    max_fee_per_gas=10**9, max_priority_fee_per_gas=10**8,
)  # fmt: skip


class ListAudit:
    def __init__(self, fail_writes: bool = False, fail_checks: bool = False) -> None:
        self.entries: list[dict[str, Any]] = []
        self.fail_writes, self.fail_checks = fail_writes, fail_checks

    def check(self) -> None:
        if self.fail_checks:
            raise AuditUnavailable("the audit log x cannot be written")

    def write(self, entry: Mapping[str, Any]) -> None:
        if self.fail_writes:
            raise AuditUnavailable("the audit log x cannot be written")
        self.entries.append(dict(entry))


class Setup:
    def resolve(self, ref: str) -> str | None:
        """The name "k" is this setup's key; an address names itself."""
        return self.inner.address if ref == "k" else (ref if ref.startswith("0x") else None)

    def __init__(self, policy: Policy | None = None, audit: ListAudit | None = None) -> None:
        self.inner = RecordingSigner(b"\x07" * 32, "arn:aws:kms:us-east-1:1:key/k")
        self.signer = GuardedSigner(self.inner)
        self.audit = audit or ListAudit()
        self.denials: list[str] = []
        self.budgets = MemoryBudgetStore()
        self.gate = SigningGate(
            (policy or Policy()).bind(self.resolve),
            self.budgets,
            self.audit,
            self.denials.append,
            clock=lambda: 1_767_225_600.0,  # 2026-01-01T00:00:00Z
        )


async def test_guarded_signer_refuses_outside_an_approval() -> None:
    s = Setup()
    with pytest.raises(SigningFailed, match="without a policy decision; nothing was signed"):
        await s.signer.sign_digest(DIGEST)
    assert s.inner.records == []


async def test_guarded_signer_signs_inside_the_approval_only() -> None:
    s = Setup()
    async with s.gate.transaction(CI, "eth_sendTransaction", s.signer, TX):
        approval = current_approval()
        await sign_checked(s.signer, DIGEST)
    assert approval is not None and (approval.client, approval.address) == ("ci", s.inner.address)
    assert current_approval() is None  # gone after the block
    with pytest.raises(SigningFailed):
        await s.signer.sign_digest(DIGEST)
    assert [r.approval for r in s.inner.records] == [approval]


async def test_an_approval_is_for_its_own_key_only() -> None:
    s = Setup()
    other = GuardedSigner(RecordingSigner(b"\x08" * 32))
    async with s.gate.transaction(CI, "eth_sendTransaction", s.signer, TX):
        with pytest.raises(SigningFailed):
            await other.sign_digest(DIGEST)


async def test_an_approval_does_not_leak_into_other_tasks() -> None:
    s = Setup()
    inside = asyncio.Event()
    release = asyncio.Event()

    async def approved() -> None:
        async with s.gate.transaction(CI, "eth_sendTransaction", s.signer, TX):
            inside.set()
            await release.wait()

    task = asyncio.create_task(approved())
    await inside.wait()
    with pytest.raises(SigningFailed):  # a concurrent call has no approval of its own
        await s.signer.sign_digest(DIGEST)
    release.set()
    await task


async def test_allowed_transaction_is_audited_with_its_result() -> None:
    s = Setup()
    async with s.gate.transaction(CI, "eth_sendTransaction", s.signer, TX) as decision:
        decision.signed_transaction(b"\xab" * 32, 7)

    [entry] = s.audit.entries
    assert entry == {
        "time": "2026-01-01T00:00:00.000+00:00",
        "request_id": "-",
        "client": "ci",
        "auth": "api_key",
        "transport": "http",
        "chain": "default",
        "method": "eth_sendTransaction",
        "from": s.inner.address,
        "key": "arn:aws:kms:us-east-1:1:key/k",
        "chain_id": 1,
        "type": 2,
        "to": TO,
        "value": str(ETHER),
        "gas": 21000,
        "max_fee_per_gas": str(10**9),
        "selector": None,
        "data_bytes": 0,
        "outcome": "allowed",
        "nonce": 7,
        "tx_hash": "0x" + "ab" * 32,
        "result": "ok",
    }
    assert s.denials == []


async def test_denied_transaction_is_refused_audited_and_counted_before_any_signature() -> None:
    s = Setup(Policy(keys={"k": Rules(max_value=ETHER - 1)}))

    with pytest.raises(PolicyDenied) as refused:
        async with s.gate.transaction(CI, "eth_sendTransaction", s.signer, TX):
            raise AssertionError("the block must not run")

    assert refused.value.rule == "max_value"
    assert refused.value.scope == f"key {s.inner.address}"
    [entry] = s.audit.entries
    assert entry["outcome"] == "denied"
    assert entry["rule"] == "max_value"
    assert entry["result"] == "refused"
    assert entry["error"]["code"] == -32043
    assert s.denials == ["eth_sendTransaction"]
    assert s.inner.records == []


async def test_client_may_not_use_a_key_outside_its_scope() -> None:
    s = Setup(Policy(clients={"ci": ClientScope("ci", keys=("0x" + "11" * 20,))}))
    with pytest.raises(PolicyDenied, match="may not sign with"):
        s.gate.check_key(CI, "eth_sendTransaction", s.signer)
    with pytest.raises(PolicyDenied) as refused:
        async with s.gate.transaction(CI, "eth_sendTransaction", s.signer, TX):
            pass
    assert refused.value.rule == "keys"
    assert [e["rule"] for e in s.audit.entries] == ["keys", "keys"]


async def test_daily_budget_spent_across_calls_and_refused_when_over() -> None:
    s = Setup(Policy(defaults=Rules(daily_value_budget=2 * ETHER)))
    for _ in range(2):
        async with s.gate.transaction(CI, "eth_sendTransaction", s.signer, TX):
            pass
    with pytest.raises(PolicyDenied) as refused:
        async with s.gate.transaction(CI, "eth_sendTransaction", s.signer, TX):
            pass
    assert refused.value.rule == "daily_value_budget"
    assert "2026-01-01 (UTC)" in refused.value.message
    # A zero-value call still fits: the budget is about value.
    async with s.gate.transaction(CI, "eth_sendTransaction", s.signer, replace(TX, value=0)):
        pass


@pytest.mark.parametrize(
    ("error", "refunded"),
    [
        pytest.param(SigningFailed("KMS key x: DisabledException"), True, id="kms-refused"),
        pytest.param(NodeRejected(-32000, "insufficient funds"), True, id="node-refused"),
        pytest.param(
            UpstreamTimeout("no answer", {"txHash": "0x" + "cd" * 32, "nonce": "0x3"}),
            False,
            id="timeout-may-be-mined",
        ),
        pytest.param(asyncio.CancelledError(), False, id="cancelled-mid-send"),
    ],
)
async def test_budget_refunded_only_when_nothing_went_out(
    error: BaseException, refunded: bool
) -> None:
    s = Setup(Policy(defaults=Rules(daily_value_budget=ETHER)))

    with pytest.raises(type(error)):
        async with s.gate.transaction(CI, "eth_sendTransaction", s.signer, TX):
            raise error

    [entry] = s.audit.entries
    assert entry["outcome"] == "allowed"
    assert entry["result"] == "error"
    if isinstance(error, UpstreamTimeout):
        assert entry["tx_hash"] == "0x" + "cd" * 32
        assert entry["error"]["code"] == -32020
    fits_again = True
    try:
        async with s.gate.transaction(CI, "eth_sendTransaction", s.signer, TX):
            pass
    except PolicyDenied:
        fits_again = False
    assert fits_again is refunded


async def test_budget_refused_in_one_scope_is_not_spent_in_another() -> None:
    s = Setup(
        Policy(
            defaults=Rules(daily_value_budget=10 * ETHER),
            clients={"ci": ClientScope("ci", rules=Rules(daily_value_budget=ETHER))},
        )
    )
    async with s.gate.transaction(CI, "eth_sendTransaction", s.signer, TX):
        pass
    with pytest.raises(PolicyDenied, match="client ci"):
        async with s.gate.transaction(CI, "eth_sendTransaction", s.signer, TX):
            pass
    other = CallContext(client="other")
    for _ in range(9):  # the defaults' budget was charged once, not twice
        async with s.gate.transaction(other, "eth_sendTransaction", s.signer, TX):
            pass


async def test_an_unwritable_audit_log_refuses_before_anything_is_signed() -> None:
    s = Setup(audit=ListAudit(fail_checks=True))
    with pytest.raises(AuditUnavailable):
        async with s.gate.transaction(CI, "eth_sendTransaction", s.signer, TX):
            await s.signer.sign_digest(DIGEST)
    assert s.inner.records == []


async def test_a_failed_audit_write_after_sending_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    s = Setup(audit=ListAudit(fail_writes=True))
    with caplog.at_level(logging.ERROR, logger="signer_proxy.access.gate"):
        async with s.gate.transaction(CI, "eth_sendTransaction", s.signer, TX) as decision:
            decision.signed_transaction(b"\xee" * 32, 1)
    assert "0x" + "ee" * 32 in caplog.text  # the decision survives in the server log


async def test_message_decisions_keep_the_digest_and_details_not_the_message() -> None:
    s = Setup(Policy(clients={"off": ClientScope("off", rules=Rules(message_signing=False))}))
    details = {"message_bytes": 5}
    async with s.gate.message(CI, "personal_sign", s.signer, DIGEST, None, details):
        await s.signer.sign_digest(DIGEST)
    with pytest.raises(PolicyDenied) as refused:
        async with s.gate.message(CallContext(client="off"), "eth_sign", s.signer, DIGEST):
            pass

    assert refused.value.rule == "message_signing"
    ok, denied = s.audit.entries
    assert ok["digest"] == "0x" + "42" * 32
    assert ok["message_bytes"] == 5
    assert (ok["outcome"], ok["result"]) == ("allowed", "ok")
    assert (denied["outcome"], denied["rule"]) == ("denied", "message_signing")


async def test_authorization_decisions_check_their_chain() -> None:
    s = Setup(Policy(defaults=Rules(chain_ids=frozenset({1}))))
    async with s.gate.authorization(CI, s.signer, 1, TO, 0, DIGEST):
        await s.signer.sign_digest(DIGEST)
    with pytest.raises(PolicyDenied, match="valid on every chain"):
        async with s.gate.authorization(CI, s.signer, 0, TO, 0, DIGEST):
            pass
    assert [e["outcome"] for e in s.audit.entries] == ["allowed", "denied"]
    assert s.audit.entries[0]["to"] == TO


async def test_an_operator_signature_is_audited_and_refused_while_the_audit_log_is_down() -> None:
    s = Setup()
    async with s.gate.by_operator("hedera-sign", s.signer, {"digest": "0x42", "bytes": 2}):
        await s.signer.sign_digest(DIGEST)  # the guarded signer: approved inside
    (entry,) = s.audit.entries
    assert (entry["client"], entry["transport"], entry["auth"]) == ("operator-cli", "cli", "cli")
    assert (entry["method"], entry["outcome"], entry["result"]) == ("hedera-sign", "allowed", "ok")
    assert (entry["digest"], entry["bytes"]) == ("0x42", 2)

    down = Setup(audit=ListAudit(fail_checks=True))
    with pytest.raises(AuditUnavailable):
        async with down.gate.by_operator("hedera-sign", down.signer, {}):
            await down.signer.sign_digest(DIGEST)
    assert down.inner.records == []


def test_call_denial_audits_refused_signing_methods_only() -> None:
    s = Setup(Policy(clients={"ro": ClientScope("ro", read_only=True)}))
    ro = CallContext(client="ro")

    assert s.gate.call_denial("eth_getBalance", ro) is None
    forwarded = s.gate.call_denial("eth_sendRawTransaction", ro)
    local = s.gate.call_denial("eth_sendTransaction", ro)

    assert forwarded is not None and local is not None
    assert [e["method"] for e in s.audit.entries] == ["eth_sendTransaction"]
    assert s.denials == ["eth_sendTransaction"]
    assert s.gate.call_denial("eth_sendTransaction", CI) is None


def test_visible_accounts_follow_the_client_scope() -> None:
    a, b = "0x" + "aa" * 20, "0x" + "Bb" * 20
    s = Setup(Policy(clients={"ci": ClientScope("ci", keys=(b.lower(),))}))
    assert s.gate.visible_accounts("ci", [a, b]) == [b]
    assert s.gate.visible_accounts("other", [a, b]) == [a, b]


async def test_the_method_scope_is_checked_again_at_the_signature() -> None:
    """Even a path that skipped the router's call gate cannot sign for a read-only client."""
    s = Setup(Policy(clients={"ro": ClientScope("ro", read_only=True)}))
    with pytest.raises(PolicyDenied) as refused:
        async with s.gate.transaction(
            CallContext(client="ro"), "eth_sendTransaction", s.signer, TX
        ):
            pass
    assert refused.value.rule == "read_only"
    assert s.inner.records == []


def test_policy_names_keys_by_address_arn_or_as_given_in_kms_key() -> None:
    from signer_proxy.access.key_names import key_resolver
    from signer_proxy.keys.aws_kms import KmsKeyInfo, KmsSigner
    from signer_proxy.keys.local import LocalKeySigner

    arn = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    kms = KmsSigner(None, KmsKeyInfo("alias/treasury", arn, b"", TO))
    local = LocalKeySigner(b"\x07" * 32, "local-name")
    resolve = key_resolver([kms, local])

    assert resolve("alias/treasury") == TO
    assert resolve(arn) == TO
    assert resolve(TO.lower()) == TO
    assert resolve(local.address.upper().replace("0X", "0x")) == local.address
    assert resolve("local-name") == local.address
    assert resolve("alias/other") is None
