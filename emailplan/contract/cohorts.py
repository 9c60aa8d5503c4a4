"""Which part of a plan's list a recipient belongs to: its bucket, its A/B variant, the released share.

Every recipient of a plan has a *bucket* in ``[0, BUCKETS)``. The database computes
it (a generated column, migration 0004: a hash of the plan id and the address), so
it is the same after a restart, a retried load or a re-upload of the same list,
and it is spread evenly over the list. Everything that splits a list uses it:

* the **released share** (progressive rollout, the A/B test cohort): the rows whose
  bucket is below :func:`cutoff` of the released percent may be sent; the share
  only grows, so a row released once stays released;
* the **A/B variant**: a row of the test cohort gets variant ``bucket % n``, a row
  outside it gets the winner (and is released only once there is one).

The per-variant counts (``ledger``) group by the same ``bucket % n`` in SQL; this
module is the definition they follow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

BUCKETS = 10_000
# The SQL of the generated column ``messages.bucket`` (migration 0004), kept here so
# the rule and its explanation stay together; the migration and the model read it.
BUCKET_SQL = "(((hashtextextended(CAST(plan_id AS text) || ':' || email, 0) % 10000) + 10000) % 10000)"


def cutoff(percent: float) -> int:
    """Buckets below this number are the first ``percent`` of the list (0 → none, 100 → all)."""
    if percent <= 0:
        return 0
    if percent >= 100:
        return BUCKETS
    return max(1, math.floor(percent * BUCKETS / 100 + 1e-9))


@dataclass(frozen=True)
class Split:
    """A plan's A/B split with its cutoff worked out once: the sender asks it for every
    message, so the choice is one integer comparison (and a modulo) per recipient."""

    test_cutoff: int
    variants: int
    winner: int | None

    @classmethod
    def of(cls, *, test_percent: float, variants: int, winner: int | None) -> Split:
        return cls(cutoff(test_percent), variants, winner)

    def variant(self, bucket: int) -> int | None:
        """The variant index of a recipient: its test-cohort variant, else the winner (None: undecided)."""
        if self.variants <= 0:
            return None
        if bucket < self.test_cutoff:
            return bucket % self.variants
        return self.winner


def variant_index(bucket: int, *, test_percent: float, variants: int, winner: int | None) -> int | None:
    """The variant a recipient receives: its test-cohort variant, else the winner (None: undecided)."""
    return Split.of(test_percent=test_percent, variants=variants, winner=winner).variant(bucket)
