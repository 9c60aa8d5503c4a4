"""Messages this pod holds under a lease, and the heartbeat that keeps the leases short.

A lease is short (``lease_seconds``, 30 s by default) and renewed every quarter of
it, so a pod that dies gives its messages back to the others within about one lease
(their orphan sweep reclaims them). The pod also keeps its own, conservative idea of
how long each lease is certainly valid: the time it *asked* for the claim or the
renewal plus the lease, minus a margin. A message whose lease may have run out (the
database was away and renewals failed) is not sent until a renewal succeeds, and a
renewal that no longer returns an id means another pod took it over: it is dropped
unsent. Together with the ledger's claim that is what keeps two pods from sending the
same message after an outage.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy.ext.asyncio import AsyncEngine

from emailplan.sender.store import claims
from emailplan.sender.workermetrics import LEASES_LOST

log = logging.getLogger("emailplan.worker")


SLOT_END = "/"  # ``<pod>/<slot>/`` starts the owner of a named pod's worker slot


def lease_owner(pod_name: str | None, pod_child: int) -> str:
    """The owner this process's leases carry: ``<pod>/<slot>/`` first when the pod is named
    (what :meth:`Leases.take_back_slot` looks for), then host, pid and a nonce."""
    slot = f"{pod_name}/{pod_child}{SLOT_END}" if pod_name else ""
    return f"{slot}{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class LeaseState(StrEnum):
    VALID = "valid"  # send it
    STALE = "stale"  # the lease may have run out: wait for the next renewal
    LOST = "lost"  # not ours (any more): drop it unsent


@dataclass
class Held:
    """A claimed message in this pod and until when (monotonic) its lease is surely ours."""

    claimed: claims.Claimed
    valid_until: float


class Leases:
    """The held set of one worker: add on claim, renew by heartbeat, drop when written or released."""

    def __init__(self, engine: AsyncEngine, plan_id: uuid.UUID, owner: str, lease_seconds: float) -> None:
        self._engine = engine
        self._plan_id = plan_id
        self.owner = owner
        self.lease_seconds = float(lease_seconds)
        self.margin = self.lease_seconds / 3
        self._held: dict[int, Held] = {}

    def __len__(self) -> int:
        return len(self._held)

    def __contains__(self, message_id: object) -> bool:
        return message_id in self._held

    def ids(self) -> list[int]:
        return list(self._held)

    def get(self, message_id: int) -> Held | None:
        return self._held.get(message_id)

    def add(self, claimed: Iterable[claims.Claimed], asked_at: float) -> list[Held]:
        """Record messages claimed by a request sent at ``asked_at`` (monotonic); returns the
        ones new to this pod.

        A message this pod already holds can come back from the orphan sweep when its lease
        ran out in the ledger (renewals late on a busy database): it is the same message, still
        queued or in flight here, so only its lease is refreshed. Returning it again would queue
        it twice and send it twice.
        """
        until = asked_at + self.lease_seconds - self.margin
        new = []
        for c in claimed:
            known = self._held.get(c.id)
            if known is not None:
                known.valid_until = max(known.valid_until, until)
                continue
            held = Held(c, until)
            self._held[c.id] = held
            new.append(held)
        return new

    def state(self, message_id: int, now: float | None = None) -> LeaseState:
        held = self._held.get(message_id)
        if held is None:
            return LeaseState.LOST
        return LeaseState.VALID if (now or time.monotonic()) < held.valid_until else LeaseState.STALE

    def drop(self, ids: Iterable[int]) -> None:
        for i in ids:
            self._held.pop(i, None)

    @property
    def heartbeat_seconds(self) -> float:
        """How often ``renew`` runs: a quarter of the lease."""
        return max(0.25, self.lease_seconds / 4)

    def due(self, now: float) -> list[int]:
        """Ids whose lease may run out before the heartbeat after next, with one and a half
        heartbeats to spare: only these are renewed. Most messages are sent within a couple of
        seconds of their claim; renewing every held lease at every heartbeat rewrote about
        one ledger row per email sent. A message not renewed now stays valid past the next
        heartbeat, which renews it; if that one fails, the message waits (``STALE``) as before.
        """
        horizon = now + 1.5 * self.heartbeat_seconds
        return [i for i, held in self._held.items() if held.valid_until < horizon]

    async def take_back_slot(self) -> None:
        """A restarted worker (its container or its process in the pod) frees what the dead one
        of its slot held, so the sweep sends it again at once instead of a whole lease later."""
        slot, sep, _ = self.owner.rpartition(SLOT_END)
        if not sep:
            return  # an unnamed pod: its slot cannot be told from another pod's
        taken = await claims.expire_slot(self._engine, self._plan_id, slot + sep, self.owner)
        if taken:
            log.warning(
                "a previous process of this worker slot died holding messages; reclaiming them",
                extra={"count": taken, "slot": slot},
            )

    async def renew(self) -> list[int]:
        """One heartbeat: extend the leases that are due; returns the ids lost to other pods
        (dropped here)."""
        asked_at = time.monotonic()
        ids = self.due(asked_at)
        if not ids:
            return []
        kept = set(await claims.extend_lease(self._engine, ids, self.owner, self.lease_seconds))
        until = asked_at + self.lease_seconds - self.margin
        lost = []
        for i in ids:
            held = self._held.get(i)
            if held is None:
                continue  # written or released during the renewal
            if i in kept:
                held.valid_until = until
            else:
                lost.append(i)
        if lost:
            LEASES_LOST.inc(len(lost))
            log.warning(
                "messages taken over by another pod; dropping them unsent", extra={"count": len(lost)}
            )
            self.drop(lost)
        return lost

    async def release(self, ids: Sequence[int]) -> int:
        """Give messages back unsent (suspend, shutdown); they are dropped here once the ledger agrees."""
        if not ids:
            return 0
        released = await claims.release(self._engine, self._plan_id, ids, self.owner)
        self.drop(ids)
        return released
