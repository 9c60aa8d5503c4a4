"""Prometheus metrics of the API (served on its own ``/metrics``)."""

from __future__ import annotations

import functools

from prometheus_client import Counter, Gauge, Histogram

PIXEL_REQUESTS = Counter("emailplan_api_pixel_requests_total", "Open pixel requests", ["result"])
PIXEL_VALID = PIXEL_REQUESTS.labels(result="valid")
PIXEL_INVALID = PIXEL_REQUESTS.labels(result="invalid")
OPENS_RECORDED = Counter("emailplan_api_opens_recorded_total", "New unique opens written", ["kind"])
OPENS_DROPPED = Counter("emailplan_api_opens_dropped_total", "Pixel hits dropped (buffer full while DB down)")
OPEN_BUFFER = Gauge("emailplan_api_open_buffer_size", "Pixel hits waiting to be written")
OPEN_FLUSH_SECONDS = Histogram("emailplan_api_open_flush_seconds", "Time to write one batch of opens")
SNS_MESSAGES = Counter("emailplan_api_sns_messages_total", "SNS messages by outcome", ["outcome"])
SES_EVENTS = Counter("emailplan_api_ses_events_total", "SES events recorded", ["kind", "duplicate"])


# The SNS endpoint counts every message: a labelled child is looked up once per label set and
# kept (``labels()`` validates and locks on each call: about 9 µs per message, 2026-12-07).
@functools.cache
def sns_outcome(outcome: str) -> Counter:
    """The counter of SNS messages with this outcome."""
    return SNS_MESSAGES.labels(outcome=outcome)


@functools.cache
def ses_event(kind: str, duplicate: bool) -> Counter:
    """The counter of SES events of this kind, new or already recorded."""
    return SES_EVENTS.labels(kind=kind, duplicate=str(duplicate).lower())


CLICKS = Counter("emailplan_api_clicks_total", "Click redirects", ["result"])
UNSUBSCRIBES = Counter("emailplan_api_unsubscribes_total", "Unsubscribe requests", ["result"])
UPLOAD_ROWS = Counter("emailplan_api_upload_rows_total", "Recipient rows uploaded", ["result"])
SES_BATCH_SIZE = Histogram(
    "emailplan_api_ses_event_batch_size",
    "SES events per database write (group commit)",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
)
