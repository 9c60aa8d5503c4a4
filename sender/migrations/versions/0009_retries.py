"""Retries of a finished plan: plans.retry_generation (the last retry done) and plan_counters.retried.

A retry (``spec.retry.generation``) re-queues a done plan's transient failures and soft
bounces once per generation: the plan row keeps the generation done, so asking again
changes nothing. ``retried`` counts the messages it re-queued, apart from ``sent`` and
``failed`` (each retried message is counted again where its new attempt ends).

Revision ID: 0009_retries
Revises: 0008_plan_state_check
Create Date: 2026-12-06 23:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_retries"
down_revision: str | Sequence[str] | None = "0008_plan_state_check"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("plans", sa.Column("retry_generation", sa.Integer(), server_default=sa.text("0"), nullable=False))
    op.add_column("plan_counters", sa.Column("retried", sa.BigInteger(), server_default=sa.text("0"), nullable=False))


def downgrade() -> None:
    op.drop_column("plan_counters", "retried")
    op.drop_column("plans", "retry_generation")
