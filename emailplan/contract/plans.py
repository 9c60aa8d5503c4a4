"""The typed contract between the operator and the data plane (``/v1/plans/...``).

The operator builds these models, the API validates requests with them and
answers with them, and the OpenAPI document is generated from them, so a new
field is one edit here. Names are camelCase on the wire (like the CRD) and
snake_case in Python; every default is stated once, here.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import Field, StringConstraints, field_validator, model_validator

from emailplan.contract.account import AccountView
from emailplan.contract.addresses import Mailbox
from emailplan.contract.bulktemplates import bulk_template_problems
from emailplan.contract.counts import STATUS_COUNTS, StatusCounts
from emailplan.contract.followups import FromPlanSource
from emailplan.contract.headers import HeaderValue
from emailplan.contract.health import DependencyHealth
from emailplan.contract.kubemarks import matches
from emailplan.contract.wire import Wire

DEFAULT_RATE_PER_SECOND = 14.0  # SES's sandbox-exit rate; the CRD default reads this too
# Ids per SQS work message (the ledger enqueues them, a worker claims each message's at once).
# SQS calls cost per message, not per id: 500 ids make the queue's work per email a fifth of
# what 100 did (moto's CPU in the throughput benchmark), and a message stays small (~4 KB).
IDS_PER_QUEUE_MESSAGE = 500
# Backlog one sender pod is started for (the operator's default; a pod with nothing to claim
# only costs money).
BACKLOG_PER_REPLICA = 100
MAX_REPORTED_ROWS = 100  # rejected (and, apart, duplicate) rows a load job keeps
MAX_SUPPRESSIONS = 10_000  # addresses one suppression import may carry
ALL_RELEASED = 100.0  # the released share of a plan that does not roll out in steps


class PlanState(StrEnum):
    """Where a plan is in the data plane; ``done`` is decided by the ledger alone."""

    LOADING = "loading"  # the recipient list is not complete yet
    READY = "ready"  # complete; workers may claim
    SUSPENDED = "suspended"  # workers do not claim (spec.suspend or the breaker)
    STOPPED = "stopped"  # deleted: unsent messages became stopped
    DONE = "done"  # complete and nothing left to send

    @property
    def finished(self) -> bool:
        return self in (PlanState.STOPPED, PlanState.DONE)


class LoadState(StrEnum):
    """A recipient load job: ``pending`` → ``loading`` → ``loaded`` | ``failed``."""

    PENDING = "pending"
    LOADING = "loading"
    LOADED = "loaded"
    FAILED = "failed"


class LoadFailureReason(StrEnum):
    """Why a load failed, in the words the operator's ``LoadFailed`` condition uses."""

    OBJECT_MISSING = "ObjectMissing"
    ACCESS_DENIED = "AccessDenied"
    NOT_A_LIST = "NotAList"
    EMPTY_LIST = "EmptyList"
    UNAVAILABLE = "Unavailable"
    SUPPRESSION_LIST_UNAVAILABLE = "SuppressionListUnavailable"  # SES's account list unread: retried


class SuppressionReason(StrEnum):
    MANUAL = "manual"
    BOUNCE = "bounce"
    COMPLAINT = "complaint"
    UNSUBSCRIBE = "unsubscribe"


class LoadSourceKind(StrEnum):
    UPLOAD = "upload"
    S3 = "s3"
    FROM_PLAN = "fromPlan"  # a follow-up's audience, computed from another plan in the ledger


class Tracking(Wire):
    """Engagement tracking."""

    opens: bool = Field(True, description="add a signed open pixel")
    clicks: bool = Field(False, description="rewrite links through signed redirects")


class Unsubscribe(Wire):
    """RFC 8058 one-click unsubscribe."""

    enabled: bool = Field(True, description="add List-Unsubscribe headers")


class SendApi(StrEnum):
    """How the data plane calls SES for a plan.

    ``raw``: one SendEmail (Raw MIME) per recipient, rendered here with every Jinja2 feature.
    ``bulk``: SendBulkEmail, up to 50 recipients a call, from an SES template stored once per
    plan; only ``{{ variable }}`` substitutions (``contract.bulktemplates``), no A/B variants.
    """

    RAW = "raw"
    BULK = "bulk"


# One rule for admission (hack/gen_crd.py writes these into the CRD) and the plan API.
SES_TAG_PATTERN = r"^[A-Za-z0-9_-]{1,256}$"  # a tag name or value
CONFIGURATION_SET_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
MAX_SES_TAGS = 50
SesTagText = Annotated[str, StringConstraints(pattern=SES_TAG_PATTERN)]


class SesOptions(Wire):
    configuration_set: str | None = Field(None, pattern=CONFIGURATION_SET_PATTERN)
    tags: dict[SesTagText, SesTagText] = Field(default_factory=dict, max_length=MAX_SES_TAGS)
    send_api: SendApi = SendApi.RAW


MAX_BODY = 512 * 1024  # characters of one body template
VARIANT_NAME = r"^[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?$"
MAX_VARIANTS = 5


