"""Rate arithmetic: token buckets, retry backoff and throttling slow-down. Pure, no I/O.

The shared bucket lives in PostgreSQL (``store.pacing.take_tokens``); this module is
the math it and the worker use, kept apart so it can be table-tested.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Bucket:
    """Token bucket state: ``tokens`` available now, refilled at ``rate``/s up to ``burst``."""

    tokens: float
    rate: float
    burst: float


def refill(bucket: Bucket, elapsed: float) -> Bucket:
    """The bucket after ``elapsed`` seconds (negative elapsed, e.g. clock skew, adds nothing)."""
    gained = max(0.0, elapsed) * max(0.0, bucket.rate)
    return replace(bucket, tokens=min(bucket.burst, max(0.0, bucket.tokens) + gained))


def take(bucket: Bucket, want: float) -> tuple[Bucket, float]:
    """Take up to ``want`` whole tokens; returns (bucket after, granted)."""
    granted = float(int(min(max(0.0, want), bucket.tokens)))
    return replace(bucket, tokens=bucket.tokens - granted), granted


def wait_time(bucket: Bucket, want: float = 1.0) -> float:
    """Seconds until ``want`` tokens are available (inf when the rate is zero)."""
    missing = want - bucket.tokens
    if missing <= 0:
        return 0.0
    if bucket.rate <= 0:
        return float("inf")
    return missing / bucket.rate


def grant_size(rate: float, workers_hint: int = 1, horizon: float = 0.25) -> float:
    """How many tokens one worker asks for at a time: about ``horizon`` seconds of its share.

    Small grants keep the plan's rate smooth when several pods share it; at
    least one token so a 0.5/s plan still sends.
    """
    return max(1.0, float(int(rate * horizon / max(1, workers_hint))))


def grant_want(plan_rate: float, horizon: float, demand: float) -> float:
    """Tokens one worker asks the shared bucket for in one grant.

    About ``horizon`` seconds of the plan's rate, never more than the messages it holds
    (``demand``), at least one token. Not sized by the worker's own recent throughput: that
    fed back on itself (a worker slowed by a slow grant asked for less, so it was slower
    still) until busy processes asked for one token per database round trip and a plan
    shared by several processes fell to a third of its rate (issue 14, in the history of
    docs/benchmarks.md). Pods that share a plan still share it: the bucket grants what it
    has (a drained bucket grants less and the worker comes back after a pause), and tokens
    not spent in time go back to it.
    """
    want = max(0.0, plan_rate) * horizon
    return max(1.0, float(int(min(want, demand))))


def backoff(attempt: int, base: float = 0.5, cap: float = 30.0, rng: random.Random | None = None) -> float:
    """Full-jitter exponential backoff for retry ``attempt`` (1-based)."""
    high = min(cap, base * (2 ** max(0, attempt - 1)))
    return (rng or random).uniform(high / 2, high)


@dataclass(frozen=True)
class SendLimit:
    """How fast this pod may call SES, learned from SES's answers (throttled or accepted).

    SES throttling says "more than I accept": after a window with throttling the pod limits
    itself to the rate SES accepted in it, plus half the rate it refused, plus a probe
    step, instead of halving its rate on every throttle (which, with a steady share of calls
    throttled, settled near a fifth of the configured rate). Against a real cap this
    converges to a little above the cap (the refused part grows until it balances the
    probe); against a steady share of refusals it stays near the configured rate.
    Windows without throttling raise the limit by the same step, sized to the configured
    rate so that from anywhere the limit is back at the configured rate within
    ``recovery_seconds`` once SES stops throttling. ``rate`` is what the pacer uses.
    """

    configured: float
    limit: float | None = None  # None: no limit beyond the configured rate
    window_start: float | None = None
    accepted: int = 0
    throttled: int = 0
    window: float = 0.5
    recovery_seconds: float = 8.0
    floor_fraction: float = 0.02

    @property
    def rate(self) -> float:
        if self.limit is None:
            return self.configured
        return min(self.configured, self.limit)

    def configure(self, configured: float) -> SendLimit:
        """The plan's rate changed: keep the learned limit, measured against the new rate."""
        return replace(self, configured=configured)

    def observe(self, *, throttled: bool, now: float) -> SendLimit:
        """Count one SES answer; at the end of a window, move the limit."""
        if self.window_start is None:
            return replace(self, window_start=now, accepted=0 if throttled else 1, throttled=int(throttled))
        accepted = self.accepted + (0 if throttled else 1)
        hits = self.throttled + int(throttled)
        elapsed = now - self.window_start
        if elapsed < self.window:
            return replace(self, accepted=accepted, throttled=hits)
        step = self.configured / self.recovery_seconds * elapsed
        limit: float | None
        if hits:
            floor = self.configured * self.floor_fraction
            # What SES accepted, half of what it refused (a steady share of refusals is not a
            # reason to slow down much; a real cap makes the refused part grow) and the probe.
            limit = max(floor, (accepted + hits / 2) / elapsed + step)
        elif self.limit is None:
            limit = None
        else:
            limit = self.limit + step
        if limit is not None and limit >= self.configured:
            limit = None
        return replace(self, limit=limit, window_start=now, accepted=0, throttled=0)


# Tokens of a shared-bucket grant not spent within this long go back to the bucket (the pacer).
TOKEN_TTL = 0.25

# A worker holds at most this many claimed, unsent messages, and at most about this many
# seconds of what it actually sends: every held row is rewritten by each lease renewal.
BACKLOG_MAX = 5000
BACKLOG_SECONDS = 2.0


def backlog_limit(plan_rate: float, sending_rate: float | None, floor: int) -> int:
    """How many claimed-but-unsent messages one worker may hold.

    About a second of the plan's rate (at least 100, at most ``BACKLOG_MAX``), but never more
    than ``BACKLOG_SECONDS`` of what this worker has been sending (``sending_rate``, None
    until measured). A worker slower than its plan (CPU-starved, or the plan's rate is far
    above what one pod sends) otherwise sat on thousands of rows, and the heartbeat that
    renews their leases rewrote them all every few seconds: with raw sends, PostgreSQL spent
    three times the worker's CPU per email on it. ``floor`` keeps every send slot busy (slots
    x entries per call x 2), so a worker whose measured rate is low is never starved of work
    by its own estimate: the limit cannot feed back on itself below it.
    """
    ceiling = min(BACKLOG_MAX, max(100, plan_rate, floor))
    if sending_rate is None:
        return int(ceiling)
    return int(min(ceiling, max(floor, BACKLOG_SECONDS * sending_rate)))


@dataclass
class Meter:
    """A worker's recent sending rate: sends per second, smoothed over samples of ``every`` s."""

    every: float = 1.0
    rate: float | None = None
    _total: int = 0
    _at: float | None = None

    def update(self, total: int, now: float) -> float | None:
        """Feed the running total of sends; returns the smoothed rate (None until one sample)."""
        if self._at is None:
            self._total, self._at = total, now
            return self.rate
        elapsed = now - self._at
        if elapsed >= self.every:
            sample = max(0, total - self._total) / elapsed
            self.rate = sample if self.rate is None else (self.rate + sample) / 2
            self._total, self._at = total, now
        return self.rate
