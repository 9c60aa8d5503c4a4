"""The demo's simulated readers: "everyone has read their mail" waits for their events.

The demo and the campaign walk-throughs wait until the plan's status counts every event the
simulated mailboxes posted (``caught_up``). A message counted as read before its mailbox had
posted its events let that wait pass while posts were still in flight, and the final counts
then disagreed with the status (a walk-through failed with 175 deliveries "missing" that the
API recorded a moment later). The API here is held by a stand-in for the stack's SNS poster,
which answers only when the test lets it, as a slow group commit does.
"""

from __future__ import annotations

import email.message
import threading
from typing import Any

import demo
import pytest

from emailplan import devsns


class HeldPoster:
    """The part of the local stack a mailbox posts through, answering only once released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.waiting = threading.Event()
        self.posted = 0
        self._lock = threading.Lock()  # mailboxes post from several threads at once

    def ses_notification(self, event: dict[str, Any]) -> dict[str, Any]:
        return event

    def post_sns(self, doc: dict[str, Any]) -> dict[str, Any]:
        self.waiting.set()
        assert self.release.wait(30), "never released"
        with self._lock:
            self.posted += 1
        return {"status": "recorded"}


def delivered_addresses(n: int) -> list[str]:
    """Addresses whose simulated mailbox reports a delivery and does nothing else."""
    found = []
    for i in range(10_000):
        address = f"reader{i}@example.com"
        if demo.delivered_unopened(address):
            found.append(address)
        if len(found) == n:
            return found
    raise AssertionError("not enough addresses")


def sent_mail(address: str, ref: int) -> devsns.SentMail:
    return devsns.SentMail(
        address=address,
        ses_id=f"ses-{ref}",
        message_ref=ref,
        plan_id="plan",
        message=email.message.EmailMessage(),
    )


@pytest.fixture
def poster() -> HeldPoster:
    return HeldPoster()


def test_a_message_is_read_only_once_its_mailbox_has_posted_its_events(poster: HeldPoster) -> None:
    audience = demo.Audience(poster)  # type: ignore[arg-type]  # only the poster is reached here
    mails = [sent_mail(a, i) for i, a in enumerate(delivered_addresses(3), start=1)]
    reading = threading.Thread(target=audience.handle, args=(mails,))
    reading.start()
    try:
        assert poster.waiting.wait(30), "no mailbox posted"
        nothing_counted = {"sent": 3, "delivered": 0}
        assert not demo.caught_up(nothing_counted, audience), "posts in flight must hold the wait"
    finally:
        poster.release.set()
        reading.join(30)
    assert poster.posted == audience.deliveries == 3
    assert not demo.caught_up({"sent": 3, "delivered": 2}, audience), "one delivery not yet counted"
    assert demo.caught_up({"sent": 3, "delivered": 3}, audience)


def test_a_failed_post_still_marks_the_message_read_and_reaches_the_reader_loop(poster: HeldPoster) -> None:
    def refuse(doc: dict[str, Any]) -> dict[str, Any]:
        raise OSError("connection refused")

    poster.post_sns = refuse  # type: ignore[method-assign]
    audience = demo.Audience(poster)  # type: ignore[arg-type]
    mails = [sent_mail(a, i) for i, a in enumerate(delivered_addresses(2), start=1)]
    with pytest.raises(OSError, match="refused"):
        audience.handle(mails)
    # Read, so not posted again (a second event would count twice), and nothing counted.
    assert {m.address for m in mails} <= audience.seen and audience.deliveries == 0
