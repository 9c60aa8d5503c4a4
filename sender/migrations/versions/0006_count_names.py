"""Count names users read: ``openedMachine`` (was ``opened_machine``), ``sesRejected`` (was ``rejected``).

Counter columns are spelled as the counts the API answers (like ``softBounced``), so the
name is defined by the column alone. ``rejected`` said the same word as the rows a load
refuses; SES Reject events are ``sesRejected`` now.

Revision ID: 0006_count_names
Revises: 0005_failure_reasons
Create Date: 2026-12-06 20:35:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006_count_names"
down_revision: str | Sequence[str] | None = "0005_failure_reasons"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.alter_column("plan_counters", "opened_machine", new_column_name="openedMachine")
    op.alter_column("plan_counters", "rejected", new_column_name="sesRejected")


def downgrade() -> None:
    op.alter_column("plan_counters", "sesRejected", new_column_name="rejected")
    op.alter_column("plan_counters", "openedMachine", new_column_name="opened_machine")
