"""ratelimit: the one token bucket, per client and per WebSocket, on a clock we control."""

from __future__ import annotations

import pytest

from signer_proxy.access.policy import RateLimit
from signer_proxy.access.ratelimit import RateLimiter, TokenBucket
from signer_proxy.errors import RateLimited


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_refused_then_refilled() -> None:
    clock = Clock()
    limiter = RateLimiter({"ci": RateLimit(per_second=2.0, burst=4)}, clock)

    for _ in range(4):
        limiter.charge("ci", 1)
    with pytest.raises(RateLimited) as refused:
        limiter.charge("ci", 1)
    assert refused.value.retry_after == pytest.approx(0.5)
    assert "retry in 0.50 s" in refused.value.message
    clock.now += 0.5
    limiter.charge("ci", 1)  # one token back
    with pytest.raises(RateLimited):
        limiter.charge("ci", 1)


def test_a_batch_takes_one_token_per_call() -> None:
    clock = Clock()
    limiter = RateLimiter({"ci": RateLimit(per_second=1.0, burst=5)}, clock)

    limiter.charge("ci", 3)
    with pytest.raises(RateLimited):
        limiter.charge("ci", 3)
    limiter.charge("ci", 2)


def test_a_batch_larger_than_the_burst_says_to_split_it() -> None:
    limiter = RateLimiter({"ci": RateLimit(per_second=100.0, burst=5)}, Clock())
    with pytest.raises(RateLimited, match="more than client ci's burst of 5: split it"):
        limiter.charge("ci", 6)


def test_buckets_are_per_client_and_unlimited_clients_pass() -> None:
    clock = Clock()
    limiter = RateLimiter({"a": RateLimit(1.0, 1), "b": RateLimit(1.0, 1)}, clock)

    limiter.charge("a", 1)
    limiter.charge("b", 1)
    for _ in range(1000):
        limiter.charge("other", 1)
    with pytest.raises(RateLimited):
        limiter.charge("a", 1)


def test_idle_time_refills_only_up_to_the_burst() -> None:
    clock = Clock()
    limiter = RateLimiter({"ci": RateLimit(per_second=10.0, burst=3)}, clock)
    limiter.charge("ci", 3)
    clock.now += 3600
    limiter.charge("ci", 3)
    with pytest.raises(RateLimited):
        limiter.charge("ci", 1)


@pytest.mark.parametrize(
    ("rate", "takes", "expected"),
    [
        pytest.param(5.0, [0.0] * 7, [True] * 5 + [False] * 2, id="burst-of-one-second"),
        pytest.param(5.0, [0.0] * 5 + [0.2, 0.2, 0.4], [True] * 6 + [False, True], id="refill"),
        pytest.param(5.0, [0.0] * 5 + [100.0] * 7, [True] * 10 + [False] * 2, id="capped"),
        pytest.param(0.5, [0.0, 0.0, 1.0, 2.0], [True, False, False, True], id="slow-rate"),
    ],
)
def test_token_bucket_as_the_websocket_uses_it(
    rate: float, takes: list[float], expected: list[bool]
) -> None:
    # One second's worth of messages as the burst, at least one (transport/ws.py).
    bucket = TokenBucket(rate, max(rate, 1.0), 0.0)
    assert [bucket.take(1.0, now) == 0.0 for now in takes] == expected


def test_token_bucket_says_how_long_until_it_holds_enough() -> None:
    bucket = TokenBucket(per_second=2.0, burst=4.0, now=10.0)
    assert bucket.take(3.0, 10.0) == 0.0
    assert bucket.take(3.0, 10.0) == pytest.approx(1.0)  # holds 1 of 3: 2 more at 2 a second
    assert bucket.tokens == pytest.approx(1.0)  # a refusal spends nothing
    assert bucket.take(3.0, 11.0) == 0.0
    assert bucket.take(1.0, 5.0) > 0  # a clock that steps back refills nothing


def test_a_reload_keeps_the_buckets_of_unchanged_limits_only() -> None:
    """A reload does not refill a client whose limit stayed (it could otherwise reload its
    way past the limit); a changed limit starts a fresh bucket; a removed one is gone."""
    clock = Clock()
    limiter = RateLimiter({"same": RateLimit(1.0, 1), "changed": RateLimit(1.0, 1)}, clock)
    for client in ("same", "changed"):
        limiter.charge(client, 1)
    limiter.update({"same": RateLimit(1.0, 1), "changed": RateLimit(1.0, 3)})
    with pytest.raises(RateLimited):
        limiter.charge("same", 1)
    limiter.charge("changed", 3)
    limiter.update({})
    for _ in range(10):
        limiter.charge("same", 1)


def test_tokens_given_back_are_spent_again_and_never_above_the_burst() -> None:
    bucket = TokenBucket(per_second=1.0, burst=2.0, now=0.0)
    assert bucket.take(2.0, 0.0) == 0.0
    bucket.give_back(1.0)  # taken for a message that did not go ahead after all
    assert bucket.take(1.0, 0.0) == 0.0
    assert bucket.take(1.0, 0.0) > 0
    bucket.give_back(5.0)
    assert bucket.tokens == 2.0
