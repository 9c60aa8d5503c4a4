"""Addresses in their ASCII form: an IDN domain as punycode, in suppressions and unsent messages.

Intake used to store ``user@bücher.example``; it now stores ``user@xn--bcher-kva.example``,
the form SES sends to and reports in bounces and complaints. Suppressions and unsent messages
stored the old way are rewritten so a suppression matches whichever way either was written.
A row already present in the new form is kept and its old twin dropped (suppressions) or
left as it was (a message: the sender sends it in the ASCII form anyway). An address with a
non-ASCII local part is left as it was: a message to it fails with an ``InvalidAddress``
reason when it is sent.

Revision ID: 0007_ascii_addresses
Revises: 0006_count_names
Create Date: 2026-12-06 20:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from emailplan.contract.addresses import AddressError, normalize_address

revision: str = "0007_ascii_addresses"
down_revision: str | Sequence[str] | None = "0006_count_names"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NON_ASCII = "email ~ '[^\\x01-\\x7f]'"


def _ascii(address: str) -> str | None:
    try:
        return normalize_address(address)
    except AddressError:
        return None


def upgrade() -> None:
    conn = op.get_bind()
    for (old,) in conn.execute(sa.text(f"SELECT email FROM suppressions WHERE {_NON_ASCII}")).all():  # noqa: S608
        new = _ascii(old)
        if new is None or new == old:
            continue
        conn.execute(
            sa.text(
                "INSERT INTO suppressions (email, reason, plan_id, created_at) "
                "SELECT :new, reason, plan_id, created_at FROM suppressions WHERE email = :old "
                "ON CONFLICT (email) DO NOTHING"
            ),
            {"new": new, "old": old},
        )
        conn.execute(sa.text("DELETE FROM suppressions WHERE email = :old"), {"old": old})
    rows = conn.execute(
        sa.text(f"SELECT id, plan_id, email FROM messages WHERE status = 'created' AND {_NON_ASCII}")  # noqa: S608
    ).all()
    for message_id, plan_id, old in rows:
        new = _ascii(old)
        if new is None or new == old:
            continue
        conn.execute(
            sa.text(
                "UPDATE messages SET email = :new WHERE id = :id AND NOT EXISTS "
                "(SELECT 1 FROM messages WHERE plan_id = :plan AND email = :new)"
            ),
            {"new": new, "id": message_id, "plan": plan_id},
        )


def downgrade() -> None:
    """Nothing to undo: the ASCII form is a valid stored address for the old code too."""
