"""scheduling core: weekly availability, exceptions, appointments and slot claims

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from carebase.platform.migrations import grant, tenant_rls

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

_UUID = postgresql.UUID(as_uuid=True)
_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table('availability',
    sa.Column('id', _UUID, nullable=False),
    sa.Column('tenant_id', _UUID, nullable=False),
    sa.Column('provider_id', _UUID, nullable=False),
    sa.Column('location_id', _UUID, nullable=False),
    sa.Column('weekday', sa.SmallInteger(), nullable=False),
    sa.Column('starts', sa.Time(), nullable=False),
    sa.Column('ends', sa.Time(), nullable=False),
    sa.Column('slot_minutes', sa.SmallInteger(), nullable=False),
    sa.Column('valid_from', sa.Date(), nullable=True),
    sa.Column('valid_until', sa.Date(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_availability'))
    )
    op.create_index('ix_availability_provider_id_location_id', 'availability', ['provider_id', 'location_id'])
    op.create_table('availability_exceptions',
    sa.Column('id', _UUID, nullable=False),
    sa.Column('tenant_id', _UUID, nullable=False),
    sa.Column('provider_id', _UUID, nullable=False),
    sa.Column('starts_at', _TS, nullable=False),
    sa.Column('ends_at', _TS, nullable=False),
    sa.Column('reason', sa.String(length=200), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_availability_exceptions'))
    )
    op.create_index('ix_availability_exceptions_provider_id', 'availability_exceptions', ['provider_id'])
    op.create_table('appointments',
    sa.Column('id', _UUID, nullable=False),
    sa.Column('tenant_id', _UUID, nullable=False),
    sa.Column('patient_id', _UUID, nullable=False),
    sa.Column('provider_id', _UUID, nullable=False),
    sa.Column('location_id', _UUID, nullable=False),
    sa.Column('type', sa.String(length=20), nullable=False),
    sa.Column('starts_at', _TS, nullable=False),
    sa.Column('ends_at', _TS, nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('reason_for_visit', sa.Text(), nullable=True),
    sa.Column('cancel_reason', sa.Text(), nullable=True),
    sa.Column('created_at', _TS, nullable=False),
    sa.Column('updated_at', _TS, nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_appointments'))
    )
    op.create_index('ix_appointments_patient_id', 'appointments', ['patient_id'])
    op.create_index('ix_appointments_provider_id_starts_at', 'appointments', ['provider_id', 'starts_at'])
    op.create_table('slot_claims',
    sa.Column('provider_id', _UUID, nullable=False),
    sa.Column('unit_start', _TS, nullable=False),
    sa.Column('tenant_id', _UUID, nullable=False),
    sa.Column('appointment_id', _UUID, nullable=False),
    sa.PrimaryKeyConstraint('provider_id', 'unit_start', name=op.f('pk_slot_claims'))
    )
    op.create_index('ix_slot_claims_appointment_id', 'slot_claims', ['appointment_id'])
    for table in ('availability', 'availability_exceptions', 'appointments', 'slot_claims'):
        grant(table)
        tenant_rls(table)


def downgrade() -> None:
    for table in ('slot_claims', 'appointments', 'availability_exceptions', 'availability'):
        op.drop_table(table)
