"""Table tests of the operator's pure decisions: replicas, phase, progress, breaker, validation, rendering."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from emailplan.operator import decisions as d
from emailplan.operator.deployment import deployment_name, render_deployment
from emailplan.operator.planspec import Templates, plan_payload, read_spec
from emailplan.operator.recipients import first_recipient, inline_ndjson
from emailplan.operator.settings import OperatorSettings
from emailplan.operator.validation import check_address, check_templates

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(hours=1)
EARLIER = NOW - timedelta(hours=1)


def replicas(**kw: Any) -> int:
    args: dict[str, Any] = dict(
        now=NOW,
        start_at=None,
        suspended=False,
        loaded=True,
        backlog=10_000,
        rate_per_second=14,
        per_pod_rate=50,
        max_replicas=4,
        backlog_per_replica=100,
    )
    args.update(kw)
    return d.desired_replicas(**args)


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({}, 1),
        ({"rate_per_second": 200}, 4),
        ({"rate_per_second": 120}, 3),
        ({"rate_per_second": 1000}, 4),  # capped by maxReplicas
        ({"rate_per_second": 1000, "max_replicas": 10}, 10),
        ({"rate_per_second": 1000, "backlog": 150}, 2),  # capped by the backlog
        ({"rate_per_second": 1000, "backlog": 1}, 1),
        ({"rate_per_second": 1000, "backlog": 50, "current": 3}, 3),  # running pods finish the tail
        ({"rate_per_second": 100, "backlog": 50, "current": 4}, 2),  # but a lower rate still scales down
        ({"backlog": 50, "current": 3, "suspended": True}, 0),
        ({"backlog": 0, "current": 3}, 0),
        ({"backlog": 0}, 0),  # nothing left
        ({"suspended": True}, 0),
        ({"loaded": False}, 0),
        ({"start_at": LATER}, 0),  # before the schedule
        ({"start_at": EARLIER}, 1),
        ({"start_at": NOW}, 1),
    ],
)
def test_desired_replicas(kw: dict[str, Any], expected: int) -> None:
    assert replicas(**kw) == expected


def phase(**kw: Any) -> str:
    args: dict[str, Any] = dict(
        valid=True,
        registered=True,
        loaded=True,
        backlog=5,
        now=NOW,
        start_at=None,
        suspended=False,
        tripped=False,
    )
    args.update(kw)
    return d.phase(**args)


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({}, "Sending"),
        ({"valid": False}, "Failed"),
        ({"registered": False}, "Pending"),
        ({"loaded": False}, "Loading"),
        ({"loaded": False, "start_at": LATER}, "Loading"),  # loading happens before the start
        ({"start_at": LATER}, "Scheduled"),
        ({"suspended": True}, "Paused"),
        ({"tripped": True}, "Paused"),
        ({"backlog": 0}, "Completed"),
        ({"backlog": 0, "suspended": True}, "Completed"),  # nothing left to pause
        ({"suspended": True, "start_at": LATER}, "Paused"),
    ],
)
def test_phase(kw: dict[str, Any], expected: str) -> None:
    assert phase(**kw) == expected


@pytest.mark.parametrize(
    ("counts", "completed", "expected"),
    [
        ({"total": 0}, False, "0%"),
        ({"total": 0}, True, "100%"),
        ({"total": 100, "created": 58}, False, "42%"),
        ({"total": 3, "created": 1, "processing": 1}, False, "33%"),
        ({"total": 1000, "created": 1}, False, "99%"),  # never 100% while something is left
        ({"total": 10, "created": 0}, True, "100%"),
    ],
)
def test_progress(counts: dict[str, int], completed: bool, expected: str) -> None:
    assert d.progress(d.normalize_counts(counts), completed=completed) == expected


def test_normalize_counts_fills_missing_and_ignores_garbage() -> None:
    counts = d.normalize_counts({"total": "7", "sent": None, "opened": -3, "extra": 5, "processing": 2})
    assert counts["total"] == 7 and counts["sent"] == 0 and counts["opened"] == 0
    assert set(d.COUNT_FIELDS) <= set(counts) and "extra" not in counts
    assert d.remaining({**counts, "created": 3}) == 5


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        ({"delivered": 50, "bounced": 49}, None),  # below the minimum sample
        ({"delivered": 95, "bounced": 5}, None),  # exactly 5 % is allowed
        ({"delivered": 94, "bounced": 6}, "BounceRateExceeded"),
        ({"delivered": 1000, "complained": 1}, None),  # 0.1 %
        ({"delivered": 1000, "complained": 2}, "ComplaintRateExceeded"),
        ({"delivered": 80, "bounced": 20, "complained": 10}, "BounceRateExceeded"),
    ],
)
def test_circuit_breaker(counts: dict[str, int], expected: str | None) -> None:
    trip = d.circuit_breaker(
        d.normalize_counts(counts), max_bounce_rate=0.05, max_complaint_rate=0.001, min_sample=100
    )
    assert (trip.reason if trip else None) == expected
    if trip:
        assert "%" in trip.message


def test_condition_keeps_transition_time_while_status_holds() -> None:
    first = d.condition([], "Ready", True, "Sending", "go", now=NOW)
    again = d.condition([first], "Ready", True, "Sending", "still", now=LATER)
    flipped = d.condition([again], "Ready", False, "Paused", "stop", now=LATER)
    assert first["lastTransitionTime"] == again["lastTransitionTime"] == "2026-05-01T12:00:00Z"
    assert flipped["lastTransitionTime"] == "2026-05-01T13:00:00Z" and flipped["status"] == "False"
    merged = d.merge_conditions([first, {"type": "Valid", "status": "True"}], [flipped])
    assert [c["type"] for c in merged] == ["Ready", "Valid"] and merged[0]["status"] == "False"


def test_status_changes_only_differences() -> None:
    assert d.status_changes({"sent": 1, "phase": "Sending"}, {"sent": 1, "phase": "Sending"}) == {}
    assert d.status_changes({"sent": 1}, {"sent": 2, "phase": "Sending"}) == {"sent": 2, "phase": "Sending"}


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("news@example.com", True),
        ("Acme News <news@example.com>", True),
        ('"Acme, Inc." <news@example.com>', True),
        ("not an address", False),
        ("Acme <news@>", False),
        ("news@exa mple.com", False),
    ],
)
def test_check_address(value: str, ok: bool) -> None:
    assert (check_address(value) == []) is ok


@pytest.mark.parametrize(
    ("templates", "recipient", "problem"),
    [
        (
            Templates("Hi {{ name }}", "<p>{{ city }}</p>", None),
            {"email": "a@b.co", "vars": {"city": "Oslo"}},
            None,
        ),
        (
            Templates("Hi {{ name }}", None, "{{ city }}"),
            {"email": "a@b.co", "city": "Oslo"},
            None,
        ),  # csv column
        (Templates("Hi {{ nmae }}", None, "x"), {"email": "a@b.co", "name": "A"}, "subject"),
        (Templates("Hi", "<p>{% if %}</p>", None), {"email": "a@b.co"}, "html: template syntax error"),
        (Templates("Hi", None, "{{ ''.__class__.__mro__ }}"), {"email": "a@b.co"}, "text"),
        (Templates("Hi", None, None), {"email": "a@b.co"}, "no body"),
        (Templates("Hi {{ anything }}", None, "x"), None, None),  # S3: only syntax can be checked
    ],
)
def test_check_templates(templates: Templates, recipient: dict[str, Any] | None, problem: str | None) -> None:
    problems = check_templates(templates, recipient)
    if problem is None:
        assert problems == []
    else:
        assert any(problem in p for p in problems), problems


def test_first_recipient_csv_and_jsonl() -> None:
    assert first_recipient("email,name,city\n\na@b.co,Ann,Oslo\n", "csv") == {
        "email": "a@b.co",
        "name": "Ann",
        "city": "Oslo",
    }
    assert first_recipient('\n{"email":"a@b.co","vars":{"x":"1"}}\n', "jsonl") == {
        "email": "a@b.co",
        "vars": {"x": "1"},
    }
    assert first_recipient("email\n", "csv") is None
    assert first_recipient("not json\n", "jsonl") is None


def test_inline_ndjson_round_trip() -> None:
    rows = [{"email": f"r{i}@example.com", "vars": {"n": str(i)}} for i in range(3000)]
    body = b"".join(inline_ndjson(rows)).decode()
    assert len(list(inline_ndjson(rows))) > 1  # streamed in chunks
    import json

    assert [json.loads(line) for line in body.splitlines()] == rows


def test_read_spec_defaults_and_payload() -> None:
    spec = read_spec(
        {
            "from": "A <a@example.com>",
            "subject": "s",
            "text": "t",
            "recipients": {"inline": [{"email": "x@example.com"}]},
            "schedule": {"startAt": "2026-05-01T13:00:00Z"},
            "suspend": True,
        }
    )
    assert (spec.rate, spec.max_replicas, spec.per_pod_rate) == (14.0, 4, 50.0)
    assert spec.start_at == LATER and spec.recipients_source == "inline"
    assert (spec.max_bounce_rate, spec.max_complaint_rate, spec.min_sample) == (0.05, 0.001, 100)
    payload = plan_payload(
        name="p", namespace="ns", spec=spec, templates=Templates("s", None, "t"), suspended=True
    )
    assert payload["from"] == "A <a@example.com>" and payload["ratePerSecond"] == 14.0
    assert payload["startAt"] == "2026-05-01T13:00:00Z" and payload["suspended"] is True
    assert payload["unsubscribe"] == {"enabled": True} and payload["tracking"] == {
        "opens": True,
        "clicks": False,
    }


def test_render_deployment() -> None:
    settings = OperatorSettings(
        sender_image="registry/emailplan:1",
        sender_secret_name=["emailplan-sender"],
        sender_env={"EMAILPLAN_PUBLIC_URL": "http://x"},
    )
    dep = render_deployment(
        plan_name="spring", namespace="mail", plan_uid="u-1", replicas=3, settings=settings
    )
    assert dep["metadata"]["name"] == deployment_name("spring") == "emailplan-spring-sender"
    assert dep["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    assert dep["metadata"]["labels"]["app.kubernetes.io/component"] == "sender"
    assert dep["spec"]["replicas"] == 3
    pod = dep["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == ["emailplan", "worker"] and container["image"] == "registry/emailplan:1"
    assert {"name": "EMAILPLAN_PLAN_ID", "value": "u-1"} in container["env"]
    assert {"name": "EMAILPLAN_PUBLIC_URL", "value": "http://x"} in container["env"]
    assert container["envFrom"] == [{"secretRef": {"name": "emailplan-sender"}}]
    assert container["resources"]["requests"]["cpu"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    sel = dep["spec"]["selector"]["matchLabels"]
    assert all(dep["spec"]["template"]["metadata"]["labels"][k] == v for k, v in sel.items())
    # Read-only root filesystem, with a private writable /tmp.
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert pod["volumes"][0]["name"] == "tmp" and "emptyDir" in pod["volumes"][0]
    assert "imagePullSecrets" not in pod


def test_render_deployment_with_pull_secrets_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMAILPLAN_SENDER_IMAGE_PULL_SECRETS", "regcred, other")
    dep = render_deployment(
        plan_name="p", namespace="n", plan_uid="u", replicas=1, settings=OperatorSettings()
    )
    assert dep["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "regcred"}, {"name": "other"}]


def test_settings_secret_never_in_repr() -> None:
    settings = OperatorSettings(api_key="s3cr3t-key")  # type: ignore[arg-type]
    assert "s3cr3t-key" not in repr(settings) and "s3cr3t-key" not in str(settings.model_dump())
