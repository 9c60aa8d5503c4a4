"""The Argo CD health check we ship (docs/argocd-health.lua), run in Lua on statuses the operator decides.

Each case builds the status the operator's pure pass decision writes for a
situation (``decide.decide``), then asks the Lua check what Argo CD would show.
So the check and the conditions cannot drift apart unnoticed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lupa
import pytest
from support.decisions import job, observed, view

from emailplan.contract.plans import LoadFailure, LoadFailureReason, LoadState, PlanState
from emailplan.operator.decide import decide

CHECK = (Path(__file__).parent.parent / "docs" / "argocd-health.lua").read_text()


def health(status: dict[str, Any], generation: int = 1) -> tuple[str, str]:
    lua = lupa.LuaRuntime(unpack_returned_tuples=True)
    table = _to_lua(lua, {"metadata": {"generation": generation}, "status": status})
    result = lua.execute("obj = ...\n" + CHECK, table)  # Argo CD hands the check a global ``obj``
    return str(result["status"]), str(result["message"] or "")


def _to_lua(lua: Any, value: Any) -> Any:
    if isinstance(value, dict):
        return lua.table_from({k: _to_lua(lua, v) for k, v in value.items()})
    if isinstance(value, list):
        return lua.table_from([_to_lua(lua, v) for v in value])
    return value


def status_of(**kw: Any) -> dict[str, Any]:
    o = observed(**kw)
    return {**o.status, **decide(o).status}


MISSING = LoadFailure(reason=LoadFailureReason.OBJECT_MISSING, message="s3://lists/a.csv does not exist")
BOUNCY = {"total": 300, "created": 100, "sent": 200, "delivered": 150, "bounced": 50}
ROLLOUT = {"rollout": {"steps": [{"percent": 1, "hold": "15m"}, {"percent": 100}]}}
STEP_ONE = {"percent": 1, "stepStartedAt": "2026-05-01T11:00:00Z", "baseline": {}}
GATE_COUNTS = {"total": 1000, "created": 990, "sent": 10, "delivered": 5, "bounced": 5}
AB = {"variants": [{"name": "a"}, {"name": "b"}], "abTest": {"testPercent": 20}}
WINDOW = {"schedule": {"window": {"from": "01:00", "to": "02:00"}}}  # closed at noon UTC


@pytest.mark.parametrize(
    ("situation", "kw", "expected"),
    [
        ("new, not registered", {}, "Progressing"),
        (
            "loading",
            {"view": view(state=PlanState.LOADING, loaded=False, load=job(LoadState.LOADING))},
            "Progressing",
        ),
        (
            "load failed",
            {
                "view": view(
                    state=PlanState.LOADING, loaded=False, load=job(LoadState.FAILED, failure=MISSING)
                )
            },
            "Degraded",
        ),
        ("sending", {"view": view(counts={"total": 300, "created": 200, "sent": 100})}, "Progressing"),
        (
            "scheduled",
            {"spec_patch": {"schedule": {"startAt": "2026-05-01T13:00:00Z"}}, "view": None},
            "Healthy",
        ),
        (
            "suspended",
            {"spec_patch": {"suspend": True}, "view": view(suspended=True, state=PlanState.SUSPENDED)},
            "Suspended",
        ),
        ("breaker tripped", {"view": view(counts=BOUNCY)}, "Suspended"),
        ("completed", {"view": view(state=PlanState.DONE, counts={"total": 300, "sent": 300})}, "Healthy"),
        ("invalid", {"problems": ("subject: 'nmae' is undefined",)}, "Degraded"),
        # Campaign features (issue 15).
        (
            "rollout step holding",
            {
                "spec_patch": ROLLOUT,
                "view": view(spec=ROLLOUT, release=1, counts={"total": 1000, "created": 990, "sent": 10}),
                "status": {
                    "rollout": {"percent": 1, "stepStartedAt": "2026-05-01T11:00:00Z", "baseline": {}}
                },
            },
            "Progressing",
        ),
        (
            "rollout gate failed",
            {
                "spec_patch": ROLLOUT,
                "view": view(spec=ROLLOUT, release=1, counts=GATE_COUNTS),
                "status": {"rollout": {**STEP_ONE, "holdStartedAt": "2026-05-01T11:00:00Z"}},
            },
            "Degraded",
        ),
        (
            "A/B test needs a person",
            {
                "spec_patch": AB,
                "view": view(spec=AB, release=20, counts={"total": 100, "created": 80, "sent": 20}),
                "status": {"abTest": {"cohortFinishedAt": "2026-05-01T01:00:00Z"}},
            },
            "Degraded",
        ),
        (
            "outside the send window",
            {"spec_patch": WINDOW, "view": view(spec=WINDOW, counts={"total": 10, "created": 10})},
            "Suspended",
        ),
    ],
)
def test_argocd_health_follows_the_conditions(situation: str, kw: dict[str, Any], expected: str) -> None:
    if situation == "scheduled":  # the view must be the registered plan with that start time
        spec = kw["spec_patch"]
        kw["view"] = view(spec=spec)
    got, message = health(status_of(**kw))
    assert got == expected, (situation, message)
    if expected in ("Degraded", "Suspended"):
        assert message, "a plan that needs a person says why"


def test_a_spec_the_operator_has_not_seen_is_progressing() -> None:
    status = status_of(view=view(state=PlanState.DONE, counts={"total": 1, "sent": 1}))
    assert health(status, generation=1)[0] == "Healthy"
    assert health(status, generation=2)[0] == "Progressing"
    assert health({}, generation=1)[0] == "Progressing"
