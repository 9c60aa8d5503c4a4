"""`emailplan db upgrade`: works on a fresh database, fails in one line without leaking the password."""

from __future__ import annotations

import os
import subprocess
import sys

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
