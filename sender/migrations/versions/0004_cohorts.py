"""Cohorts: a stable bucket per recipient and the released share of a plan.

``messages.bucket`` is a generated column (``emailplan.contract.cohorts``): the
database computes it from the plan id and the address, so every writer agrees
and existing rows get theirs when the column is added. ``plans.release_percent``
is the share of the list that may be sent now (progressive rollout, A/B test
cohort); 100 keeps the behaviour of plans that use neither.

Revision ID: 0004_cohorts
Revises: 0003_soft_bounces
Create Date: 2026-12-01 19:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from emailplan.contract.cohorts import BUCKET_SQL

revision: str = "0004_cohorts"
down_revision: str | Sequence[str] | None = "0003_soft_bounces"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "messages",
        sa.Column("bucket", sa.Integer(), sa.Computed(BUCKET_SQL, persisted=True), nullable=False),
    )
    op.create_index("ix_messages_plan_id_bucket", "messages", ["plan_id", "bucket"])
    op.add_column(
        "plans",
        sa.Column("release_percent", sa.Float(), server_default=sa.text("100"), nullable=False),
    )


def downgrade() -> None:
    op.drop_column("plans", "release_percent")
    op.drop_index("ix_messages_plan_id_bucket", table_name="messages")
    op.drop_column("messages", "bucket")
