"""What a node's answer to eth_sendRawTransaction means: the node-error table. Pure."""

from __future__ import annotations

import enum


class SendOutcome(enum.Enum):
    """What an eth_sendRawTransaction error means for the nonce that was used."""

    NONCE_TOO_LOW = "nonce_too_low"  # the nonce is taken on chain: resync, new nonce, re-sign
    NONCE_TOO_HIGH = "nonce_too_high"  # our counter ran ahead of the node: resync and retry
    ALREADY_KNOWN = "already_known"  # the node has this very transaction: a success
    NONCE_IN_USE = "nonce_in_use"  # another pending tx holds the nonce: resync and retry
    REJECTED = "rejected"  # the transaction is invalid as it stands: free the nonce, report


# Lower-case fragments of node error messages, checked in order; first match wins.
# Sources: geth/reth/erigon txpool errors, Besu's TransactionInvalidReason names,
# Nethermind's AcceptTxResult, anvil's pool errors, the Hedera JSON-RPC relay.
SEND_ERROR_PATTERNS: tuple[tuple[str, SendOutcome], ...] = (
    ("unknown transaction", SendOutcome.REJECTED),  # guards "known transaction" below
    ("already known", SendOutcome.ALREADY_KNOWN),
    ("alreadyknown", SendOutcome.ALREADY_KNOWN),
    ("known transaction", SendOutcome.ALREADY_KNOWN),
    ("transaction already imported", SendOutcome.ALREADY_KNOWN),
    ("transaction already exists", SendOutcome.ALREADY_KNOWN),
    ("existing tx with same hash", SendOutcome.ALREADY_KNOWN),  # Erigon
    ("existing txn with same hash", SendOutcome.ALREADY_KNOWN),  # Erigon, newer
    ("nonce too low", SendOutcome.NONCE_TOO_LOW),
    ("nonce_too_low", SendOutcome.NONCE_TOO_LOW),
    ("oldnonce", SendOutcome.NONCE_TOO_LOW),
    ("nonce has already been used", SendOutcome.NONCE_TOO_LOW),
    ("nonce too high", SendOutcome.NONCE_TOO_HIGH),
    ("nonce_too_far_in_future_for_sender", SendOutcome.NONCE_TOO_HIGH),
    ("nonce_too_high", SendOutcome.NONCE_TOO_HIGH),
    ("nonce is too distant", SendOutcome.NONCE_TOO_HIGH),  # Besu's text for the one above
    ("noncegap", SendOutcome.NONCE_TOO_HIGH),  # Nethermind, older
    ("nonce too far in future", SendOutcome.NONCE_TOO_HIGH),  # Nethermind, newer
    ("replacement transaction underpriced", SendOutcome.NONCE_IN_USE),
    ("replacement_underpriced", SendOutcome.NONCE_IN_USE),
    ("replacement_transaction_underpriced", SendOutcome.NONCE_IN_USE),
)


def classify_send_error(message: str) -> SendOutcome:
    """Classify a node's eth_sendRawTransaction error message (case-insensitive)."""
    lowered = message.lower()
    for fragment, outcome in SEND_ERROR_PATTERNS:
        if fragment in lowered:
            return outcome
    return SendOutcome.REJECTED
