"""What a send's outcome does to its nonce: one decision table for every path that sends a
signed transaction (eth_sendTransaction, gap repair, rebroadcasts). Pure.

The rule that matters most: while it is unknown whether the node has a transaction, its nonce
is never signed again. A second signature at another nonce would be a second payment if the
first is mined; the client gets the ambiguous-outcome error with the hash instead.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from signer_proxy.errors import (
    NodeRejected,
    UpstreamBadResponse,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from signer_proxy.nonces.base import Lease
from signer_proxy.upstream.node_errors import SendOutcome, classify_send_error


class Delivery(enum.Enum):
    """How a send ended, as far as the proxy can tell."""

    ACCEPTED = "accepted"  # the node took it, or already had it
    REFUSED = "refused"  # the node refused the transaction itself (bad fee, funds, ...)
    NONCE_TOO_HIGH = "nonce_too_high"  # a gap below it: the nonce is unused
    NONCE_TAKEN = "nonce_taken"  # another transaction holds the nonce, and it is not ours
    NOT_DELIVERED = "not_delivered"  # the request never reached the node
    MAYBE_DELIVERED = "maybe_delivered"  # it may have arrived: timeout, lost mid-request


class NonceAction(enum.Enum):
    COMMIT = "commit"  # spent by this transaction (sent, or maybe sent)
    COMMIT_UNSENT = "commit_unsent"  # spent by someone else: never resend these bytes
    RELEASE = "release"  # unused: hand it out again


class Presence(enum.Enum):
    """Whether the node has a transaction, by hash: the lookup can fail too."""

    YES = "yes"
    NO = "no"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Decision:
    nonce: NonceAction
    resign: bool  # sign again at a fresh nonce (after a resync)


DECISIONS: dict[Delivery, Decision] = {
    Delivery.ACCEPTED: Decision(NonceAction.COMMIT, resign=False),
    Delivery.REFUSED: Decision(NonceAction.RELEASE, resign=False),
    Delivery.NONCE_TOO_HIGH: Decision(NonceAction.RELEASE, resign=True),
    Delivery.NONCE_TAKEN: Decision(NonceAction.COMMIT_UNSENT, resign=True),
    Delivery.NOT_DELIVERED: Decision(NonceAction.RELEASE, resign=False),
    Delivery.MAYBE_DELIVERED: Decision(NonceAction.COMMIT, resign=False),
}

_BY_NODE_OUTCOME = {
    SendOutcome.ALREADY_KNOWN: Delivery.ACCEPTED,
    SendOutcome.REJECTED: Delivery.REFUSED,
    SendOutcome.NONCE_TOO_HIGH: Delivery.NONCE_TOO_HIGH,
    SendOutcome.NONCE_TOO_LOW: Delivery.NONCE_TAKEN,
    SendOutcome.NONCE_IN_USE: Delivery.NONCE_TAKEN,
}


def delivery_of(exc: BaseException | None) -> Delivery:
    """The delivery a send's exception (None: it returned) stands for."""
    if exc is None:
        return Delivery.ACCEPTED
    if isinstance(exc, NodeRejected):
        return _BY_NODE_OUTCOME[classify_send_error(exc.message)]
    if isinstance(exc, UpstreamUnavailable):
        return Delivery.NOT_DELIVERED
    if isinstance(exc, UpstreamTimeout | UpstreamBadResponse):
        return Delivery.MAYBE_DELIVERED  # a gateway's 502 may have passed it on
    return Delivery.MAYBE_DELIVERED  # anything else once bytes may have left


def after_lookup(refusal: Delivery, presence: Presence) -> Delivery:
    """A resend after a maybe-delivered send was refused (`refusal`): what the node's answer
    to "do you have our transaction?" makes of it. Unknown stays maybe-delivered."""
    if presence is Presence.YES:
        return Delivery.ACCEPTED  # "nonce too low" for our own transaction, mined or pooled
    if presence is Presence.UNKNOWN:
        return Delivery.MAYBE_DELIVERED
    return refusal


async def settle(lease: Lease, action: NonceAction) -> bool:
    """Do to `lease` what the decision says. False only when a release could not be done:
    the recorded bytes stay with the nonce store, which may yet send them, so the send must
    be reported as maybe delivered, never as "nothing was sent"."""
    if action is NonceAction.COMMIT:
        await lease.commit()
    elif action is NonceAction.COMMIT_UNSENT:
        await lease.commit(sent=False)
    else:
        return await lease.release()
    return True
