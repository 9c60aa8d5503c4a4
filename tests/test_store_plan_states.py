"""Plan states in SQL come from the ``PlanState`` enum, never spelled in the statement text.

A state written as a literal in one statement and as the enum in Python is how a
renamed or added state ends up matched by half the code: a plan "done" to the
worker but "ready" to the query that claims its rows. The SQL of ``sender/store``
is read as source (string literals and the constant parts of f-strings) and every
quoted literal is checked against the enum. The database holds the same list: its CHECK
constraint (migration 0008) must name exactly the enum's states.
"""

from __future__ import annotations

import ast
import re
import uuid
from pathlib import Path

import pytest
from sqlalchemy import CheckConstraint, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from emailplan.contract.plans import LoadState, PlanState
from emailplan.sender.models import MESSAGE_STATUSES, Plan
from emailplan.sender.store import plans
from emailplan.sender.store.shared import done_when, state_sql

STATES = {s.value for s in PlanState}
# A plan state that is also another column's value (a message's status, a load job's state)
# is only a plan state where it is compared with or assigned to ``state``.
SHARED = STATES & (set(MESSAGE_STATUSES) | {s.value for s in LoadState})
QUOTED = re.compile(r"'(\w+)'")
STATE_CONTEXT = re.compile(
    r"\bstate\s*(?:=|<>|!=)\s*(?:CASE\b.*?\bEND\b|'\w+')|\bstate\s+(?:NOT\s+)?IN\s*\([^)]*\)",
    re.IGNORECASE | re.DOTALL,
)


def _sql_texts(source: str) -> list[tuple[int, str]]:
    """String constants (whole, or an f-string's literal parts joined) with their line."""
    out: list[tuple[int, str]] = []
    tree = ast.parse(source)
    parts = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            text = "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
            out.append((node.lineno, text))
            parts.update(id(v) for v in node.values)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in parts:
            out.append((node.lineno, node.value))
    return out


def spelled_states(sql: str) -> list[str]:
    """The plan states ``sql`` spells as literals."""
    found = [v for v in QUOTED.findall(sql) if v in STATES - SHARED]
    for context in STATE_CONTEXT.findall(sql):
        found += [v for v in QUOTED.findall(context) if v in SHARED]
    return found


def test_the_check_finds_a_state_however_it_is_written() -> None:
    assert spelled_states("UPDATE plans SET state = 'done' WHERE id = :p") == ["done"]
    assert spelled_states("WHERE p.state IN ('ready', 'stopped')") == ["ready", "stopped"]
    assert spelled_states("SET state = CASE WHEN x THEN 'stopped' ELSE plans.state END") == ["stopped"]
    assert spelled_states("SET status = CASE WHEN p.state = :s THEN 'stopped' END") == []  # a message status
    assert spelled_states(f"WHERE p.state = {state_sql(PlanState.READY)}") == ["ready"]


def test_no_plan_state_is_spelled_in_the_stores_sql(repo_root: str) -> None:
    found = []
    for path in sorted((Path(repo_root) / "sender" / "store").glob("*.py")):
        for line, sql in _sql_texts(path.read_text()):
            if spelled := spelled_states(sql):
                found.append(f"{path.name}:{line}: {spelled}")
    assert not found, "plan states written in SQL (format them with shared.state_sql):\n" + "\n".join(found)


def test_state_sql_quotes_exactly_the_enums_values() -> None:
    assert state_sql(PlanState.DONE) == "'done'"
    assert state_sql(*PlanState) == "(" + ", ".join(f"'{s.value}'" for s in PlanState) + ")"
    assert all(re.fullmatch(r"[a-z_]+", s.value) for s in PlanState)  # safe to quote without escaping
    assert "'ready', 'suspended'" in done_when("c")


async def test_the_database_refuses_a_state_the_enum_does_not_know(engine: AsyncEngine) -> None:
    plan_id = uuid.uuid4()
    await plans.upsert_plan(
        engine, plan_id, name="p", namespace="n", spec={}, rate_per_second=1.0, start_at=None, suspended=False
    )
    with pytest.raises(IntegrityError, match="ck_plans_state"):
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE plans SET state = 'paused' WHERE id = :p"), {"p": plan_id})
    async with engine.connect() as conn:
        state = (
            await conn.execute(text("SELECT state FROM plans WHERE id = :p"), {"p": plan_id})
        ).scalar_one()
    assert state == PlanState.LOADING  # unchanged


async def test_the_migrated_check_and_the_model_list_exactly_the_enums_states(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        definition = (
            await conn.execute(
                text("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'ck_plans_state'")
            )
        ).scalar_one()
    assert set(QUOTED.findall(definition)) == STATES, definition
    (check,) = (c for c in Plan.__table__.constraints if isinstance(c, CheckConstraint))
    assert set(QUOTED.findall(str(check.sqltext))) == STATES