class Variant(Wire):
    """One A/B variant: what it changes of the plan's message (fields not set keep the plan's)."""

    name: str = Field(
        pattern=VARIANT_NAME,
        max_length=32,
        description="variant name (lowercase letters, digits and -), shown in status",
        json_schema_extra=matches(
            VARIANT_NAME, "variants[].name must be lowercase letters, digits and - (at most 32)"
        ),
    )
    subject: HeaderValue | None = Field(
        None,
        min_length=1,
        max_length=998,
        description="subject template of this variant",
    )
    html: str | None = Field(
        None, min_length=1, max_length=MAX_BODY, description="HTML body template of this variant"
    )
    text: str | None = Field(
        None, min_length=1, max_length=MAX_BODY, description="plain-text body template of this variant"
    )
    from_name: HeaderValue | None = Field(
        None,
        min_length=1,
        max_length=256,
        description="display name of the sender for this variant",
    )


MAX_OPEN_ZONES = 1000  # the tz database has about 600 names


class PlanPayload(Wire):
    """``PUT /v1/plans/{planId}``: everything the data plane needs to send the plan.

    ``suspended`` is the effective suspension (``spec.suspend`` or the circuit
    breaker): it is the only channel that pauses and resumes a plan.
    """

    name: str = Field(min_length=1, max_length=253)
    namespace: str = Field("", max_length=63)
    sender: Mailbox = Field(alias="from", min_length=3, max_length=998)
    reply_to: list[Mailbox] = Field(default_factory=list, max_length=50)
    subject: HeaderValue = Field(min_length=1, max_length=998)
    html: str | None = None
    text: str | None = None
    rate_per_second: float = Field(DEFAULT_RATE_PER_SECOND, gt=0, le=100_000)
    start_at: datetime | None = None
    suspended: bool = False
    tracking: Tracking = Field(default_factory=Tracking)
    unsubscribe: Unsubscribe = Field(default_factory=Unsubscribe)
    ses: SesOptions = Field(default_factory=SesOptions)
    # A/B test: the first ``test_percent`` of the list (by bucket, see ``cohorts``) is split
    # evenly over the variants; the rest receives ``winner`` once the operator chose it.
    variants: list[Variant] = Field(default_factory=list, max_length=MAX_VARIANTS)
    test_percent: float = Field(0.0, ge=0, le=100)
    winner: str | None = Field(None, max_length=32)
    # The share of the list that may be sent now (rollout steps, the A/B cohort). The data
    # plane never lowers it: rows once queued cannot be called back.
    release_percent: float = Field(ALL_RELEASED, ge=0, le=100)
    # Local-time delivery: the recipients' zones whose send window is open now ("" stands for
    # rows without a zone); only their rows are queued and claimed. None: no such window.
    open_zones: list[str] | None = Field(None, max_length=MAX_OPEN_ZONES)

    @field_validator("start_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("startAt must carry a time zone (RFC 3339)")
        return value

    @model_validator(mode="after")
    def _body(self) -> PlanPayload:
        if not (self.html or self.text):
            raise ValueError("html or text is required")
        names = [v.name for v in self.variants]
        if len(names) == 1:
            raise ValueError("variants: an A/B test needs at least two variants")
        if len(set(names)) != len(names):
            raise ValueError("variants: names must be unique")
        if names and not 0 < self.test_percent <= 100:
            raise ValueError("testPercent: an A/B test needs a test cohort above 0 %")
        if not names and self.test_percent:
            raise ValueError("testPercent: set only with variants")
        if self.winner is not None and self.winner not in names:
            raise ValueError(f"winner: {self.winner!r} is not one of the variants")
        if self.ses.send_api is SendApi.BULK:
            problems = bulk_template_problems(subject=self.subject, html=self.html, text=self.text)
            if names:
                problems.append("variants: ses.sendApi bulk sends one stored template; A/B variants need raw")
            if problems:
                raise ValueError("; ".join(problems))
        return self

    def variant_names(self) -> list[str]:
        return [v.name for v in self.variants]

    def sending_spec(self) -> dict[str, object]:
        """What the ledger keeps as the plan's spec (the worker compiles it).

        The name rides along so templates can say ``{{ plan }}``.
        """
        return self.model_dump(
            mode="json",
            include={
                "name",
                "sender",
                "reply_to",
                "subject",
                "html",
                "text",
                "tracking",
                "unsubscribe",
                "ses",
                "variants",
                "test_percent",
                "winner",
            },
        )


class PlanCounts(StatusCounts):
    """Counts of one plan (``GET /v1/results/count/{planId}`` and the plan view): the status
    counts plus ``processing``, the messages a sender pod holds now."""

    processing: int = 0
    opened_machine: int = 0  # opens by mail privacy proxies and link scanners, not in ``opened``
    ses_rejected: int = 0  # SES Reject events (virus found); never rows refused at load (``rejected``)

    @property
    def backlog(self) -> int:
        """Messages still to send: waiting plus claimed by a pod."""
        return self.created + self.processing

    def status_fields(self) -> dict[str, int]:
        """The counts the EmailPlan status shows, in the order of DESIGN.md."""
        wire = self.model_dump(by_alias=True)
        return {name: int(wire[name]) for name in STATUS_COUNTS}


class RowProblem(Wire):
    """One refused (or duplicate) row of a list, by record number."""

    row: int
    field: str = ""
    message: str


class LoadCounts(Wire):
    accepted: int = 0
    duplicates: int = 0
    suppressed: int = 0
    rejected: int = 0


class LoadResult(LoadCounts):
    """What one upload (or the whole job) did; the first rows of each kind, kept apart."""

    rejected_rows: list[RowProblem] = Field(default_factory=list)
    duplicate_rows: list[RowProblem] = Field(default_factory=list)

    def add_rejected(self, problem: RowProblem) -> None:
        self.rejected += 1
        if len(self.rejected_rows) < MAX_REPORTED_ROWS:
            self.rejected_rows.append(problem)

    def add_duplicate(self, problem: RowProblem) -> None:
        self.duplicates += 1
        if len(self.duplicate_rows) < MAX_REPORTED_ROWS:
            self.duplicate_rows.append(problem)


class S3Source(Wire):
    """``POST /v1/plans/{planId}/recipients/s3``: where the data plane reads the list itself."""

    bucket: str = Field(min_length=3, max_length=63)
    key: str = Field(min_length=1, max_length=1024)
    format: str = Field("csv", pattern=r"^(csv|jsonl|ndjson)$")


class LoadFailure(Wire):
    """Why a load failed; ``permanent``: trying the same list again cannot help (the data plane says).

    Permanent (not a list, empty, no such bucket or key, access denied): the plan ends
    ``Failed`` until its owner fixes the list and changes the spec. Transient (network,
    5xx, throttling): the operator tries again with backoff.
    """

    reason: LoadFailureReason
    message: str
    permanent: bool = False


class LoadJob(LoadResult):
    """The plan's recipient load, as the data plane records it (survives API restarts)."""

    state: LoadState = LoadState.PENDING
    source: LoadSourceKind = LoadSourceKind.UPLOAD
    s3: S3Source | None = None
    from_plan: FromPlanSource | None = None
    failure: LoadFailure | None = None
    attempts: int = 0
    updated_at: datetime | None = None


class VariantCounts(Wire):
    """One variant's counts over the A/B test cohort (what the winner is chosen from)."""

    name: str
    recipients: int = 0  # rows of the test cohort assigned to it (suppressed included)
    sent: int = 0
    delivered: int = 0
    opened: int = 0  # unique human opens (machine opens excluded)
    clicked: int = 0  # unique clickers
    bounced: int = 0
    complained: int = 0


SUPPRESSED_PREFIX = "Suppressed: "  # a suppressed message's reason: this + the suppression's reason
TOP_FAILURE_REASONS = 5  # reasons the plan view (and the EmailPlan status) shows


class FailureReason(Wire):
    """One reason messages were not sent, and how many: 'MessageRejected: Email address is not verified'."""

    # The reason is the short class of the failure (SES error code and first sentence, a
    # template error, ``gave up after N attempts: ...`` or ``Suppressed: bounce``); each
    # message keeps the full text apart (``FailedMessage.detail``).
    reason: str = Field(description="the short class of the failure")
    count: int = Field(description="messages with this reason", json_schema_extra={"minimum": 0})

    @property
    def suppressed(self) -> bool:
        """A suppressed address (never sent by design), not a send that went wrong."""
        return self.reason.startswith(SUPPRESSED_PREFIX)


class PlanView(PlanPayload):
    """``GET /v1/plans/{planId}``: the plan as registered, its state, counts and load job."""

    id: uuid.UUID
    state: PlanState
    recipients_loaded: bool = False
    counts: PlanCounts = Field(default_factory=PlanCounts)
    load: LoadJob | None = None
    released_backlog: int = 0  # created + processing among the released share (in open zones)
    retry_generation: int = 0  # the last retry generation done (``POST .../retry``)
    # With open_zones: rows still to send per recipient zone ("" = none), to judge their windows.
    zone_backlog: dict[str, int] | None = None
    variant_counts: list[VariantCounts] = Field(default_factory=list)
    # The most frequent reasons of failed and suppressed messages, most frequent first.
    failures: list[FailureReason] = Field(default_factory=list)
    # The API's view of what the plan needs (database, SQS, SES): an outage shows on the plan.
    dependencies: list[DependencyHealth] = Field(default_factory=list)
    # The SES account every plan shares: its 24-hour quota left and SES's review of it.
    account: AccountView | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    def payload(self) -> PlanPayload:
        """The registered plan, comparable with the one the operator would send now."""
        return PlanPayload.model_validate(self.model_dump(include=set(PlanPayload.model_fields)))


class SuppressionImport(Wire):
    """``POST /v1/suppressions``: addresses never to mail again."""

    emails: list[str] = Field(min_length=1, max_length=MAX_SUPPRESSIONS)
    reason: SuppressionReason = SuppressionReason.MANUAL
