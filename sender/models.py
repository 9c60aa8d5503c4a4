"""The ledger schema: what PostgreSQL stores for plans, messages, counters, events and suppressions.

The ledger, not SQS, is the truth about what was sent: a message row moves
``created → processing → sent|failed`` (or ``stopped``/``suppressed``) under a
lease, and every status change updates ``plan_counters`` in the same
transaction so statistics are one primary-key read, never a table scan.
The API (issue 4) and the worker share these models; migration 0001 creates
exactly these tables.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Computed,
    DateTime,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from emailplan.contract.cohorts import BUCKET_SQL
from emailplan.contract.plans import DEFAULT_RATE_PER_SECOND, PlanState

# Message statuses; each has a column of the same name in plan_counters.
MESSAGE_STATUSES = ("created", "processing", "sent", "failed", "stopped", "suppressed")
# Event-driven counters (written by the API from SES events and tracking).
EVENT_COUNTERS = (
    "delivered",
    "bounced",  # hard (Permanent) bounces
    "softBounced",  # transient and undetermined bounces (columns are spelled as the counts)
    "complained",
    "opened",
    "openedMachine",  # machine opens (privacy proxies, scanners); camelCase like every count
    "clicked",
    "unsubscribed",
    "sesRejected",  # SES Reject events; rows refused at load are ``rejected`` of the load job
)
# Messages a retry queued again (they leave ``sent``/``failed`` and are counted again when handled).
RETRY_COUNTERS = ("retried",)
COUNTER_COLUMNS = ("total", *MESSAGE_STATUSES, *EVENT_COUNTERS, *RETRY_COUNTERS)

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
}


class Base(DeclarativeBase):
    """Declarative base with stable constraint names (migrations refer to them)."""

    metadata = MetaData(naming_convention=NAMING)


def _ts(nullable: bool = True) -> Mapped[datetime | None]:
    return mapped_column(DateTime(timezone=True), nullable=nullable)


def state_sql(*states: PlanState) -> str:
    """Plan states as SQL: one quoted literal, or a parenthesised list for ``IN``.

    SQL never spells a state itself (the store tests check): it is formatted from the enum,
    whose values are plain lower-case words, so quoting them needs no escaping.
    """
    quoted = [f"'{s.value}'" for s in states]
    return quoted[0] if len(states) == 1 else f"({', '.join(quoted)})"


class Plan(Base):
    """One EmailPlan, keyed by the resource's ``metadata.uid``.

    ``spec`` keeps the sending spec (from, replyTo, subject, html, text,
    tracking, unsubscribe, ses) as camelCase JSON, like the CRD; the worker
    re-reads the row, so rate and state changes reach running pods without a restart.
    """

    __tablename__ = "plans"
    # Named "state" here, ck_plans_state in the database (NAMING); migration 0008 creates it.
    __table_args__ = (CheckConstraint(f"state IN {state_sql(*PlanState)}", name="state"),)

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    namespace: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    spec: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, server_default=text("'{}'::jsonb"))
    rate_per_second: Mapped[float] = mapped_column(
        Float, nullable=False, server_default=text(f"{DEFAULT_RATE_PER_SECOND:g}")
    )
    start_at: Mapped[datetime | None] = _ts()
    state: Mapped[str] = mapped_column(Text, nullable=False, server_default=PlanState.LOADING.value)
    # The share of the list that may be sent now (rollout, A/B cohort); only ever raised.
    release_percent: Mapped[float] = mapped_column(Float, nullable=False, server_default=text("100"))
    # Set once the plan splits its list (released share below 100 %, or A/B variants), never
    # cleared: its rows are in the bucket index from then on (migration 0013).
    bucketed: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    recipients_complete: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    # The last retry generation done (spec.retry.generation); a request at or below it changes nothing.
    retry_generation: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    # With a window in each recipient's zone: the zones whose window is open now ("" = rows
    # without a zone); NULL when the plan has no such window (every row may go).
    open_zones: Mapped[list[str] | None] = mapped_column(ARRAY(Text), nullable=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


class Message(Base):
    """One recipient of one plan; the unit that is claimed, sent and counted."""

    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("plan_id", "email"),
        Index("ix_messages_plan_id_status", "plan_id", "status"),
        # Only rows of plans that split their list: the others never read by bucket (0013).
        Index("ix_messages_plan_id_bucket", "plan_id", "bucket", postgresql_where=text("bucketed")),
        # "sent in the last N hours" is a range scan on this index.
        Index("ix_messages_sent_at", "sent_at", postgresql_where=text("sent_at IS NOT NULL")),
        # The failures listing pages through a plan's unsent rows by id on this index.
        Index(
            "ix_messages_plan_id_id_unsent",
            "plan_id",
            "id",
            postgresql_where=text("status IN ('failed', 'suppressed')"),
        ),
        # Only sent rows have an SES id: an unsent row takes no entry (migration 0012).
        Index(
            "uq_messages_ses_message_id",
            "ses_message_id",
            unique=True,
            postgresql_where=text("ses_message_id IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    # No foreign key: its check per stored row was a fifth of a load's database time. The
    # loaders check the plan once per batch; a trigger deletes a deleted plan's rows (0012).
    plan_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    row_no: Mapped[int] = mapped_column(Integer, nullable=False)
    # The recipient's cohort bucket, computed by the database (``emailplan.contract.cohorts``).
    bucket: Mapped[int] = mapped_column(Integer, Computed(BUCKET_SQL, persisted=True), nullable=False)
    # The plan's ``bucketed`` when the row was stored, or since the plan became bucketed.
    bucketed: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    email: Mapped[str] = mapped_column(Text, nullable=False)
    name: Mapped[str | None] = mapped_column(Text, nullable=True)
    vars: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, server_default=text("'{}'::jsonb"))
    status: Mapped[str] = mapped_column(Text, nullable=False, server_default="created")
    ses_message_id: Mapped[str | None] = mapped_column(Text, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)  # the whole failure text
    # The short class of a failure (``emailplan.contract.failures``) or ``Suppressed: <why>``.
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The recipient's IANA zone (``schedule.window.timeZone: recipient``); NULL: the fallback zone.
    time_zone: Mapped[str | None] = mapped_column(Text, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    lease_owner: Mapped[str | None] = mapped_column(Text, nullable=True)
    lease_until: Mapped[datetime | None] = _ts()
    enqueued: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    sent_at: Mapped[datetime | None] = _ts()
    delivered_at: Mapped[datetime | None] = _ts()
    bounced_at: Mapped[datetime | None] = _ts()
    soft_bounced_at: Mapped[datetime | None] = _ts()
    complained_at: Mapped[datetime | None] = _ts()
    opened_at: Mapped[datetime | None] = _ts()
    clicked_at: Mapped[datetime | None] = _ts()
    unsubscribed_at: Mapped[datetime | None] = _ts()


def _counter() -> Mapped[int]:
    return mapped_column(BigInteger, nullable=False, server_default=text("0"))


class PlanCounters(Base):
    """Per-plan counts, updated in the same transaction as every status change or event."""

    __tablename__ = "plan_counters"

    plan_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("plans.id", ondelete="CASCADE"), primary_key=True
    )
    total: Mapped[int] = _counter()
    created: Mapped[int] = _counter()
    processing: Mapped[int] = _counter()
    sent: Mapped[int] = _counter()
    failed: Mapped[int] = _counter()
    stopped: Mapped[int] = _counter()
    suppressed: Mapped[int] = _counter()
    delivered: Mapped[int] = _counter()
    bounced: Mapped[int] = _counter()
    soft_bounced: Mapped[int] = mapped_column(
        "softBounced", BigInteger, nullable=False, server_default=text("0")
    )
    complained: Mapped[int] = _counter()
    opened: Mapped[int] = _counter()
    opened_machine: Mapped[int] = mapped_column(
        "openedMachine", BigInteger, nullable=False, server_default=text("0")
    )
    clicked: Mapped[int] = _counter()
    unsubscribed: Mapped[int] = _counter()
    ses_rejected: Mapped[int] = mapped_column(
        "sesRejected", BigInteger, nullable=False, server_default=text("0")
    )
    retried: Mapped[int] = _counter()


class PlanFailureReason(Base):
    """How many of a plan's messages failed (or were suppressed) for each reason.

    Bumped in the same transaction that moves the messages, like ``plan_counters``,
    so the plan view's top reasons are a read of a few rows, never a scan of the
    plan's failures.
    """

    __tablename__ = "plan_failure_reasons"

    plan_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("plans.id", ondelete="CASCADE"), primary_key=True
    )
    reason: Mapped[str] = mapped_column(Text, primary_key=True)
    count: Mapped[int] = _counter()


class Event(Base):
    """An SES / tracking event, recorded once per SNS MessageId (the idempotency key)."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    sns_message_id: Mapped[str] = mapped_column(Text, nullable=False, unique=True)
    plan_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), nullable=True, index=True)
    message_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True, index=True)
    event_type: Mapped[str] = mapped_column(Text, nullable=False)
    subtype: Mapped[str | None] = mapped_column(Text, nullable=True)
    recipient: Mapped[str | None] = mapped_column(Text, nullable=True)
    occurred_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, server_default=text("'{}'::jsonb"))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


