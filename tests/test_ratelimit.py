"""Token bucket, backoff and throttle arithmetic (pure)."""

from __future__ import annotations

import random

import pytest

from emailplan.sender.ratelimit import Bucket, Throttle, backoff, grant_size, refill, take, wait_time


@pytest.mark.parametrize(
    ("tokens", "rate", "burst", "elapsed", "expected"),
    [
        (0, 14, 7, 0.5, 7),  # refills at the rate
        (0, 14, 7, 10, 7),  # never above the burst
        (3, 14, 7, -5, 3),  # clock going backwards adds nothing
        (-2, 10, 5, 0.1, 1),  # a debt is forgiven, not carried
        (0, 0, 5, 100, 0),  # zero rate never refills
    ],
)
def test_refill(tokens: float, rate: float, burst: float, elapsed: float, expected: float) -> None:
    assert refill(Bucket(tokens, rate, burst), elapsed).tokens == pytest.approx(expected)


@pytest.mark.parametrize(
    ("tokens", "want", "granted", "left"),
    [(5.5, 3, 3, 2.5), (2.9, 5, 2, 0.9), (0.5, 1, 0, 0.5), (10, -1, 0, 10)],
)
def test_take_grants_whole_tokens(tokens: float, want: float, granted: float, left: float) -> None:
    after, got = take(Bucket(tokens, 10, 10), want)
    assert got == granted and after.tokens == pytest.approx(left)


def test_rate_holds_over_a_simulated_minute() -> None:
    bucket, sent, now = Bucket(0, 14, 7), 0.0, 0.0
    while now < 60:
        bucket = refill(bucket, 0.01)
        bucket, got = take(bucket, 100)
        sent += got
        now += 0.01
    assert 14 * 60 - 1 <= sent <= 14 * 60 + 7


@pytest.mark.parametrize(
    ("tokens", "rate", "want", "expected"), [(0, 10, 1, 0.1), (1, 10, 1, 0), (0, 0, 1, float("inf"))]
)
def test_wait_time(tokens: float, rate: float, want: float, expected: float) -> None:
    assert wait_time(Bucket(tokens, rate, 10), want) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("rate", "workers", "expected"), [(14, 1, 3), (14, 4, 1), (0.5, 1, 1), (1000, 2, 125)]
)
def test_grant_size(rate: float, workers: int, expected: float) -> None:
    assert grant_size(rate, workers) == expected


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    rng = random.Random(1)
    values = [backoff(a, base=0.5, cap=8, rng=rng) for a in range(1, 10)]
    assert 0.25 <= values[0] <= 0.5
    assert all(v <= 8 for v in values)
    assert values[5] >= 4


def test_throttle_halves_then_recovers() -> None:
    t = Throttle()
    for _ in range(10):
        t = t.throttled()
    assert t.factor == pytest.approx(0.05)
    for _ in range(200):
        t = t.succeeded()
    assert t.factor == 1.0
