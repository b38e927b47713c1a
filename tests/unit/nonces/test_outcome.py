"""nonces/outcome.py: what a send's outcome does to its nonce."""

from __future__ import annotations

import pytest

from signer_proxy.errors import (
    NodeRejected,
    SignerProxyError,
    UpstreamBadResponse,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from signer_proxy.nonces.outcome import (
    DECISIONS,
    Delivery,
    NonceAction,
    Presence,
    after_lookup,
    delivery_of,
)


@pytest.mark.parametrize(
    ("exc", "delivery"),
    [
        pytest.param(None, Delivery.ACCEPTED, id="returned"),
        pytest.param(NodeRejected(-32000, "already known"), Delivery.ACCEPTED, id="known"),
        pytest.param(NodeRejected(-32000, "nonce too low"), Delivery.NONCE_TAKEN, id="too-low"),
        pytest.param(
            NodeRejected(-32000, "replacement transaction underpriced"),
            Delivery.NONCE_TAKEN,
            id="underpriced",
        ),
        pytest.param(NodeRejected(-32000, "nonce too high"), Delivery.NONCE_TOO_HIGH, id="high"),
        pytest.param(
            NodeRejected(-32000, "insufficient funds for gas * price + value"),
            Delivery.REFUSED,
            id="funds",
        ),
        pytest.param(UpstreamUnavailable("refused"), Delivery.NOT_DELIVERED, id="unreachable"),
        pytest.param(UpstreamTimeout("no answer"), Delivery.MAYBE_DELIVERED, id="timeout"),
        pytest.param(UpstreamBadResponse("502"), Delivery.MAYBE_DELIVERED, id="bad-gateway"),
        pytest.param(SignerProxyError("?"), Delivery.MAYBE_DELIVERED, id="anything-else"),
    ],
)
def test_delivery_of(exc: BaseException | None, delivery: Delivery) -> None:
    assert delivery_of(exc) is delivery


def test_a_timeout_is_not_a_kind_of_unavailable() -> None:
    # The class alone says whether bytes may have left (issue: except-clause order).
    assert not issubclass(UpstreamTimeout, UpstreamUnavailable)
    assert not issubclass(UpstreamUnavailable, UpstreamTimeout)


@pytest.mark.parametrize(
    ("refusal", "presence", "result"),
    [
        (Delivery.NONCE_TAKEN, Presence.YES, Delivery.ACCEPTED),
        (Delivery.NONCE_TAKEN, Presence.NO, Delivery.NONCE_TAKEN),
        (Delivery.NONCE_TAKEN, Presence.UNKNOWN, Delivery.MAYBE_DELIVERED),
        (Delivery.REFUSED, Presence.YES, Delivery.ACCEPTED),
        (Delivery.REFUSED, Presence.UNKNOWN, Delivery.MAYBE_DELIVERED),
        (Delivery.NONCE_TOO_HIGH, Presence.NO, Delivery.NONCE_TOO_HIGH),
    ],
)
def test_after_lookup_never_turns_unknown_into_no(
    refusal: Delivery, presence: Presence, result: Delivery
) -> None:
    assert after_lookup(refusal, presence) is result


@pytest.mark.parametrize(
    ("delivery", "action", "resign"),
    [
        (Delivery.ACCEPTED, NonceAction.COMMIT, False),
        (Delivery.REFUSED, NonceAction.RELEASE, False),
        (Delivery.NONCE_TOO_HIGH, NonceAction.RELEASE, True),
        (Delivery.NONCE_TAKEN, NonceAction.COMMIT_UNSENT, True),
        (Delivery.NOT_DELIVERED, NonceAction.RELEASE, False),
        (Delivery.MAYBE_DELIVERED, NonceAction.COMMIT, False),
    ],
)
def test_decisions(delivery: Delivery, action: NonceAction, resign: bool) -> None:
    assert DECISIONS[delivery].nonce is action
    assert DECISIONS[delivery].resign is resign


def test_every_delivery_has_a_decision() -> None:
    assert set(DECISIONS) == set(Delivery)


def test_every_node_error_in_the_table_has_a_delivery() -> None:
    from signer_proxy.upstream.node_errors import SEND_ERROR_PATTERNS

    for fragment, _ in SEND_ERROR_PATTERNS:
        assert delivery_of(NodeRejected(-32000, fragment)) in set(Delivery)
