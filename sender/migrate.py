"""``emailplan db upgrade``: apply the alembic migrations shipped inside the package.

The alembic configuration is built in code (no alembic.ini on disk) so the
command works the same from a source tree, an editable install and a wheel.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import asyncpg
from alembic import command
from alembic.config import Config
from alembic.util import CommandError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from emailplan.runtime.logsetup import setup_logging
from emailplan.sender.settings import SenderSettings

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
URL_FORM = "postgresql+asyncpg://USER:PASSWORD@HOST:5432/DATABASE"


def alembic_config(url: str) -> Config:
    """An alembic Config pointing at the packaged migrations and ``url``."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    # ConfigParser interpolation: a literal % in a password must be doubled.
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade_to(url: str, revision: str = "head") -> None:
    """Apply migrations to ``url`` up to ``revision`` (blocking; runs its own event loop)."""
    command.upgrade(alembic_config(url), revision)


def describe_target(url: str) -> str:
    """``host:port/database`` of a URL, never its password (for error messages)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return "an unparsable URL"
    return f"{parsed.host or 'localhost'}:{parsed.port or 5432}/{parsed.database or ''}"


def upgrade(args: argparse.Namespace) -> int:
    """CLI entry: upgrade EMAILPLAN_DATABASE_URL to ``args.revision`` (default head).

    Failures are one line naming the database by host, port and name: a migration
    Job's log is read by people, and the URL's password must never reach it.
    """
    setup_logging()
    settings = SenderSettings()
    revision = getattr(args, "revision", "head") or "head"
    url = settings.database_url.get_secret_value()
    if "database_url" not in settings.model_fields_set or not url:
        # The settings' local default is for development processes; a migration run without
        # a URL is a missing Secret, and guessing 127.0.0.1 would only hide that.
        print(f"emailplan: error: EMAILPLAN_DATABASE_URL is not set; set it to {URL_FORM}", file=sys.stderr)
        return 2
    if not url.startswith("postgresql+asyncpg://"):
        print(
            f"emailplan: error: EMAILPLAN_DATABASE_URL must start with postgresql+asyncpg:// ({URL_FORM})",
            file=sys.stderr,
        )
        return 2
    try:
        upgrade_to(url, revision)
    except (OSError, SQLAlchemyError, asyncpg.PostgresError) as exc:
        reason = type(exc).__name__ if isinstance(exc, SQLAlchemyError) else str(exc).split("\n")[0]
        print(
            f"emailplan: error: cannot upgrade the database at {describe_target(url)}: {reason}; "
            "check that PostgreSQL runs there and that EMAILPLAN_DATABASE_URL names it",
            file=sys.stderr,
        )
        return 1
    except CommandError as exc:
        print(f"emailplan: error: {exc}", file=sys.stderr)
        return 2
    log.info("database upgraded", extra={"revision": revision})
    return 0
