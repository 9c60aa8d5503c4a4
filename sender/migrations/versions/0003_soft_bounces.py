"""Soft bounces get a count of their own: messages.soft_bounced_at, plan_counters."softBounced".

Until now only hard (Permanent) bounces were counted, while the CRD said "hard
and soft". SES dashboards show transient bounces apart, so a plan now does too.
The counter column carries the count's name as the API and the EmailPlan
status spell it, so the counts read from ``plan_counters`` need no renaming.

Revision ID: 0002_soft_bounces
Revises: 0001
Create Date: 2026-12-01 16:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_soft_bounces"
down_revision: str | Sequence[str] | None = "0002_recipient_loads"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("messages", sa.Column("soft_bounced_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column(
        "plan_counters",
        sa.Column("softBounced", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
    )


def downgrade() -> None:
    op.drop_column("plan_counters", "softBounced")
    op.drop_column("messages", "soft_bounced_at")
