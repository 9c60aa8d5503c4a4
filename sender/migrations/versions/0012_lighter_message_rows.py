"""Storing a recipient costs PostgreSQL less: no foreign-key check per row, no index entry for no SES id.

Measured on a million-row load, two things took about a third of PostgreSQL's time per
stored row, and neither was needed per row:

* The foreign key from ``messages`` to ``plans`` looked the same plan up again for every
  row. The loaders check the plan once per batch instead and hold it against a delete
  (``SELECT ... FOR KEY SHARE``, the lock the key check took). Deleting a plan still
  deletes its messages: a statement trigger on ``plans`` does it, as ``ON DELETE CASCADE``
  did. Nothing in the product deletes plans; an administrator's ``DELETE`` stays clean.
* The unique index on ``ses_message_id`` took an entry for every row, though a row has an
  SES id only once it is sent. It now holds only rows that have one. Uniqueness is the
  same (NULLs never conflicted), and every lookup by id can use it.

Revision ID: 0012_lighter_message_rows
Revises: 0011_quota_slices
Create Date: 2026-12-07 21:50:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0012_lighter_message_rows"
down_revision: str | Sequence[str] | None = "0011_quota_slices"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_CASCADE = """
CREATE FUNCTION delete_messages_of_deleted_plans() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM messages m USING gone g WHERE m.plan_id = g.id;
    RETURN NULL;
END $$
"""
_TRIGGER = """
CREATE TRIGGER plans_delete_messages AFTER DELETE ON plans
REFERENCING OLD TABLE AS gone FOR EACH STATEMENT
EXECUTE FUNCTION delete_messages_of_deleted_plans()
"""


def upgrade() -> None:
    op.drop_constraint("fk_messages_plan_id_plans", "messages", type_="foreignkey")
    op.execute(_CASCADE)
    op.execute(_TRIGGER)
    op.drop_constraint("uq_messages_ses_message_id", "messages", type_="unique")
    op.create_index(
        "uq_messages_ses_message_id",
        "messages",
        ["ses_message_id"],
        unique=True,
        postgresql_where="ses_message_id IS NOT NULL",
    )


def downgrade() -> None:
    op.drop_index("uq_messages_ses_message_id", table_name="messages")
    op.create_unique_constraint("uq_messages_ses_message_id", "messages", ["ses_message_id"])
    op.execute("DROP TRIGGER plans_delete_messages ON plans")
    op.execute("DROP FUNCTION delete_messages_of_deleted_plans()")
    op.create_foreign_key(
        "fk_messages_plan_id_plans", "messages", "plans", ["plan_id"], ["id"], ondelete="CASCADE"
    )
