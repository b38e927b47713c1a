"""The method table: which JSON-RPC method names this proxy answers itself, and with what.

Everything not named here goes to the node (router.Router forwards it). app.py only wires:
it builds the nonce manager and the gate, and hands them here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from signer_proxy.access.gate import SigningGate
from signer_proxy.chain.fill import ChainFacts
from signer_proxy.config import Settings
from signer_proxy.eth.blobs import SidecarForm
from signer_proxy.jsonrpc import CallContext
from signer_proxy.keys import KeyRegistry
from signer_proxy.methods.accounts import AccountMethods
from signer_proxy.methods.authorizations import AuthorizationMethods
from signer_proxy.methods.messages import MessageMethods
from signer_proxy.methods.tracking import TrackingMethods
from signer_proxy.methods.transactions import TransactionMethods
from signer_proxy.nonces.base import NonceManager
from signer_proxy.tracking.tracker import Tracker
from signer_proxy.upstream.base import Upstream

# The same shape as router.Handler (named here so that methods does not import upward).
Method = Callable[[Any, CallContext], Awaitable[Any]]


def method_table(
    current: Callable[[], KeyRegistry],
    upstream: Upstream,
    nonces: NonceManager,
    facts: ChainFacts,
    settings: Settings,
    gate: SigningGate,
    tracker: Tracker | None = None,
) -> dict[str, Method]:
    """The local methods by name; `current()` is the key registry in service now; with a
    `tracker`, sends are tracked and the tracking extensions answered."""
    accounts = AccountMethods(current, gate)
    txs = TransactionMethods(
        current,
        upstream,
        nonces,
        facts,
        settings.gas_margin,
        allow_pre_eip155=settings.allow_pre_eip155,
        sidecar_form=SidecarForm(settings.blob_sidecar),
        gate=gate,
        track=tracker.track_send if tracker else None,
    )
    messages = MessageMethods(current, facts, gate)
    authorizations = AuthorizationMethods(current, upstream, facts, gate, nonces)
    methods: dict[str, Method] = {
        "eth_accounts": accounts.eth_accounts,
        "eth_requestAccounts": accounts.eth_requestAccounts,
        "eth_sendTransaction": txs.eth_sendTransaction,
        "eth_signTransaction": txs.eth_signTransaction,
        "personal_sign": messages.personal_sign,
        "eth_sign": messages.eth_sign,
        "eth_signTypedData": messages.eth_signTypedData,
        "eth_signTypedData_v3": messages.eth_signTypedData_v3,
        "eth_signTypedData_v4": messages.eth_signTypedData_v4,
        # An extension of this proxy's own (docs/signing.md): a key signs an EIP-7702
        # authorization.
        "signer_signAuthorization": authorizations.signer_signAuthorization,
    }
    if tracker is not None:  # extensions too (docs/signing.md): what became of a sent tx
        tracking = TrackingMethods(tracker, gate)
        methods["signer_getTransactionStatus"] = tracking.signer_getTransactionStatus
        methods["signer_speedUpTransaction"] = tracking.signer_speedUpTransaction
        methods["signer_cancelTransaction"] = tracking.signer_cancelTransaction
    return methods
