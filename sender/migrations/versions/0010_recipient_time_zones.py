"""Local-time delivery: each message's time zone, and the zones whose window is open now.

``messages.time_zone`` is the recipient's IANA zone as the list gave it (NULL: the window's
fallback zone applies). ``plans.open_zones`` is what the operator last judged open (the empty
string stands for the fallback zone); NULL means the plan has no per-recipient window and
every zone may be sent. Existing rows keep NULL in both, so nothing changes for them.

Revision ID: 0010_recipient_time_zones
Revises: 0009_retries
Create Date: 2026-12-06 23:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010_recipient_time_zones"
down_revision: str | Sequence[str] | None = "0009_retries"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("messages", sa.Column("time_zone", sa.Text(), nullable=True))
    op.add_column("plans", sa.Column("open_zones", postgresql.ARRAY(sa.Text()), nullable=True))


def downgrade() -> None:
    op.drop_column("plans", "open_zones")
    op.drop_column("messages", "time_zone")
