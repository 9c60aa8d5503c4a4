"""Initial schema: plans, messages, plan_counters, events, suppressions, rate_buckets.

Revision ID: 0001
Revises: 
Create Date: 2026-11-27 18:39:32.177415

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision: str = '0001'
down_revision: Union[str, Sequence[str], None] = None
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('events',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('sns_message_id', sa.Text(), nullable=False),
    sa.Column('plan_id', sa.UUID(), nullable=True),
    sa.Column('message_id', sa.BigInteger(), nullable=True),
    sa.Column('event_type', sa.Text(), nullable=False),
    sa.Column('subtype', sa.Text(), nullable=True),
    sa.Column('recipient', sa.Text(), nullable=True),
    sa.Column('occurred_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('payload', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_events')),
    sa.UniqueConstraint('sns_message_id', name=op.f('uq_events_sns_message_id'))
    )
    op.create_index(op.f('ix_events_message_id'), 'events', ['message_id'], unique=False)
    op.create_index(op.f('ix_events_plan_id'), 'events', ['plan_id'], unique=False)
    op.create_table('plans',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('namespace', sa.Text(), server_default='', nullable=False),
    sa.Column('spec', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('rate_per_second', sa.Float(), server_default=sa.text('14'), nullable=False),
    sa.Column('start_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('state', sa.Text(), server_default='loading', nullable=False),
    sa.Column('recipients_complete', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_plans'))
    )
    op.create_table('rate_buckets',
    sa.Column('key', sa.Text(), nullable=False),
    sa.Column('tokens', sa.Float(), server_default=sa.text('0'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_rate_buckets'))
    )
    op.create_table('suppressions',
    sa.Column('email', sa.Text(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('plan_id', sa.UUID(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('email', name=op.f('pk_suppressions'))
    )
    op.create_table('messages',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('plan_id', sa.UUID(), nullable=False),
    sa.Column('row_no', sa.Integer(), nullable=False),
    sa.Column('email', sa.Text(), nullable=False),
    sa.Column('name', sa.Text(), nullable=True),
    sa.Column('vars', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('status', sa.Text(), server_default='created', nullable=False),
    sa.Column('ses_message_id', sa.Text(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('attempts', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('lease_owner', sa.Text(), nullable=True),
    sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('enqueued', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('bounced_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('complained_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('opened_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('clicked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('unsubscribed_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['plan_id'], ['plans.id'], name=op.f('fk_messages_plan_id_plans'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_messages')),
    sa.UniqueConstraint('plan_id', 'email', name=op.f('uq_messages_plan_id_email')),
    sa.UniqueConstraint('ses_message_id', name=op.f('uq_messages_ses_message_id'))
    )
    op.create_index('ix_messages_plan_id_status', 'messages', ['plan_id', 'status'], unique=False)
    op.create_index('ix_messages_sent_at', 'messages', ['sent_at'], unique=False,
                    postgresql_where=sa.text('sent_at IS NOT NULL'))
    op.create_table('plan_counters',
    sa.Column('plan_id', sa.UUID(), nullable=False),
    sa.Column('total', sa.BigInteger(), server_default=sa.text('0'), nullable=False),
    sa.Column('created', sa.BigInteger(), server_default=sa.text('0'), nullable=False),
    sa.Column('processing', sa.BigInteger(), server_default=sa.text('0'), nullable=False),
    sa.Column('sent', sa.BigInteger(), server_default=sa.text('0'), nullable=False),
    sa.Column('failed', sa.BigInteger(), server_default=sa.text('0'), nullable=False),
    sa.Column('stopped', sa.BigInteger(), server_default=sa.text('0'), nullable=False),
    sa.Column('suppressed', sa.BigInteger(), server_default=sa.text('0'), nullable=False),
    sa.Column('delivered', sa.BigInteger(), server_default=sa.text('0'), nullable=False),
    sa.Column('bounced', sa.BigInteger(), server_default=sa.text('0'), nullable=False),
    sa.Column('complained', sa.BigInteger(), server_default=sa.text('0'), nullable=False),
    sa.Column('opened', sa.BigInteger(), server_default=sa.text('0'), nullable=False),
    sa.Column('opened_machine', sa.BigInteger(), server_default=sa.text('0'), nullable=False),
    sa.Column('clicked', sa.BigInteger(), server_default=sa.text('0'), nullable=False),
    sa.Column('unsubscribed', sa.BigInteger(), server_default=sa.text('0'), nullable=False),
    sa.Column('rejected', sa.BigInteger(), server_default=sa.text('0'), nullable=False),
    sa.ForeignKeyConstraint(['plan_id'], ['plans.id'], name=op.f('fk_plan_counters_plan_id_plans'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('plan_id', name=op.f('pk_plan_counters'))
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table('plan_counters')
    op.drop_index('ix_messages_sent_at', table_name='messages')
    op.drop_index('ix_messages_plan_id_status', table_name='messages')
    op.drop_table('messages')
    op.drop_table('suppressions')
    op.drop_table('rate_buckets')
    op.drop_table('plans')
    op.drop_index(op.f('ix_events_plan_id'), table_name='events')
    op.drop_index(op.f('ix_events_message_id'), table_name='events')
    op.drop_table('events')
