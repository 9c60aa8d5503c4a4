"""The EmailPlan spec: the one definition of what a user writes.

Like kubebuilder's Go types with markers: ``hack/gen_crd.py`` generates the CRD's
schema, defaults and CEL rules from these models, ``docs/spec.md`` is generated
from their descriptions, and the operator parses a plan into ``EmailPlanSpec``
once and reads typed fields. A default the operator's settings own (the breaker
thresholds, ``senders.*``) is None here and never a CRD default: the chart's
values reach plans through the operator's settings (``operator.planspec``).
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import Field, field_validator

from emailplan.contract.addresses import ADDRESS_RULES
from emailplan.contract.headers import HEADER_VALUE_PATTERN
from emailplan.contract.kubemarks import EMPTY_OBJECT_DEFAULT, Rule, Ruled, cel, matches, merge
from emailplan.contract.plans import (
    CONFIGURATION_SET_PATTERN,
    DEFAULT_RATE_PER_SECOND,
    MAX_BODY,
    MAX_SES_TAGS,
    MAX_VARIANTS,
    SES_TAG_PATTERN,
    SendApi,
    Tracking,
    Unsubscribe,
    Variant,
)
from emailplan.contract.spec_campaign import AbTestSpec, RolloutSpec, WindowSpec
from emailplan.contract.spec_followup import FromPlanSpec, RetrySpec
from emailplan.contract.wire import Wire

# Admission refuses what can never be sent: control characters (CR/LF would start
# a new header), a local part over 64 characters (RFC 5321) or with a character that is
# not printable ASCII (SES does not send SMTPUTF8 mail; an IDN domain is fine, it is sent
# as punycode). The operator and the data plane run the full check (contract.addresses).
_NO_CTL = r"\x00-\x1F\x7F"
_LOCAL = r"[!-;=?A-~]"  # printable ASCII but for < > @ (short: CEL costs grow with the pattern)
_ADDR = rf"{_LOCAL}{{1,64}}@[^@\s<>{_NO_CTL}]+\.[^@\s<>{_NO_CTL}]+"
EMAIL_PATTERN = rf"^{_ADDR}$"
FROM_PATTERN = rf"^([^<>{_NO_CTL}]*<{_ADDR}>|{_ADDR})$"
TAG_PATTERN = SES_TAG_PATTERN  # one rule for admission and the plan API
ADDRESS_HINT = (
    "no line breaks or control characters, at most 64 characters before the @ and 254 in all, "
    "only ASCII before the @ (SES does not send SMTPUTF8 mail)"
)
TAG_PATTERN_RE = re.compile(TAG_PATTERN)
TAG_NAMES = "ses.tags names may contain only A-Z a-z 0-9 _ - (at most 256)"
UNIQUE_VARIANTS = "variants: names must be unique"

EMAIL = {"format": "email"}


class ListFormat(StrEnum):
    """A recipient list's format."""

    CSV = "csv"  # a header row with an email column
    JSONL = "jsonl"  # one JSON object a line


def _format() -> ListFormat:
    return Field(  # type: ignore[no-any-return]
        ListFormat.CSV,
        description="list format: csv (header row with an email column) or jsonl (one JSON object a line)",
    )


class TemplateRef(Ruled):
    """Read the bodies from a ConfigMap in the plan's namespace instead of inline."""

    name: str = Field(min_length=1, max_length=253, description="ConfigMap name")
    html_key: str | None = Field(None, min_length=1, max_length=253, description="key holding the HTML body")
    text_key: str | None = Field(None, min_length=1, max_length=253, description="key holding the text body")

    RULES = (
        Rule(
            "has(self.htmlKey) || has(self.textKey)",
            "templateRef needs htmlKey or textKey",
            lambda t: t.html_key is not None or t.text_key is not None,
        ),
    )


class InlineRecipient(Wire):
    """One recipient."""

    email: str = Field(
        max_length=254,
        pattern=EMAIL_PATTERN,
        description="recipient address",
        json_schema_extra=merge(
            EMAIL, matches(EMAIL_PATTERN, f"email must be an address like ann@example.com: {ADDRESS_HINT}")
        ),
    )
    name: str | None = Field(
        None,
        max_length=256,
        pattern=HEADER_VALUE_PATTERN,
        description="display name, available to templates as {{ name }}",
    )
    vars: dict[str, Annotated[str, Field(max_length=4096)]] | None = Field(
        None, max_length=64, description="template variables for this recipient"
    )
    time_zone: str | None = Field(
        None,
        max_length=64,
        description="the recipient's IANA time zone, e.g. Asia/Tokyo (schedule.window.timeZone recipient)",
    )


class ConfigMapList(Wire):
    """Recipients in a ConfigMap key."""

    name: str = Field(min_length=1, max_length=253, description="ConfigMap name")
    key: str = Field(min_length=1, max_length=253, description="key in the ConfigMap")
    format: ListFormat = _format()


