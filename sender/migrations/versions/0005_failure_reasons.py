"""Failure reasons: a short class per failed (or suppressed) message, and counts per reason.

``messages.reason`` is what messages failing the same way share (``emailplan.contract.failures``);
``messages.error`` keeps the whole text. ``plan_failure_reasons`` counts them per plan in the
transaction that moves the messages, so the plan view's top reasons are a small read. A partial
index lets the failures listing page through a plan's unsent rows by id.

Existing rows get a reason from their error text (its first sentence, as the class is made for
new ones) or their suppression, and the counts are taken once from them.

Revision ID: 0005_failure_reasons
Revises: 0004_cohorts
Create Date: 2026-12-06 20:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from emailplan.contract.failures import MAX_REASON_CHARS, NO_DETAIL
from emailplan.contract.plans import SUPPRESSED_PREFIX

revision: str = "0005_failure_reasons"
down_revision: str | Sequence[str] | None = "0004_cohorts"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("messages", sa.Column("reason", sa.Text(), nullable=True))
    op.create_index(
        "ix_messages_plan_id_id_unsent",
        "messages",
        ["plan_id", "id"],
        postgresql_where=sa.text("status IN ('failed', 'suppressed')"),
    )
    op.create_table(
        "plan_failure_reasons",
        sa.Column("plan_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("count", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.ForeignKeyConstraint(
            ["plan_id"],
            ["plans.id"],
            name=op.f("fk_plan_failure_reasons_plan_id_plans"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("plan_id", "reason", name=op.f("pk_plan_failure_reasons")),
    )
    op.execute(
        sa.text(
            "UPDATE messages SET reason = coalesce(nullif(left(split_part(error, '. ', 1), :n), ''), :none) "
            "WHERE status = 'failed'"
        ).bindparams(none=NO_DETAIL, n=MAX_REASON_CHARS)
    )
    op.execute(
        sa.text(
            "UPDATE messages m SET reason = :prefix || s.reason FROM suppressions s "
            "WHERE m.status = 'suppressed' AND s.email = m.email"
        ).bindparams(prefix=SUPPRESSED_PREFIX)
    )
    op.execute(
        "INSERT INTO plan_failure_reasons (plan_id, reason, count) "
        "SELECT plan_id, reason, count(*) FROM messages WHERE reason IS NOT NULL GROUP BY 1, 2"
    )


def downgrade() -> None:
    op.drop_table("plan_failure_reasons")
    op.drop_index("ix_messages_plan_id_id_unsent", table_name="messages")
    op.drop_column("messages", "reason")
