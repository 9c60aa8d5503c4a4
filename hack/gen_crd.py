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
from emailplan.contract.plans import DEFAULT_RATE_PER_SECOND
from emailplan.operator.decide import Phase

# Admission refuses what can never be sent: control characters (CR/LF would start
# a new header), a local part over 64 characters (RFC 5321). The operator and the
# data plane run the full check (emailplan.contract) on everything, also on plans
# that reach the API without kubectl.
_NO_CTL = r"\x00-\x1F\x7F"
_ADDR = rf"[^@\s<>{_NO_CTL}]{{1,64}}@[^@\s<>{_NO_CTL}]+\.[^@\s<>{_NO_CTL}]+"
EMAIL_PATTERN = rf"^{_ADDR}$"
FROM_PATTERN = rf"^([^<>{_NO_CTL}]*<{_ADDR}>|{_ADDR})$"
ONE_SOURCE_RULE = "[has(self.inline), has(self.configMapRef), has(self.s3)].filter(x, x).size() == 1"
ONE_SOURCE_MESSAGE = "set exactly one of recipients.inline, recipients.configMapRef or recipients.s3"
DESCRIPTION = "An email campaign: recipients, templates, schedule and rate; status shows live progress."
TAG_PATTERN = r"^[A-Za-z0-9_-]{1,256}$"

ADDRESS_HINT = "no line breaks or control characters, at most 64 characters before the @ and 254 in all"


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