class S3List(Wire):
    """Recipients in an S3 object (large lists; loaded by the data plane)."""

    bucket: str = Field(
        min_length=3, max_length=63, pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", description="bucket name"
    )
    key: str = Field(min_length=1, max_length=1024, description="object key")
    format: ListFormat = _format()


class RecipientSource(StrEnum):
    INLINE = "inline"
    CONFIG_MAP = "configMapRef"
    S3 = "s3"
    FROM_PLAN = "fromPlan"


class Recipients(Ruled):
    __doc__ = f"Exactly one source of recipients. {ADDRESS_RULES}"

    inline: list[InlineRecipient] | None = Field(
        None, min_length=1, max_length=5000, description="recipients listed in the resource (small lists)"
    )
    config_map_ref: ConfigMapList | None = None
    s3: S3List | None = None
    from_plan: FromPlanSpec | None = None

    RULES = (
        Rule(
            "[has(self.inline), has(self.configMapRef), has(self.s3), has(self.fromPlan)]"
            ".filter(x, x).size() == 1",
            "set exactly one of recipients.inline, recipients.configMapRef, recipients.s3 or "
            "recipients.fromPlan (a follow-up's audience comes from its source plan alone)",
            lambda r: len(r.sources()) == 1,
        ),
    )
    model_config = Ruled.model_config | {
        "json_schema_extra": {"oneOf": [{"required": [s.value]} for s in RecipientSource]}
    }

    def sources(self) -> list[RecipientSource]:
        given: dict[RecipientSource, object] = {RecipientSource.INLINE: self.inline}
        given[RecipientSource.CONFIG_MAP] = self.config_map_ref
        given[RecipientSource.S3] = self.s3
        given[RecipientSource.FROM_PLAN] = self.from_plan
        return [source for source, value in given.items() if value is not None]

    @property
    def source(self) -> RecipientSource | None:
        """The one source (None only for a model built without validation)."""
        found = self.sources()
        return found[0] if len(found) == 1 else None


class Schedule(Wire):
    """When to start."""

    start_at: datetime | None = Field(None, description="RFC 3339 time; nothing is sent before it")
    window: WindowSpec | None = None


class Rate(Wire):
    """Send rate."""

    per_second: float = Field(
        DEFAULT_RATE_PER_SECOND,
        gt=0,
        le=100_000,
        description="total emails per second across all sender pods",
    )


class Senders(Wire):
    """Sender pod scaling policy."""

    # No defaults: one would hide the operator's settings (the chart's sender.* values).
    max_replicas: int | None = Field(
        None,
        ge=1,
        le=100,
        description="upper bound of sender pods "
        "(default: the operator's setting, the chart's sender.maxReplicas)",
    )
    per_pod_rate: float | None = Field(
        None,
        gt=0,
        le=100_000,
        description="emails per second one sender pod is given "
        "(default: the operator's setting, the chart's sender.perPodRate)",
    )


class SesSpec(Wire):
    """Passed to SES with every message."""

    configuration_set: str | None = Field(
        None, pattern=CONFIGURATION_SET_PATTERN, description="SES configuration set"
    )
    send_api: SendApi = Field(
        SendApi.RAW,
        description="how senders call SES: raw (one SendEmail per recipient, every template feature) or bulk "
        "(SendBulkEmail, 50 recipients a call from a stored SES template: only {{ variable }} substitutions, "
        "no A/B variants)",
    )
    tags: dict[str, Annotated[str, Field(pattern=TAG_PATTERN, description="tag value")]] = Field(
        default_factory=dict,
        max_length=MAX_SES_TAGS,
        description="SES message tags (name: value)",
        json_schema_extra=cel((f"self.all(k, k.matches('{TAG_PATTERN}'))", TAG_NAMES)),
    )

    @field_validator("tags")
    @classmethod
    def _tag_names(cls, tags: dict[str, str]) -> dict[str, str]:
        if not all(TAG_PATTERN_RE.fullmatch(k) for k in tags):
            raise ValueError(TAG_NAMES)
        return tags


class Safety(Wire):
    """Reputation circuit breaker: pause the plan when rates cross these."""

    # No defaults: the operator's settings own them (the chart's sender.maxBounceRate and
    # sender.maxComplaintRate), so a default here would make those settings dead.
    max_bounce_rate: float | None = Field(
        None,
        ge=0,
        le=1,
        description="bounced / (delivered + bounced) that pauses the plan "
        "(default: the operator's setting, the chart's sender.maxBounceRate)",
    )
    max_complaint_rate: float | None = Field(
        None,
        ge=0,
        le=1,
        description="complained / delivered that pauses the plan "
        "(default: the operator's setting, the chart's sender.maxComplaintRate)",
    )
    min_sample: int | None = Field(
        None,
        ge=1,
        le=1_000_000,
        description="outcomes needed before the rates are judged (default: the operator's setting)",
    )