class RecipientLoad(Base):
    """The plan's recipient load job (``emailplan.contract.plans.LoadJob`` as JSON), one per plan.

    Kept in the database, not in the API process, so a restarted API (or another
    replica) sees a load that was running and the operator can have it restarted.
    """

    __tablename__ = "recipient_loads"

    plan_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("plans.id", ondelete="CASCADE"), primary_key=True
    )
    state: Mapped[str] = mapped_column(Text, nullable=False, server_default="pending")
    job: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, server_default=text("'{}'::jsonb"))
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


class Suppression(Base):
    """An address never to send to again (lowercased), across all plans."""

    __tablename__ = "suppressions"

    email: Mapped[str] = mapped_column(Text, primary_key=True)
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    plan_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


class QuotaSlice(Base):
    """Permits of the account's 24-hour quota reserved in one slice of time, by every pod.

    ``sender.store.quota.reserve`` adds to the current slice and sums the window under one
    advisory lock, so processes sending at the same moment never pass ``Max24HourSend``.
    """

    __tablename__ = "quota_slices"

    slice: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    permits: Mapped[int] = mapped_column(Integer, nullable=False)


class RateBucket(Base):
    """A token bucket shared by every worker process (key ``plan:<uuid>`` or ``account``).

    Workers take small grants of tokens in short transactions (row lock), so the
    plan's rate holds however many pods run; the refill uses the database clock,
    so pods with skewed clocks still agree.
    """

    __tablename__ = "rate_buckets"

    key: Mapped[str] = mapped_column(Text, primary_key=True)
    tokens: Mapped[float] = mapped_column(Float, nullable=False, server_default=text("0"))
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
