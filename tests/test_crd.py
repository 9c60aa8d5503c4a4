"""The EmailPlan CRD against a real kube-apiserver: examples accepted, bad specs refused, columns shown."""

from __future__ import annotations

import copy
import json
import os
from typing import Any

import pytest
import yaml

from devenv.kube import KubeCluster
from emailplan.contract.plans import DEFAULT_RATE_PER_SECOND
from emailplan.operator.planspec import read_spec
from emailplan.operator.settings import OperatorSettings

pytestmark = pytest.mark.kube

BASE: dict[str, Any] = {
    "apiVersion": "emailplan.io/v1alpha1",
    "kind": "EmailPlan",
    "metadata": {"name": "p"},
    "spec": {
        "from": "News <news@example.com>",
        "subject": "Hi {{ name }}",
        "text": "Hello {{ name }}",
        "recipients": {"inline": [{"email": "a@example.com", "name": "A"}]},
    },
}


def plan(**changes: Any) -> dict[str, Any]:
    """BASE with spec fields replaced; a value of None removes the field. Dotted keys go deep."""
    doc = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        node = doc["spec"]
        for p in parents:
            node = node.setdefault(p, {})
        if value is None:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return doc


def apply(kube: KubeCluster, ns: str, doc: dict[str, Any]) -> tuple[int, str]:
    r = kube.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(doc), check=False)
    return r.returncode, r.stdout + r.stderr


INVALID = [
    ("missing from", plan(**{"from": None}), "spec.from: Required value"),
    ("missing subject", plan(subject=None), "spec.subject: Required value"),
    ("no body", plan(text=None), "set html, text or templateRef"),
    ("no recipients", plan(recipients=None), "spec.recipients: Required value"),
    (
        "two recipient sources",
        plan(recipients={"inline": [{"email": "a@example.com"}], "s3": {"bucket": "lists", "key": "a.csv"}}),
        "exactly one of recipients.inline, recipients.configMapRef, recipients.s3 or recipients.fromPlan",
    ),
    ("empty recipient source", plan(recipients={}), "spec.recipients"),
    (
        "non-ASCII local part in a recipient",
        plan(recipients={"inline": [{"email": "üser@example.com"}]}),
        "only ASCII before the @ (SES does not send SMTPUTF8 mail)",
    ),
    (
        "non-ASCII local part in from",
        plan(**{"from": "Zoë <zoë@example.com>"}),
        "only ASCII before the @ (SES does not send SMTPUTF8 mail)",
    ),
    ("non-ASCII local part in replyTo", plan(replyTo=["zoë@example.com"]), "only ASCII before the @"),
    (
        "bad inline address",
        plan(recipients={"inline": [{"email": "not-an-address"}]}),
        "spec.recipients.inline[0].email",
    ),
    ("zero rate", plan(rate__perSecond=0), "spec.rate.perSecond"),
    ("rate not a number", plan(rate__perSecond="fast"), "spec.rate.perSecond"),
    ("zero replicas", plan(senders__maxReplicas=0), "spec.senders.maxReplicas"),
    ("too many replicas", plan(senders__maxReplicas=1000), "spec.senders.maxReplicas"),
    ("startAt not a time", plan(schedule__startAt="tomorrow"), "spec.schedule.startAt"),
    (
        "unknown list format",
        plan(recipients={"configMapRef": {"name": "c", "key": "k", "format": "xml"}}),
        "spec.recipients.configMapRef.format",
    ),
    ("s3 without bucket", plan(recipients={"s3": {"key": "a.csv"}}), "spec.recipients.s3.bucket"),
    ("bounce rate above 1", plan(safety__maxBounceRate=1.5), "spec.safety.maxBounceRate"),
    ("bad SES tag name", plan(ses__tags={"bad key!": "x"}), "ses.tags names may contain only"),
    ("bad from address", plan(**{"from": "nobody"}), "from must be one address like"),
    ("suspend not a bool", plan(suspend="yes"), "spec.suspend"),
    (
        "templateRef with inline body",
        plan(templateRef={"name": "t", "htmlKey": "h"}),
        "templateRef replaces html and text",
    ),
    ("unknown field", plan(subjet="typo"), "subjet"),
    ("replyTo not a list", plan(replyTo="a@example.com"), "spec.replyTo"),
    ("configuration set with spaces", plan(ses__configurationSet="my set"), "spec.ses.configurationSet"),
    # Campaign features (issue 15): each refusal names the field.
    ("one variant", plan(variants=[{"name": "a"}]), "spec.variants"),
    ("six variants", plan(variants=[{"name": f"v{i}"} for i in range(6)]), "spec.variants"),
    ("variant names repeat", plan(variants=[{"name": "a"}, {"name": "a"}]), "variants: names must be unique"),
    ("variant name", plan(variants=[{"name": "A B"}, {"name": "b"}]), "variants[].name must be lowercase"),
    (
        "winner is no variant",
        plan(variants=[{"name": "a"}, {"name": "b"}], abTest={"winner": "c"}),
        "abTest.winner must be the name of one of the variants",
    ),
    (
        "decideAfter not a duration",
        plan(abTest__decideAfter="4 hours"),
        "abTest.decideAfter must be a duration",
    ),
    ("unknown metric", plan(abTest__metric="revenue"), "spec.abTest.metric"),
    ("abTest without variants", plan(abTest={"testPercent": 20}), "abTest needs variants"),
    ("test cohort of 0 %", plan(abTest__testPercent=0), "spec.abTest.testPercent"),
    (
        "A/B test with rollout",
        plan(variants=[{"name": "a"}, {"name": "b"}], rollout={"steps": [{"percent": 100}]}),
        "variants (an A/B test) and rollout cannot be combined",
    ),
    (
        "bulk sending with variants",
        plan(variants=[{"name": "a"}, {"name": "b"}], ses={"sendApi": "bulk"}),
        "A/B variants need sendApi raw",
    ),
    ("unknown sendApi", plan(ses={"sendApi": "smtp"}), "spec.ses.sendApi"),
    (
        "steps not increasing",
        plan(rollout={"steps": [{"percent": 10}, {"percent": 5}, {"percent": 100}]}),
        "rollout.steps: percent must be strictly increasing",
    ),
    (
        "steps repeat a percent",
        plan(rollout={"steps": [{"percent": 10}, {"percent": 10}, {"percent": 100}]}),
        "rollout.steps: percent must be strictly increasing",
    ),
    ("last step below 100", plan(rollout={"steps": [{"percent": 10}]}), "the last step must be percent 100"),
    (
        "hold not a duration",
        plan(rollout={"steps": [{"percent": 10, "hold": "soon"}, {"percent": 100}]}),
        "rollout.steps[].hold must be a duration",
    ),
    (
        "window time",
        plan(schedule={"window": {"from": "9:00", "to": "17:00"}}),
        "schedule.window.from must be",
    ),
    (
        "window hour 24",
        plan(schedule={"window": {"from": "09:00", "to": "24:00"}}),
        "schedule.window.to must be",
    ),
    (
        "window day",
        plan(schedule={"window": {"from": "09:00", "to": "17:00", "days": ["Monday"]}}),
        "spec.schedule.window.days",
    ),
    (
        "empty window",
        plan(schedule={"window": {"from": "09:00", "to": "09:00"}}),
        "schedule.window: from and to must differ",
    ),
]