def _is_bulk(s: EmailPlanSpec) -> bool:
    return s.ses is not None and s.ses.send_api is SendApi.BULK


class EmailPlanSpec(Ruled):
    """What to send, to whom, when and how fast."""

    sender: str = Field(
        alias="from",
        min_length=3,
        max_length=320,
        pattern=FROM_PATTERN,
        description="sender address (RFC 5322, display name allowed), e.g. 'News <news@example.com>'",
        json_schema_extra=matches(
            FROM_PATTERN, f"from must be one address like 'News <news@example.com>': {ADDRESS_HINT}"
        ),
    )
    reply_to: list[
        Annotated[
            str,
            Field(
                max_length=254,
                pattern=EMAIL_PATTERN,
                description="address",
                json_schema_extra=merge(
                    EMAIL,
                    matches(
                        EMAIL_PATTERN,
                        f"replyTo entries must be addresses like news@example.com: {ADDRESS_HINT}",
                    ),
                ),
            ),
        ]
    ] = Field(default_factory=list, max_length=10, description="Reply-To addresses")
    subject: str = Field(
        min_length=1,
        max_length=998,
        pattern=HEADER_VALUE_PATTERN,
        description="subject template (Jinja2, per-recipient variables); "
        "no line breaks or control characters",
    )
    html: str | None = Field(
        None, min_length=1, max_length=MAX_BODY, description="HTML body template (Jinja2, autoescaped)"
    )
    text: str | None = Field(
        None, min_length=1, max_length=MAX_BODY, description="plain-text body template (Jinja2)"
    )
    template_ref: TemplateRef | None = None
    recipients: Recipients
    schedule: Schedule = Field(default_factory=Schedule, json_schema_extra=EMPTY_OBJECT_DEFAULT)
    rate: Rate = Field(default_factory=Rate, json_schema_extra=EMPTY_OBJECT_DEFAULT)
    senders: Senders = Field(default_factory=Senders)
    suspend: bool = Field(False, description="pause sending; resume later without losing place")
    tracking: Tracking = Field(default_factory=Tracking, json_schema_extra=EMPTY_OBJECT_DEFAULT)
    unsubscribe: Unsubscribe = Field(default_factory=Unsubscribe, json_schema_extra=EMPTY_OBJECT_DEFAULT)
    ses: SesSpec = Field(default_factory=SesSpec)
    variants: list[Variant] | None = Field(
        None,
        min_length=2,
        max_length=MAX_VARIANTS,
        description=f"A/B variants (2-{MAX_VARIANTS}) of the message; see abTest",
        json_schema_extra=cel(("self.all(a, self.exists_one(b, b.name == a.name))", UNIQUE_VARIANTS)),
    )
    # No default for the block: a plan without variants must not get one; variants alone run
    # the test with AbTestSpec's defaults (operator.planspec).
    ab_test: AbTestSpec | None = None
    rollout: RolloutSpec | None = None
    safety: Safety = Field(default_factory=Safety)
    retry: RetrySpec | None = None

    RULES = (
        Rule(
            "has(self.html) || has(self.text) || has(self.templateRef)",
            "set html, text or templateRef: a message needs a body",
            lambda s: s.html is not None or s.text is not None or s.template_ref is not None,
        ),
        Rule(
            "!has(self.templateRef) || (!has(self.html) && !has(self.text))",
            "templateRef replaces html and text: set one or the other",
            lambda s: s.template_ref is None or (s.html is None and s.text is None),
        ),
        Rule(
            "!has(self.abTest) || !has(self.abTest.winner) || "
            "(has(self.variants) && self.variants.exists(v, v.name == self.abTest.winner))",
            "abTest.winner must be the name of one of the variants",
            lambda s: s.ab_test is None or s.ab_test.winner is None or s.ab_test.winner in s.variant_names(),
        ),
        Rule(
            "!has(self.abTest) || has(self.variants)",
            f"abTest needs variants: list 2 to {MAX_VARIANTS} of them",
            lambda s: s.ab_test is None or s.variants is not None,
        ),
        Rule(
            "!has(self.variants) || !has(self.ses) || !has(self.ses.sendApi) || self.ses.sendApi != 'bulk'",
            "ses.sendApi bulk sends one stored SES template: A/B variants need sendApi raw",
            lambda s: s.variants is None or not _is_bulk(s),
        ),
        Rule(
            "!has(self.variants) || !has(self.rollout)",
            "variants (an A/B test) and rollout cannot be combined: the test cohort and the "
            "rollout steps would both decide which share of the list is sent; use one",
            lambda s: s.variants is None or s.rollout is None,
        ),
    )

    @field_validator("variants")
    @classmethod
    def _unique(cls, variants: list[Variant] | None) -> list[Variant] | None:
        names = [v.name for v in variants or []]
        if len(set(names)) != len(names):
            raise ValueError(UNIQUE_VARIANTS)
        return variants

    def variant_names(self) -> list[str]:
        return [v.name for v in self.variants or []]
