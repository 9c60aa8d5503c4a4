"""Prometheus metrics of the sender worker, in one place so every pipeline part shares them.

Names are the contract with dashboards and alerts (``docs/operations.md``): keep them.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

SENT = Counter("emailplan_sender_sent_total", "Emails accepted by SES")
FAILED = Counter("emailplan_sender_failed_total", "Emails that failed permanently", ["reason"])
THROTTLED = Counter("emailplan_sender_throttled_total", "SES throttling answers (retried)")
RETRIES = Counter("emailplan_sender_retries_total", "Transient send errors retried")
ACCOUNT_PAUSED = Counter(
    "emailplan_sender_account_paused_total",
    "SES answers that the account or configuration set cannot send (paused, suspended)",
    ["code"],
)
PAUSED = Gauge("emailplan_sender_paused_by_ses", "1 while this pod holds its plan because SES is paused")
RATE = Gauge("emailplan_sender_plan_rate", "Configured plan rate (emails/s, all pods)")
FACTOR = Gauge(
    "emailplan_sender_throttle_factor",
    "Share of the configured rate SES throttling leaves this pod (1 = all)",
)
QUEUE_VISIBLE = Gauge("emailplan_sender_queue_visible", "Work messages waiting in SQS (queue lag)")
BACKLOG = Gauge("emailplan_sender_backlog", "Claimed messages waiting for a send slot in this pod")
IN_FLIGHT = Gauge("emailplan_sender_in_flight", "Sends whose outcome is not yet in the ledger")
LEASES_LOST = Counter(
    "emailplan_sender_leases_lost_total", "Held messages another pod took over after this pod's lease ran out"
)
SEND_SECONDS = Histogram("emailplan_sender_send_seconds", "SES SendEmail latency")
WRITE_SECONDS = Histogram("emailplan_sender_result_write_seconds", "Time to write one batch of results")