@pytest.mark.parametrize(("case", "doc", "message"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_spec_is_refused_naming_the_field(
    crd_installed: KubeCluster, namespace: str, case: str, doc: dict[str, Any], message: str
) -> None:
    code, out = apply(crd_installed, namespace, doc)
    assert code != 0, f"{case}: accepted but should be refused:\n{out}"
    assert message in out, f"{case}: error does not name the problem ({message!r}):\n{out}"
    assert "\\x00-\\x1F" not in out, f"{case}: a raw regular expression is no explanation:\n{out}"
    listed = crd_installed.kubectl("get", "eplan", "-n", namespace, "-o", "name").stdout
    assert listed.strip() == "", "a refused plan must not exist"


def test_valid_base_is_accepted_with_defaults(crd_installed: KubeCluster, namespace: str) -> None:
    code, out = apply(crd_installed, namespace, plan())
    assert code == 0, out
    got = json.loads(crd_installed.kubectl("get", "emailplan", "p", "-n", namespace, "-o", "json").stdout)
    spec = got["spec"]
    assert spec["rate"]["perSecond"] == DEFAULT_RATE_PER_SECOND
    # What the operator's settings own is never a CRD default (the chart's sender.* values decide).
    assert "safety" not in spec and "senders" not in spec, spec
    assert spec["unsubscribe"]["enabled"] is True
    assert spec["suspend"] is False
    for feature in ("variants", "abTest", "rollout"):  # campaign features only when written
        assert feature not in spec
    assert "window" not in spec["schedule"]


def test_breaker_defaults_of_a_new_plan_come_from_the_operator_settings(
    crd_installed: KubeCluster, namespace: str
) -> None:
    """Issue 21: the CRD filled spec.safety, so the chart's sender.maxBounceRate never reached a plan."""
    assert apply(crd_installed, namespace, plan())[0] == 0
    got = json.loads(crd_installed.kubectl("get", "emailplan", "p", "-n", namespace, "-o", "json").stdout)
    strict = OperatorSettings(
        dev_mode=True, default_max_bounce_rate=0.02, default_max_complaint_rate=0.0005, default_max_replicas=7
    )
    for settings in (OperatorSettings(dev_mode=True), strict):
        spec = read_spec(got["spec"], settings)
        assert spec.problems == ()
        assert (spec.max_bounce_rate, spec.max_complaint_rate, spec.max_replicas) == (
            settings.default_max_bounce_rate,
            settings.default_max_complaint_rate,
            settings.default_max_replicas,
        )


def test_idn_domains_and_unicode_names_are_admitted(crd_installed: KubeCluster, namespace: str) -> None:
    """An internationalized domain is sendable (as punycode); only the local part must be ASCII."""
    doc = plan(
        **{"from": "Bücher Zoë <news@bücher.example>"},
        replyTo=["hilfe@bücher.example"],
        recipients={"inline": [{"email": "user@bücher.example", "name": "Zoë Müller"}]},
    )
    code, out = apply(crd_installed, namespace, doc)
    assert code == 0, out


def _example_docs(repo_root: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    folder = os.path.join(repo_root, "examples")
    for name in sorted(os.listdir(folder)):
        if name.startswith("emailplan") and name.endswith(".yaml"):
            with open(os.path.join(folder, name)) as f:
                out += [(name, d) for d in yaml.safe_load_all(f) if d and d.get("kind") == "EmailPlan"]
    return out


def test_examples_are_accepted(crd_installed: KubeCluster, namespace: str, repo_root: str) -> None:
    docs = _example_docs(repo_root)
    assert len(docs) >= 3
    for name, doc in docs:
        code, out = apply(crd_installed, namespace, doc)
        assert code == 0, f"{name}: {out}"


def test_printer_columns_show_patched_status(crd_installed: KubeCluster, namespace: str) -> None:
    kube = crd_installed
    assert apply(kube, namespace, plan(variants=[{"name": "plain"}, {"name": "bold"}]))[0] == 0
    status = {
        "phase": "Sending",
        "total": 2000,
        "sent": 840,
        "failed": 3,
        "opened": 120,
        "progress": "42%",
        "delivered": 800,
        "bounced": 7,
        "complained": 1,
        "clicked": 55,
        "unsubscribed": 2,
        "suppressed": 5,
        "stopped": 0,
        "retried": 4,
        "replicas": 2,
        "message": "sending",
        "abTest": {"winner": "bold", "reason": "best uniqueOpens: plain 10.00%, bold 14.00%"},
    }
    r = kube.kubectl(
        "patch",
        "emailplan",
        "p",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )
    assert r.returncode == 0, r.stderr

    table = kube.kubectl("get", "emailplans", "-n", namespace).stdout.splitlines()
    assert table[0].split() == ["NAME", "PHASE", "TOTAL", "SENT", "FAILED", "OPENED", "PROGRESS", "AGE"]
    assert table[1].split()[:7] == ["p", "Sending", "2000", "840", "3", "120", "42%"]

    # Core Endpoints also has the short name "ep" and wins a bare `kubectl get ep`;
    # the group-qualified short name (and "eplan") always mean EmailPlan.
    wide = kube.kubectl("get", "ep.emailplan.io", "-n", namespace, "-o", "wide").stdout.splitlines()
    header = wide[0].split()
    row = dict(zip(header, wide[1].split(), strict=True))
    assert row["DELIVERED"] == "800" and row["BOUNCED"] == "7" and row["COMPLAINED"] == "1"
    assert row["CLICKED"] == "55" and row["REPLICAS"] == "2" and row["RATE"] == "14"
    assert row["WINNER"] == "bold"  # the A/B test's winner (issue 15)
    assert row["RETRIED"] == "4"  # queued again by spec.retry (issue 24)
    assert header[-1] == "MESSAGE" and row["MESSAGE"] == "sending"  # what the plan does or what is wrong


def test_status_is_validated_too(crd_installed: KubeCluster, namespace: str) -> None:
    kube = crd_installed
    assert apply(kube, namespace, plan())[0] == 0
    r = kube.kubectl(
        "patch",
        "emailplan",
        "p",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"phase": "Exploded"}}),
        check=False,
    )
    assert r.returncode != 0 and "status.phase" in r.stderr


def test_spec_is_not_writable_through_status(crd_installed: KubeCluster, namespace: str) -> None:
    kube = crd_installed
    assert apply(kube, namespace, plan())[0] == 0
    kube.kubectl(
        "patch",
        "emailplan",
        "p",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"spec": {"subject": "changed"}}),
    )
    got = json.loads(kube.kubectl("get", "eplan", "p", "-n", namespace, "-o", "json").stdout)
    assert got["spec"]["subject"] == "Hi {{ name }}"
