"""The account's quota as permits reserved by every pod together, one row per slice of time.

Every worker reserves the permits of each grant here (in one transaction under an advisory
lock) before it may spend them, so pods of several plans sending at the same moment share
``Max24HourSend`` instead of each spending what the last count left. Rows are slices of
``window / 1000`` seconds, so summing the window reads at most about a thousand rows.

Revision ID: 0011_quota_slices
Revises: 0010_recipient_time_zones
Create Date: 2026-12-07 03:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_quota_slices"
down_revision: str | Sequence[str] | None = "0010_recipient_time_zones"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "quota_slices",
        sa.Column("slice", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("permits", sa.Integer(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("quota_slices")
