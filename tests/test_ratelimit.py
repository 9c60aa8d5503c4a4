"""Token bucket, backoff and throttle arithmetic (pure)."""

from __future__ import annotations

import random

import pytest

from emailplan.sender.ratelimit import (
    Bucket,
    Meter,
    SendLimit,
    backlog_limit,
    backoff,
    grant_size,
    grant_want,
    refill,
    take,
    wait_time,
)


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


class SimulatedSes:
    """SES answering a pod: throttles every ``every``-th call, and/or above ``cap`` calls a second."""

    def __init__(self, every: int = 0, cap: float | None = None) -> None:
        self.every, self.cap = every, cap
        self.calls, self.tokens, self.last = 0, 0.0, 0.0

    def throttles(self, now: float) -> bool:
        self.calls += 1
        if self.every and self.calls % self.every == 0:
            return True
        if self.cap is None:
            return False
        self.tokens = min(self.cap * 0.1, self.tokens + self.cap * (now - self.last))
        self.last = now
        if self.tokens < 1:
            return True
        self.tokens -= 1
        return False


def simulate(limit: SendLimit, ses: SimulatedSes, seconds: float, t0: float = 0.0) -> tuple[SendLimit, float]:
    """A pod paced at ``limit.rate`` for ``seconds``: the limit after, the accepted rate in the 2nd half."""
    dt, now, due, accepted_late = 0.01, t0, 0.0, 0
    while now < t0 + seconds:
        now += dt
        due += limit.rate * dt
        while due >= 1:
            due -= 1
            hit = ses.throttles(now)
            limit = limit.observe(throttled=hit, now=now)
            if not hit and now >= t0 + seconds / 2:
                accepted_late += 1
    return limit, accepted_late / (seconds / 2)


def test_every_tenth_call_throttled_keeps_most_of_the_rate() -> None:
    # the old rule (halve per throttle, +1 % per success) settled near a fifth of the rate
    _, accepted = simulate(SendLimit(configured=200), SimulatedSes(every=10), 30)
    assert accepted >= 0.85 * 200 * 0.9  # 90 % of calls accepted, paced at >= 85 % of the rate


def test_a_real_cap_is_found_and_left_within_ten_seconds_after_it_lifts() -> None:
    cap = 50.0
    limit, accepted = simulate(SendLimit(configured=200), SimulatedSes(cap=cap), 30)
    assert 0.8 * cap <= accepted <= cap * 1.05
    assert limit.rate <= 2 * cap, "the pod keeps calling SES far above what it accepts"
    # throttling stops: the configured rate is back within 10 s
    limit, _ = simulate(limit, SimulatedSes(), 10, t0=30)
    assert limit.rate == 200


def test_a_rate_change_keeps_the_learned_limit_below_it() -> None:
    limit = SendLimit(configured=100, limit=30)
    assert limit.configure(20).rate == 20 and limit.configure(500).rate == 30


@pytest.mark.parametrize(
    ("plan_rate", "horizon", "demand", "expected"),
    [
        (500, 0.2, 1000, 100),  # horizon of the plan's rate, however many pods share it
        (500, 0.2, 7, 7),  # never more than the messages it holds
        (0.5, 0.2, 100, 1),  # a slow plan still asks for one
        (14, 0.2, 0, 1),  # nothing held: one (the next message)
        (14, 0.2, 100, 2),  # 2.8 tokens: whole tokens only
    ],
)
def test_grant_want(plan_rate: float, horizon: float, demand: float, expected: float) -> None:
    assert grant_want(plan_rate, horizon, demand) == expected


def test_returned_tokens_never_raise_a_bucket_above_its_burst() -> None:
    # the ledger's grant adds returned tokens after the refill, under the same burst cap
    bucket = refill(Bucket(tokens=4, rate=10, burst=5), 0.05)
    assert refill(Bucket(bucket.tokens + 100, 10, 5), 0).tokens == 5


@pytest.mark.parametrize(
    ("plan_rate", "sending_rate", "floor", "limit"),
    [
        (14.0, None, 64, 100),  # before any measurement: a second of the plan, at least 100
        (800.0, None, 64, 800),
        (100_000.0, None, 64, 5000),  # never more than BACKLOG_MAX
        (100_000.0, 400.0, 64, 800),  # slower than its plan: two seconds of what it sends
        (100_000.0, 0.0, 64, 64),  # idle or stalled: still enough for every send slot
        (100_000.0, 5.0, 3200, 3200),  # bulk: slots x 50 entries x 2, whatever it measured
        (500.0, 2000.0, 64, 500),  # faster than its plan: the plan's second caps it
        (14.0, 14.0, 64, 64),
    ],
)
def test_backlog_is_a_second_of_the_plan_capped_by_two_seconds_of_sending(
    plan_rate: float, sending_rate: float | None, floor: int, limit: int
) -> None:
    assert backlog_limit(plan_rate, sending_rate, floor) == limit


def test_meter_smooths_whole_samples_and_ignores_a_counter_reset() -> None:
    meter = Meter(every=1.0)
    assert meter.update(0, 0.0) is None
    assert meter.update(50, 0.5) is None  # not a whole sample yet
    assert meter.update(100, 1.0) == 100.0
    assert meter.update(400, 2.0) == 200.0  # (100 + 300) / 2
    assert meter.update(0, 3.0) == 100.0  # a restarted count is a zero sample, never negative
