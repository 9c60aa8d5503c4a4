"""Generate crds/emailplan.yaml from one readable Python description.

The schema is long and repetitive (a dozen integer counters, nested defaults);
writing it as data keeps it consistent. Run: python hack/gen_crd.py
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from emailplan.contract.addresses import ADDRESS_RULES
from emailplan.contract.headers import HEADER_VALUE_PATTERN
from emailplan.contract.plans import DEFAULT_RATE_PER_SECOND, MAX_VARIANTS, VARIANT_NAME, SendApi
from emailplan.operator.decide import Phase
from emailplan.operator.planspec import (
    CLOCK_PATTERN,
    DEFAULT_AB_MIN_SAMPLE,
    DEFAULT_DECIDE_AFTER,
    DEFAULT_FALLBACK,
    DEFAULT_METRIC,
    DEFAULT_TEST_PERCENT,
    DEFAULT_TIME_ZONE,
    DURATION_PATTERN,
    MAX_ROLLOUT_STEPS,
    WEEKDAYS,
    AbFallback,
    AbMetric,
)

# Admission refuses what can never be sent: control characters (CR/LF would start
# a new header), a local part over 64 characters (RFC 5321) or with a character that
# is not printable ASCII (SES does not send SMTPUTF8 mail; an IDN domain is fine, it is
# sent as punycode). The operator and the data plane run the full check
# (emailplan.contract) on everything, also on plans that reach the API without kubectl.
_NO_CTL = r"\x00-\x1F\x7F"
_LOCAL = r"[!-;=?A-~]"  # printable ASCII but for < > @ (short: CEL costs grow with the pattern)
_ADDR = rf"{_LOCAL}{{1,64}}@[^@\s<>{_NO_CTL}]+\.[^@\s<>{_NO_CTL}]+"
EMAIL_PATTERN = rf"^{_ADDR}$"
FROM_PATTERN = rf"^([^<>{_NO_CTL}]*<{_ADDR}>|{_ADDR})$"
ONE_SOURCE_RULE = "[has(self.inline), has(self.configMapRef), has(self.s3)].filter(x, x).size() == 1"
ONE_SOURCE_MESSAGE = "set exactly one of recipients.inline, recipients.configMapRef or recipients.s3"
DESCRIPTION = "An email campaign: recipients, templates, schedule and rate; status shows live progress."
TAG_PATTERN = r"^[A-Za-z0-9_-]{1,256}$"

ADDRESS_HINT = (
    "no line breaks or control characters, at most 64 characters before the @ and 254 in all, "
    "only ASCII before the @ (SES does not send SMTPUTF8 mail)"
)


def matches(pattern: str, message: str) -> dict[str, Any]:
    """A CEL rule instead of a bare ``pattern``: kubectl then shows ``message``, not the regex."""
    return {"x-kubernetes-validations": [{"rule": f"self.matches(r'{pattern}')", "message": message}]}


COUNTS = {
    "total": (
        "messages in the plan: the list's accepted rows after de-duplication (rejected rows and "
        "duplicates are not counted), suppressed ones included; once the plan is finished, "
        "total = sent + failed + stopped + suppressed"
    ),
    "created": "messages waiting to be sent",
    "sent": "messages SES accepted",
    "failed": "messages SES refused permanently or that ran out of retries",
    "stopped": "messages that will not be sent because the plan was stopped or deleted",
    "suppressed": "recipients skipped because the address is on the suppression list",
    "delivered": "SES delivery events",
    "bounced": "hard bounces (SES bounce type Permanent); they suppress the address and feed the breaker",
    "softBounced": "soft bounces (SES bounce type Transient or Undetermined); the address is not suppressed",
    "complained": "SES complaint events",
    "opened": "unique opens by people (machine opens are counted apart)",
    "clicked": "unique clicks",
    "unsubscribed": "one-click and link unsubscribes",
}


def s(desc: str, **kw: Any) -> dict[str, Any]:
    return {"type": "string", "description": desc, **kw}


def obj(desc: str, props: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return {"type": "object", "description": desc, "properties": props, **kw}


def fmt_enum() -> dict[str, Any]:
    return s(
        "list format: csv (header row with an email column) or jsonl (one JSON object a line)",
        enum=["csv", "jsonl"],
        default="csv",
    )


def duration(desc: str, field: str, **kw: Any) -> dict[str, Any]:
    return s(
        f"{desc}; a duration like 15m, 4h or 1h30m",
        maxLength=32,
        **kw,
        **matches(DURATION_PATTERN, f"{field} must be a duration like 15m, 4h or 1h30m (units h, m, s)"),
    )


def clock(desc: str, field: str) -> dict[str, Any]:
    return s(desc, maxLength=5, **matches(CLOCK_PATTERN, f"{field} must be a time of day HH:MM, e.g. 09:00"))


variant = obj(
    "one A/B variant: what it changes of the plan's message (fields not set keep the plan's)",
    {
        "name": s(
            "variant name (lowercase letters, digits and -), shown in status",
            maxLength=32,
            **matches(VARIANT_NAME, "variants[].name must be lowercase letters, digits and - (at most 32)"),
        ),
        "subject": s(
            "subject template of this variant", minLength=1, maxLength=998, pattern=HEADER_VALUE_PATTERN
        ),
        "html": s("HTML body template of this variant", minLength=1, maxLength=512 * 1024),
        "text": s("plain-text body template of this variant", minLength=1, maxLength=512 * 1024),
        "fromName": s(
            "display name of the sender for this variant",
            minLength=1,
            maxLength=256,
            pattern=HEADER_VALUE_PATTERN,
        ),
    },
    required=["name"],
)

ab_test = obj(
    "A/B test of the variants: a test cohort first, then the winner for the rest of the list",
    {
        "testPercent": {
            "type": "number",
            "description": "share of the list in the test cohort, split evenly over the variants",
            "default": DEFAULT_TEST_PERCENT,
            "minimum": 0,
            "exclusiveMinimum": True,
            "maximum": 100,
        },
        "metric": s(
            "what picks the winner: uniqueOpens (human opens per sent), uniqueClicks (clickers per sent) "
            "or clicksPerDelivered (clickers per delivered); machine opens never count",
            enum=[m.value for m in AbMetric],
            default=DEFAULT_METRIC.value,
        ),
        "decideAfter": duration(
            "how long after the test cohort finished sending the winner is chosen",
            "abTest.decideAfter",
            default=DEFAULT_DECIDE_AFTER,
        ),
        "minSample": {
            "type": "integer",
            "description": "messages every variant needs in the metric's denominator (sent or delivered)",
            "default": DEFAULT_AB_MIN_SAMPLE,
            "minimum": 1,
            "maximum": 10_000_000,
        },
        "fallback": s(
            "when decideAfter passed and the data names no winner (too little data or a tie): "
            "firstVariant sends the first variant, pause waits for a person to set winner",
            enum=[f.value for f in AbFallback],
            default=DEFAULT_FALLBACK.value,
        ),
        "winner": s(
            "set by a person: the variant the rest of the list receives (decides at once)", maxLength=32
        ),
    },
    # No default for the block: a plan without variants must not get one (the fields' defaults
    # apply when abTest is written; planspec states the same defaults for variants alone).
)

rollout_step = obj(
    "one rollout step",
    {
        "percent": {
            "type": "number",
            "description": "share of the list released once this step begins",
            "minimum": 0,
            "exclusiveMinimum": True,
            "maximum": 100,
        },
        "hold": duration(
            "after the step's messages are handled, wait this long (in the send window) before judging it",
            "rollout.steps[].hold",
            default="0s",
        ),
    },
    required=["percent"],
)

rollout = obj(
    "progressive rollout: release the list in steps, each judged on its own bounce and complaint rates",
    {
        "steps": {
            "type": "array",
            "description": "steps with strictly increasing percent, the last one 100",
            "minItems": 1,
            "maxItems": MAX_ROLLOUT_STEPS,
            "items": rollout_step,
            "x-kubernetes-validations": [
                {
                    "rule": "self.map(x, x.percent).isSorted() && "
                    "self.all(a, self.exists_one(b, b.percent == a.percent))",
                    "message": "rollout.steps: percent must be strictly increasing",
                },
                {
                    "rule": "self[size(self) - 1].percent == 100.0",
                    "message": "rollout.steps: the last step must be percent 100",
                },
            ],
        },
        "maxBounceRate": {
            "type": "number",
            "minimum": 0,
            "maximum": 1,
            "description": "a step's bounce rate that pauses the rollout (default: safety.maxBounceRate)",
        },
        "maxComplaintRate": {
            "type": "number",
            "minimum": 0,
            "maximum": 1,
            "description": "a step's complaint rate that pauses the rollout (default: the safety one)",
        },
    },
    required=["steps"],
)

window = obj(
    "send only inside this weekly window (one time zone for the whole plan)",
    {
        "days": {
            "type": "array",
            "description": "days the window opens (a window crossing midnight belongs to the day it opens); "
            "default every day",
            "minItems": 1,
            "maxItems": 7,
            "x-kubernetes-list-type": "set",
            "items": s("day of week", enum=list(WEEKDAYS)),
        },
        "from": clock("opening time of day, HH:MM", "schedule.window.from"),
        "to": clock(
            "closing time of day, HH:MM; earlier than from: the window crosses midnight", "schedule.window.to"
        ),
        "timeZone": s(
            "IANA time zone, e.g. Europe/Berlin (DST handled)",
            default=DEFAULT_TIME_ZONE,
            minLength=1,
            maxLength=64,
        ),
    },
    required=["from", "to"],
    **{
        "x-kubernetes-validations": [
            {"rule": "self.from != self.to", "message": "schedule.window: from and to must differ"}
        ]
    },
)

recipient = obj(
    "one recipient",
    {
        "email": s(
            "recipient address",
            format="email",
            maxLength=254,
            **matches(EMAIL_PATTERN, f"email must be an address like ann@example.com: {ADDRESS_HINT}"),
        ),
        "name": s(
            "display name, available to templates as {{ name }}", maxLength=256, pattern=HEADER_VALUE_PATTERN
        ),
        "vars": {
            "type": "object",
            "description": "template variables for this recipient",
            "additionalProperties": {"type": "string", "maxLength": 4096},
            "maxProperties": 64,
        },
    },
    required=["email"],
)

spec = obj(
    "What to send, to whom, when and how fast.",
    {
        "from": s(
            "sender address (RFC 5322, display name allowed), e.g. 'News <news@example.com>'",
            minLength=3,
            maxLength=320,
            **matches(
                FROM_PATTERN, f"from must be one address like 'News <news@example.com>': {ADDRESS_HINT}"
            ),
        ),
        "replyTo": {
            "type": "array",
            "description": "Reply-To addresses",
            "maxItems": 10,
            "items": s(
                "address",
                format="email",
                maxLength=254,
                **matches(
                    EMAIL_PATTERN, f"replyTo entries must be addresses like news@example.com: {ADDRESS_HINT}"
                ),
            ),
        },
        "subject": s(
            "subject template (Jinja2, per-recipient variables); no line breaks or control characters",
            minLength=1,
            maxLength=998,
            pattern=HEADER_VALUE_PATTERN,
        ),
        "html": s("HTML body template (Jinja2, autoescaped)", minLength=1, maxLength=512 * 1024),
        "text": s("plain-text body template (Jinja2)", minLength=1, maxLength=512 * 1024),
        "templateRef": obj(
            "read the bodies from a ConfigMap in the plan's namespace instead of inline",
            {
                "name": s("ConfigMap name", minLength=1, maxLength=253),
                "htmlKey": s("key holding the HTML body", minLength=1, maxLength=253),
                "textKey": s("key holding the text body", minLength=1, maxLength=253),
            },
            required=["name"],
            **{
                "x-kubernetes-validations": [
                    {
                        "rule": "has(self.htmlKey) || has(self.textKey)",
                        "message": "templateRef needs htmlKey or textKey",
                    }
                ]
            },
        ),
        "recipients": obj(
            f"exactly one source of recipients. {ADDRESS_RULES}",
            {
                "inline": {
                    "type": "array",
                    "description": "recipients listed in the resource (small lists)",
                    "minItems": 1,
                    "maxItems": 5000,
                    "items": recipient,
                },
                "configMapRef": obj(
                    "recipients in a ConfigMap key",
                    {
                        "name": s("ConfigMap name", minLength=1, maxLength=253),
                        "key": s("key in the ConfigMap", minLength=1, maxLength=253),
                        "format": fmt_enum(),
                    },
                    required=["name", "key"],
                ),
                "s3": obj(
                    "recipients in an S3 object (large lists; loaded by the data plane)",
                    {
                        "bucket": s(
                            "bucket name",
                            minLength=3,
                            maxLength=63,
                            pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$",
                        ),
                        "key": s("object key", minLength=1, maxLength=1024),
                        "format": fmt_enum(),
                    },
                    required=["bucket", "key"],
                ),
            },
            oneOf=[{"required": ["inline"]}, {"required": ["configMapRef"]}, {"required": ["s3"]}],
            **{
                "x-kubernetes-validations": [
                    {
                        "rule": ONE_SOURCE_RULE,
                        "message": ONE_SOURCE_MESSAGE,
                    }
                ]
            },
        ),
        "schedule": obj(
            "when to start",
            {
                "startAt": s("RFC 3339 time; nothing is sent before it", format="date-time"),
                "window": window,
            },
            default={},
        ),
        "rate": obj(
            "send rate",
            {
                "perSecond": {
                    "type": "number",
                    "description": "total emails per second across all sender pods",
                    "default": DEFAULT_RATE_PER_SECOND,
                    "minimum": 0,
                    "exclusiveMinimum": True,
                    "maximum": 100000,
                },
            },
            default={},
        ),
        "senders": obj(
            "sender pod scaling policy",
            {
                "maxReplicas": {
                    "type": "integer",
                    "description": "upper bound of sender pods",
                    "default": 4,
                    "minimum": 1,
                    "maximum": 100,
                },
                "perPodRate": {
                    "type": "number",
                    # No default here: one would hide the operator's setting (the chart's sender.perPodRate).
                    "description": "emails per second one sender pod is given "
                    "(default: the operator's setting, the chart's sender.perPodRate)",
                    "minimum": 0,
                    "exclusiveMinimum": True,
                    "maximum": 100000,
                },
            },
            default={},
        ),
        "suspend": {
            "type": "boolean",
            "description": "pause sending; resume later without losing place",
            "default": False,
        },
        "tracking": obj(
            "engagement tracking",
            {
                "opens": {"type": "boolean", "description": "add a signed open pixel", "default": True},
                "clicks": {
                    "type": "boolean",
                    "description": "rewrite links through signed redirects",
                    "default": False,
                },
            },
            default={},
        ),
        "unsubscribe": obj(
            "RFC 8058 one-click unsubscribe",
            {
                "enabled": {
                    "type": "boolean",
                    "description": "add List-Unsubscribe headers",
                    "default": True,
                },
            },
            default={},
        ),
        "ses": obj(
            "passed to SES with every message",
            {
                "configurationSet": s("SES configuration set", pattern=r"^[A-Za-z0-9_-]{1,64}$"),
                "sendApi": s(
                    "how senders call SES: raw (one SendEmail per recipient, every template feature) "
                    "or bulk (SendBulkEmail, 50 recipients a call from a stored SES template: only "
                    "{{ variable }} substitutions, no A/B variants)",
                    enum=[m.value for m in SendApi],
                    default=SendApi.RAW.value,
                ),
                "tags": {
                    "type": "object",
                    "description": "SES message tags (name: value)",
                    "maxProperties": 50,
                    "additionalProperties": s("tag value", pattern=TAG_PATTERN),
                    "x-kubernetes-validations": [
                        {
                            "rule": "self.all(k, k.matches('^[A-Za-z0-9_-]{1,256}$'))",
                            "message": "ses.tags names may contain only A-Z a-z 0-9 _ - (at most 256)",
                        }
                    ],
                },
            },
        ),
        "variants": {
            "type": "array",
            "description": "A/B variants (2-5) of the message; see abTest",
            "minItems": 2,
            "maxItems": MAX_VARIANTS,
            "items": variant,
            "x-kubernetes-validations": [
                {
                    "rule": "self.all(a, self.exists_one(b, b.name == a.name))",
                    "message": "variants: names must be unique",
                }
            ],
        },
        "abTest": ab_test,
        "rollout": rollout,
        "safety": obj(
            "reputation circuit breaker: pause the plan when rates cross these",
            {
                "maxBounceRate": {
                    "type": "number",
                    "minimum": 0,
                    "maximum": 1,
                    "default": 0.05,
                    "description": "bounced / (delivered + bounced) that pauses the plan",
                },
                "maxComplaintRate": {
                    "type": "number",
                    "minimum": 0,
                    "maximum": 1,
                    "default": 0.001,
                    "description": "complained / delivered that pauses the plan",
                },
                "minSample": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": 1000000,
                    "default": 100,
                    "description": "outcomes needed before the rates are judged",
                },
            },
            default={},
        ),
    },
    required=["from", "subject", "recipients"],
    **{
        "x-kubernetes-validations": [
            {
                "rule": "has(self.html) || has(self.text) || has(self.templateRef)",
                "message": "set html, text or templateRef: a message needs a body",
            },
            {
                "rule": "!has(self.templateRef) || (!has(self.html) && !has(self.text))",
                "message": "templateRef replaces html and text: set one or the other",
            },
            {
                "rule": "!has(self.abTest) || !has(self.abTest.winner) || "
                "(has(self.variants) && self.variants.exists(v, v.name == self.abTest.winner))",
                "message": "abTest.winner must be the name of one of the variants",
            },
            {
                "rule": "!has(self.abTest) || has(self.variants)",
                "message": "abTest needs variants: list 2 to 5 of them",
            },
            {
                "rule": "!has(self.variants) || !has(self.ses) || !has(self.ses.sendApi) "
                "|| self.ses.sendApi != 'bulk'",
                "message": "ses.sendApi bulk sends one stored SES template: A/B variants need sendApi raw",
            },
            {
                "rule": "!has(self.variants) || !has(self.rollout)",
                "message": "variants (an A/B test) and rollout cannot be combined: the test cohort and the "
                "rollout steps would both decide which share of the list is sent; use one",
            },
        ]
    },
)

condition = obj(
    "standard Kubernetes condition",
    {
        "type": s("condition type", maxLength=316),
        "status": s("True, False or Unknown", enum=["True", "False", "Unknown"]),
        "reason": s("machine-readable reason (CamelCase)", maxLength=1024),
        "message": s("human-readable message", maxLength=32768),
        "lastTransitionTime": s("when status last changed", format="date-time"),
        "observedGeneration": {"type": "integer", "format": "int64", "minimum": 0},
    },
    required=["type", "status"],
)

status_props: dict[str, Any] = {
    "phase": s(
        "lifecycle phase",
        enum=[p.value for p in Phase],
    ),
    **{k: {"type": "integer", "format": "int64", "minimum": 0, "description": v} for k, v in COUNTS.items()},
    "progress": s("share of messages finished, e.g. '42%'", pattern=r"^[0-9]{1,3}%$"),
    "replicas": {"type": "integer", "minimum": 0, "description": "sender pods wanted now"},
    "startedAt": s("first send", format="date-time"),
    "completedAt": s("when nothing was left", format="date-time"),
    "observedGeneration": {"type": "integer", "format": "int64", "minimum": 0},
    "recipientsLoaded": {"type": "boolean", "description": "recipients handed to the data plane"},
    "message": s("latest human-readable summary", maxLength=4096),
    "conditions": {
        "type": "array",
        "items": condition,
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
    },
    "abTest": obj(
        "the A/B test: per-variant counts over the test cohort, the winner and why",
        {
            "testPercent": {"type": "number"},
            "metric": s("metric the winner is chosen by"),
            "cohortFinishedAt": s(
                "when the test cohort had no message left", format="date-time", nullable=True
            ),
            "decideAt": s("when the winner is chosen from the data", format="date-time", nullable=True),
            "winner": s("the variant the rest of the list receives", nullable=True),
            "reason": s("why this winner (or why none yet)", maxLength=4096),
            "decidedAt": s("when the winner was chosen", format="date-time", nullable=True),
            "variants": {
                "type": "array",
                "items": obj(
                    "one variant's counts over the test cohort; rates are fractions (0.12 = 12 %)",
                    {
                        "name": s("variant"),
                        **{
                            k: {"type": "integer", "format": "int64", "minimum": 0}
                            for k in (
                                "recipients",
                                "sent",
                                "delivered",
                                "opened",
                                "clicked",
                                "bounced",
                                "complained",
                            )
                        },
                        **{
                            k: {"type": "number", "minimum": 0}
                            for k in ("openRate", "clickRate", "clicksPerDelivered")
                        },
                    },
                ),
            },
        },
    ),
    "rollout": obj(
        "the progressive rollout: current step, its hold and its own rates",
        {
            "step": {"type": "integer", "minimum": 1, "description": "current step (1-based)"},
            "steps": {"type": "integer", "minimum": 1},
            "percent": {"type": "number", "description": "share of the list released by this step"},
            "state": s("Sending, Holding or GateFailed"),
            "stepStartedAt": s("when this step began", format="date-time"),
            "holdStartedAt": s(
                "when the step's messages were all handled", format="date-time", nullable=True
            ),
            "heldSeconds": {
                "type": "integer",
                "minimum": 0,
                "description": "hold time so far (inside the window)",
            },
            "holdSeconds": {"type": "integer", "minimum": 0, "description": "the step's hold"},
            "baseline": {
                "type": "object",
                "description": "plan counts when the step began; the step's rates count from here",
                "additionalProperties": {"type": "integer", "format": "int64"},
            },
            "stepSample": {
                "type": "integer",
                "minimum": 0,
                "description": "delivered + bounced in this step",
            },
            "stepBounceRate": {"type": "number", "minimum": 0},
            "stepComplaintRate": {"type": "number", "minimum": 0},
        },
    ),
    "window": obj(
        "the send window now",
        {
            "open": {"type": "boolean"},
            "nextChange": s("when it next opens or closes", format="date-time", nullable=True),
            "schedule": s("the window, e.g. Mon,Tue 09:00-17:00 Europe/Berlin"),
        },
    ),
    "kopf": {
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
        "description": "operator framework bookkeeping",
    },
}


def col(name: str, path: str, typ: str = "integer", priority: int = 0, desc: str = "") -> dict[str, Any]:
    c: dict[str, Any] = {"name": name, "type": typ, "jsonPath": path}
    if priority:
        c["priority"] = priority
    if desc:
        c["description"] = desc
    return c


columns = [
    col("Phase", ".status.phase", "string"),
    col("Total", ".status.total"),
    col("Sent", ".status.sent"),
    col("Failed", ".status.failed"),
    col("Opened", ".status.opened"),
    col("Progress", ".status.progress", "string"),
    col("Age", ".metadata.creationTimestamp", "date"),
    col("Delivered", ".status.delivered", priority=1),
    col("Bounced", ".status.bounced", priority=1),
    col("Complained", ".status.complained", priority=1),
    col("Clicked", ".status.clicked", priority=1),
    col("Unsubscribed", ".status.unsubscribed", priority=1),
    col("Suppressed", ".status.suppressed", priority=1),
    col("Stopped", ".status.stopped", priority=1),
    col("Replicas", ".status.replicas", priority=1),
    col("Rate", ".spec.rate.perSecond", "number", priority=1, desc="emails per second"),
    col("Suspended", ".spec.suspend", "boolean", priority=1),
    col("Winner", ".status.abTest.winner", "string", priority=1, desc="the A/B test's winning variant"),
    col("Message", ".status.message", "string", priority=1, desc="what the plan is doing or what is wrong"),
]

crd = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {
        "name": "emailplans.emailplan.io",
        "labels": {"app.kubernetes.io/name": "emailplan", "app.kubernetes.io/part-of": "emailplan"},
    },
    "spec": {
        "group": "emailplan.io",
        "scope": "Namespaced",
        "names": {
            "plural": "emailplans",
            "singular": "emailplan",
            "kind": "EmailPlan",
            "listKind": "EmailPlanList",
            "shortNames": ["ep", "eplan"],
            "categories": ["all", "emailplan"],
        },
        "versions": [
            {
                "name": "v1alpha1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": columns,
                "schema": {
                    "openAPIV3Schema": obj(
                        DESCRIPTION,
                        {
                            "apiVersion": {"type": "string"},
                            "kind": {"type": "string"},
                            "metadata": {"type": "object"},
                            "spec": spec,
                            "status": obj("live progress, written by the operator", status_props),
                        },
                        required=["spec"],
                    )
                },
            }
        ],
    },
}

HEADER = "# Generated by hack/gen_crd.py: edit that file and rerun it.\n"

if __name__ == "__main__":
    out = Path(__file__).resolve().parent.parent / "crds" / "emailplan.yaml"
    out.write_text(HEADER + yaml.safe_dump(crd, sort_keys=False, width=120))
    print(f"wrote {out}")
