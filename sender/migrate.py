"""``emailplan db upgrade``: apply the alembic migrations shipped inside the package.

The alembic configuration is built in code (no alembic.ini on disk) so the
command works the same from a source tree, an editable install and a wheel.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from alembic import command
from alembic.config import Config

from emailplan.runtime.logsetup import setup_logging
from emailplan.sender.settings import SenderSettings

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).resolve().parent / "migrations"


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


def upgrade(args: argparse.Namespace) -> int:
    """CLI entry: upgrade EMAILPLAN_DATABASE_URL to ``args.revision`` (default head)."""
    setup_logging()
    settings = SenderSettings()
    revision = getattr(args, "revision", "head") or "head"
    upgrade_to(settings.database_url.get_secret_value(), revision)
    log.info("database upgraded", extra={"revision": revision})
    return 0
