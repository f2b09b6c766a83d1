"""notifications preferences: per-person settings (language, quiet hours, opt-outs), push devices

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-22
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from carebase.platform.migrations import account_rls, app_role, grant

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('notification_profiles',
    sa.Column('account_id', postgresql.UUID(as_uuid=True), nullable=False),
    sa.Column('language', sa.String(length=8), server_default='en', nullable=False),
    sa.Column('timezone', sa.String(length=64), nullable=True),
    sa.Column('quiet_start', sa.Time(), nullable=True),
    sa.Column('quiet_end', sa.Time(), nullable=True),
    sa.Column('categories_off', postgresql.JSONB(astext_type=sa.Text()), server_default='[]', nullable=False),
    sa.Column('channels_off', postgresql.JSONB(astext_type=sa.Text()), server_default='[]', nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('account_id', name=op.f('pk_notification_profiles'))
    )
    op.create_table('push_devices',
    sa.Column('id', postgresql.UUID(as_uuid=True), nullable=False),
    sa.Column('account_id', postgresql.UUID(as_uuid=True), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('address', sa.Text(), nullable=False),
    sa.Column('keys', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_push_devices')),
    sa.UniqueConstraint('address', name=op.f('uq_push_devices_address'))
    )
    op.create_index('ix_push_devices_account_id', 'push_devices', ['account_id'])
    grant('notifications', 'DELETE')  # people delete their own notices (the seed's endpoint)
    grant('notification_profiles', 'SELECT, INSERT, UPDATE')
    grant('push_devices', 'SELECT, INSERT, DELETE')
    account_rls('notification_profiles')
    account_rls('push_devices')
    # Notifying someone happens in somebody else's request (the doctor books, the patient is told):
    # this function gives the sender what it needs of the recipient's settings and nothing more.
    op.execute("""
        CREATE FUNCTION notification_profile(p_account uuid) RETURNS jsonb
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
            SELECT jsonb_build_object('language', language, 'timezone', timezone,
                                      'quiet_start', quiet_start, 'quiet_end', quiet_end,
                                      'categories_off', categories_off, 'channels_off', channels_off)
            FROM notification_profiles WHERE account_id = p_account
        $$""")
    op.execute("REVOKE ALL ON FUNCTION notification_profile(uuid) FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION notification_profile(uuid) TO {app_role()}")


def downgrade() -> None:
    op.execute("DROP FUNCTION notification_profile(uuid)")
    op.drop_table('push_devices')
    op.drop_table('notification_profiles')
