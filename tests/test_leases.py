"""What a pod holds: a message the orphan sweep hands back to the pod that still holds it.

When renewals are late (a busy database) a lease can run out in the ledger while the message
is still queued or in flight in its pod; the pod's own sweep then claims it again. It is the
same message: queueing it a second time would send it twice.
"""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncEngine

from emailplan.sender.leases import Leases, LeaseState
from emailplan.sender.store import claims


def claimed(message_id: int) -> claims.Claimed:
    return claims.Claimed(
        id=message_id, email=f"r{message_id}@example.com", name=None, vars={}, attempts=1, bucket=0
    )


async def test_a_message_claimed_again_by_its_own_pod_is_not_queued_twice(engine: AsyncEngine) -> None:
    leases = Leases(engine, uuid.uuid4(), "pod-a", lease_seconds=9)
    first = leases.add([claimed(1), claimed(2)], asked_at=100.0)
    assert [h.claimed.id for h in first] == [1, 2]
    assert leases.state(1, now=106.5) is LeaseState.STALE  # valid for two thirds of the lease

    again = leases.add([claimed(2), claimed(3)], asked_at=106.0)  # the sweep's claim
    assert [h.claimed.id for h in again] == [3], "only the message new to this pod is queued"
    assert len(leases) == 3
    assert leases.state(2, now=106.5) is LeaseState.VALID  # the fresh claim renewed its lease
    assert leases.get(2) is first[1], "the queued or in-flight copy is the one that is sent"


def test_a_lease_is_renewed_before_it_can_go_stale_and_not_long_before(engine: AsyncEngine) -> None:
    leases = Leases(engine, uuid.uuid4(), "pod-a", lease_seconds=10)  # heartbeat every 2.5 s
    leases.add([claimed(1)], asked_at=100.0)  # surely ours until 106.67
    leases.add([claimed(2)], asked_at=102.0)  # until 108.67
    beat = leases.heartbeat_seconds
    assert beat == 2.5
    # At every heartbeat, whatever is not renewed is still valid at the next one (even a
    # heartbeat late by half a period), so a message never goes stale while renewals work.
    for now in (100.0, 101.0, 102.5, 103.0, 104.0):
        renewed = set(leases.due(now))
        for i in (1, 2):
            if i not in renewed:
                assert leases.state(i, now=now + 1.5 * beat - 0.01) is LeaseState.VALID
    assert leases.due(102.0) == []  # claimed two seconds ago: no ledger write yet
    assert leases.due(103.0) == [1]
