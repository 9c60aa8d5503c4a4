"""`emailplan db upgrade`: works on a fresh database, fails in one line without leaking the password."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from devenv.postgres import PostgresServer

EMAILPLAN = os.path.join(os.path.dirname(sys.executable), "emailplan")
PASSWORD = "Sup3rSecretPw-do-not-log"


def upgrade(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EMAILPLAN_DATABASE_URL": url}
    return subprocess.run(
        [EMAILPLAN, "db", "upgrade", *args], capture_output=True, text=True, env=env, timeout=120, cwd="/"
    )


def test_upgrade_a_fresh_database_twice(database_url: str) -> None:
    first = upgrade(database_url)
    assert first.returncode == 0, first.stderr
    assert "database upgraded" in first.stderr
    assert upgrade(database_url).returncode == 0, "upgrading an up-to-date database is a no-op"


def test_unreachable_database_is_one_line_without_the_password(postgres: PostgresServer) -> None:
    url = f"postgresql+asyncpg://emailplan:{PASSWORD}@127.0.0.1:9/ledger"
    r = upgrade(url)
    assert r.returncode == 1
    assert r.stderr.startswith("emailplan: error: cannot upgrade the database at 127.0.0.1:9/ledger")
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert PASSWORD not in r.stdout + r.stderr


def test_unknown_database_names_it(postgres: PostgresServer) -> None:
    url = f"postgresql+asyncpg://emailplan:{PASSWORD}@127.0.0.1:{postgres.port}/no_such_db"
    r = upgrade(url)
    assert r.returncode == 1
    assert "no_such_db" in r.stderr and PASSWORD not in r.stderr


def test_wrong_driver_and_unknown_revision(database_url: str) -> None:
    r = upgrade("mysql://root:pw@localhost/x")
    assert r.returncode == 2 and "must start with postgresql+asyncpg://" in r.stderr
    r = upgrade(database_url, "nosuchrevision")
    assert r.returncode == 2 and "nosuchrevision" in r.stderr


def one_line_error(r: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a failed command; no traceback."""
    lines = r.stderr.strip().splitlines()
    assert r.returncode != 0, r.stdout
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr
    return lines[0]


def test_no_database_url_is_one_line_that_names_the_variable_and_never_tries_localhost() -> None:
    env = {k: v for k, v in os.environ.items() if k != "EMAILPLAN_DATABASE_URL"}
    for extra in ({}, {"EMAILPLAN_DATABASE_URL": ""}):
        r = subprocess.run(
            [EMAILPLAN, "db", "upgrade"],
            capture_output=True,
            text=True,
            env={**env, **extra},
            timeout=120,
            cwd="/",
        )
        line = one_line_error(r)
        assert r.returncode == 2
        assert "EMAILPLAN_DATABASE_URL is not set" in line
        assert "postgresql+asyncpg://" in line, "the fix: the URL form to set"
        assert "127.0.0.1" not in line and "cannot upgrade" not in line


def test_unreachable_database_says_what_to_check(postgres: PostgresServer) -> None:
    line = one_line_error(upgrade(f"postgresql+asyncpg://emailplan:{PASSWORD}@127.0.0.1:9/ledger"))
    assert "EMAILPLAN_DATABASE_URL" in line and PASSWORD not in line


async def test_migrations_build_the_schema_the_models_describe(engine: AsyncEngine) -> None:
    """Every table, column and index of the ORM models exists after the migrations, and no other.

    The counters are also the API's count names (``openedMachine``, ``sesRejected``): the
    column, the model and the contract's ``PlanCounts`` must say the same word.
    """
    from sqlalchemy import inspect

    from emailplan.contract.plans import PlanCounts
    from emailplan.sender.models import COUNTER_COLUMNS, Base

    def schema(conn: Any) -> dict[str, tuple[set[str], set[str]]]:
        found = inspect(conn)
        return {
            t: ({c["name"] for c in found.get_columns(t)}, {str(i["name"]) for i in found.get_indexes(t)})
            for t in found.get_table_names()
            if t != "alembic_version"
        }

    async with engine.connect() as conn:
        database = await conn.run_sync(schema)
    models = {
        t.name: ({c.name for c in t.columns}, {str(i.name) for i in t.indexes})
        for t in Base.metadata.sorted_tables
    }
    assert {t: cols for t, (cols, _) in database.items()} == {t: cols for t, (cols, _) in models.items()}
    for table, (_, indexes) in models.items():
        assert indexes <= database[table][1], table
    wire = {f.alias or name for name, f in PlanCounts.model_fields.items()}
    assert set(COUNTER_COLUMNS) == wire == database["plan_counters"][0] - {"plan_id"}
