"""Issue 21: the EmailPlan spec is one typed model; the CRD, its defaults and docs/spec.md come from it.

A second copy of a fact (a default restated in the operator, a hand-edited CRD,
a count name listed twice) makes one of these fail.
"""

from __future__ import annotations

from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin

import pytest
import yaml
from crdschema import defaults
from gen_crd import outputs, spec_schema
from pydantic import BaseModel
from pydantic_core import PydanticUndefined
from support.decisions import SPEC

from emailplan.contract import STATUS_COUNTS
from emailplan.contract.plans import BACKLOG_PER_REPLICA, PlanCounts
from emailplan.contract.spec import EmailPlanSpec
from emailplan.operator.planspec import read_spec
from emailplan.operator.settings import OperatorSettings
from emailplan.sender.models import COUNTER_COLUMNS

SILENT = {k: v for k, v in SPEC.items() if k != "senders"}  # a plan that leaves every operator default open


@pytest.mark.parametrize("path", list(outputs()), ids=lambda p: str(p.name))
def test_generated_files_are_current(path: Path) -> None:
    """crds/emailplan.yaml, the chart's copy and docs/spec.md equal a fresh generation."""
    assert path.read_text() == outputs()[path], f"{path} is stale or hand-edited: run python hack/gen_crd.py"


def _model_defaults(model: type[BaseModel], prefix: str = "") -> dict[str, Any]:
    """Every default a model states, by wire path, in the CRD's notation (nested objects as ``{}``)."""
    out: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        path = f"{prefix}{field.alias or name}"
        ann = field.annotation
        options = get_args(ann) if get_origin(ann) in (Union, UnionType) else (ann,)
        inner = [a for a in options if a is not type(None)]
        sub = inner[0] if len(inner) == 1 and isinstance(inner[0], type) else None
        if sub is not None and issubclass(sub, BaseModel):
            out |= _model_defaults(sub, f"{path}.")
        elif get_origin(inner[0]) is list:
            item = get_args(inner[0])[0]
            if isinstance(item, type) and issubclass(item, BaseModel):
                out |= _model_defaults(item, f"{path}[].")
        if field.default is not PydanticUndefined and field.default is not None:
            out[path] = getattr(field.default, "value", field.default)
    return out


def test_crd_defaults_are_the_models() -> None:
    crd = defaults(spec_schema())
    objects = {path for path, value in crd.items() if value == {}}
    model = _model_defaults(EmailPlanSpec)
    assert {k: v for k, v in crd.items() if k not in objects} == model
    assert objects == {"schedule", "rate", "tracking", "unsubscribe"}


def test_operator_owned_defaults_are_not_crd_defaults() -> None:
    """The bug: safety's CRD default {} (0.05 / 0.001 / 100) made the chart's thresholds dead."""
    schema = spec_schema()["properties"]
    for block in ("safety", "senders"):
        assert defaults(schema[block]) == {}, f"spec.{block} must take its defaults from the operator"
        assert "default" not in schema[block]


@pytest.mark.parametrize(
    ("settings", "spec_patch", "expected"),
    [
        (OperatorSettings(dev_mode=True), {}, (0.05, 0.001, 100, 4, 14.0)),
        (
            OperatorSettings(
                dev_mode=True,
                default_max_bounce_rate=0.02,
                default_max_complaint_rate=0.0005,
                breaker_min_sample=500,
                default_max_replicas=9,
                default_per_pod_rate=3,
            ),
            {},
            (0.02, 0.0005, 500, 9, 3.0),
        ),
        (  # what the plan says wins over the settings
            OperatorSettings(dev_mode=True, default_max_bounce_rate=0.02),
            {"safety": {"maxBounceRate": 0.1, "minSample": 10}, "senders": {"maxReplicas": 2}},
            (0.1, 0.001, 10, 2, 14.0),
        ),
    ],
    ids=["chart defaults", "changed settings", "plan values"],
)
def test_thresholds_a_plan_is_judged_by(
    settings: OperatorSettings, spec_patch: dict[str, Any], expected: tuple[Any, ...]
) -> None:
    spec = read_spec({**SILENT, **spec_patch}, settings)
    got = (
        spec.max_bounce_rate,
        spec.max_complaint_rate,
        spec.min_sample,
        spec.max_replicas,
        spec.per_pod_rate,
    )
    assert got == expected


def test_rollout_gate_defaults_to_the_settings_thresholds() -> None:
    settings = OperatorSettings(
        dev_mode=True, default_max_bounce_rate=0.02, default_max_complaint_rate=0.0005
    )
    spec = read_spec({**SILENT, "rollout": {"steps": [{"percent": 10}, {"percent": 100}]}}, settings)
    assert spec.rollout is not None
    assert (spec.rollout.max_bounce_rate, spec.rollout.max_complaint_rate) == (0.02, 0.0005)


def test_env_setting_changes_the_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMAILPLAN_DEFAULT_MAX_BOUNCE_RATE", "0.03")
    assert read_spec(SILENT, OperatorSettings(dev_mode=True)).max_bounce_rate == 0.03


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"variants": [{"name": "a"}, {"name": "a"}]}, "variants: names must be unique"),
        ({"abTest": {"testPercent": 20}}, "abTest needs variants"),
        ({"templateRef": {"name": "t", "htmlKey": "h"}}, "templateRef replaces html and text"),
        ({"rollout": {"steps": [{"percent": 10}, {"percent": 5}, {"percent": 100}]}}, "strictly increasing"),
        ({"schedule": {"window": {"from": "09:00", "to": "09:00"}}}, "from and to must differ"),
        ({"ses": {"tags": {"bad key!": "x"}}}, "ses.tags names may contain only"),
        ({"rate": {"perSecond": 0}}, "rate.perSecond: Input should be greater than 0"),
    ],
)
def test_a_spec_past_an_older_crd_is_refused_with_the_crd_words(patch: dict[str, Any], message: str) -> None:
    """The model checks the CEL rules' Python twins: a plan the API server never checked gets their words."""
    spec = read_spec({**SPEC, **patch}, OperatorSettings(dev_mode=True))
    assert any(message in p for p in spec.problems), spec.problems


def test_examples_parse_into_the_model(repo_root: str) -> None:
    for path in sorted(Path(repo_root, "examples").glob("emailplan*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "EmailPlan":
                EmailPlanSpec.model_validate(doc["spec"])


def test_facts_stated_once() -> None:
    """Count names, backlog per replica: one definition, imported everywhere."""
    assert tuple(PlanCounts.model_fields)[: len(STATUS_COUNTS)] == tuple(PlanCounts.model_fields)[:14]
    assert set(STATUS_COUNTS) <= {f.alias for f in PlanCounts.model_fields.values()}
    assert OperatorSettings(dev_mode=True).backlog_per_replica == BACKLOG_PER_REPLICA
    crd = yaml.safe_load(outputs()[next(iter(outputs()))].split("\n", 1)[1])
    status = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert set(STATUS_COUNTS) <= set(status)
    assert set(STATUS_COUNTS) <= set(COUNTER_COLUMNS), "every status count is a ledger counter column"
