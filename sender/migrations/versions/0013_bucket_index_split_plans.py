"""Only the rows of a plan that splits its list are in the ``(plan_id, bucket)`` index.

The index serves the reads by cohort bucket: a rollout's or an A/B test's released share,
its backlog and its per-variant counts (``emailplan.contract.cohorts``). A plan that sends
its whole list never reads by bucket, yet every row it stored took an entry: its buckets
are random, so each entry went to a random page, about a third of PostgreSQL's time per
stored row on a million-row load.

``plans.bucketed`` is set once a plan splits its list (its released share is below 100 %
or it has A/B variants) and never cleared; ``messages.bucketed`` is its value when the row
was stored, and every row of a plan that becomes bucketed later is marked in the same
transaction. The index is partial on ``messages.bucketed``: the reads by bucket of a
bucketed plan say ``AND m.bucketed`` and use it; the other plans' reads need no bucket.

Revision ID: 0013_bucket_index_split_plans
Revises: 0012_lighter_message_rows
Create Date: 2026-12-08 04:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013_bucket_index_split_plans"
down_revision: str | Sequence[str] | None = "0012_lighter_message_rows"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SPLIT_PLANS = """
UPDATE plans SET bucketed = true
WHERE release_percent < 100
   OR CASE WHEN jsonb_typeof(spec -> 'variants') = 'array' THEN jsonb_array_length(spec -> 'variants') > 0
           ELSE false END
"""


def upgrade() -> None:
    for table in ("plans", "messages"):
        op.add_column(table, sa.Column("bucketed", sa.Boolean(), server_default=sa.text("false"), nullable=False))
    op.execute(_SPLIT_PLANS)
    op.execute("UPDATE messages m SET bucketed = true FROM plans p WHERE p.id = m.plan_id AND p.bucketed")
    op.drop_index("ix_messages_plan_id_bucket", table_name="messages")
    op.create_index(
        "ix_messages_plan_id_bucket", "messages", ["plan_id", "bucket"], postgresql_where=sa.text("bucketed")
    )


def downgrade() -> None:
    op.drop_index("ix_messages_plan_id_bucket", table_name="messages")
    op.create_index("ix_messages_plan_id_bucket", "messages", ["plan_id", "bucket"])
    for table in ("messages", "plans"):
        op.drop_column(table, "bucketed")
