"""The database refuses a plan state the code does not know: ``plans.state`` is one of ``PlanState``.

The states are written out here as they were when this revision was made; a test compares
the constraint of a migrated database with ``PlanState``, so a state added to the enum
without a revision that widens this list fails there, not in production.

Revision ID: 0008_plan_state_check
Revises: 0007_ascii_addresses
Create Date: 2026-12-06 23:50:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008_plan_state_check"
down_revision: str | Sequence[str] | None = "0007_ascii_addresses"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        "ALTER TABLE plans ADD CONSTRAINT ck_plans_state "
        "CHECK (state IN ('loading', 'ready', 'suspended', 'stopped', 'done'))"
    )


def downgrade() -> None:
    op.execute("ALTER TABLE plans DROP CONSTRAINT ck_plans_state")
