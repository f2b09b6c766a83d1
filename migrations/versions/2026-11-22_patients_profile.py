"""patients profile: the seed's registration fields, global ids, consents, e-mail verification,
merges, full-text name search and hashed government identifiers

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from carebase.platform.migrations import app_role, grant, tenant_rls

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

_NEW_COLUMNS = [
    sa.Column('global_id', sa.String(length=24), nullable=True),
    sa.Column('gender', sa.String(length=1), nullable=False, server_default='U'),
    sa.Column('country', sa.String(length=2), nullable=True),
    sa.Column('timezone', sa.String(length=64), nullable=True),
    sa.Column('preferred_language', sa.String(length=16), nullable=True),
    sa.Column('emergency_contact_name', sa.String(length=200), nullable=True),
    sa.Column('emergency_contact_relationship', sa.String(length=50), nullable=True),
    sa.Column('emergency_contact_phone', sa.String(length=20), nullable=True),
    *[sa.Column(f'{kind}_{what}_at', sa.DateTime(timezone=True), nullable=True)
      for kind in ('gdpr', 'hipaa', 'data_sharing') for what in ('consent', 'withdrawn')],
    sa.Column('email_verified_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('merged_into', postgresql.UUID(as_uuid=True), nullable=True),
    sa.Column('merged_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('search_name', sa.Text(), nullable=True),
    sa.Column('government_id_system', sa.String(length=32), nullable=True),
    sa.Column('government_id_hash', sa.String(length=64), nullable=True),
    sa.Column('government_id_last4', sa.String(length=4), nullable=True),
]


def upgrade() -> None:
    for col in _NEW_COLUMNS:
        op.add_column('patients', col)
    op.execute("UPDATE patients SET gender = CASE sex WHEN 'female' THEN 'F' WHEN 'male' THEN 'M' "
               "WHEN 'other' THEN 'O' ELSE 'U' END")
    op.drop_column('patients', 'sex')
    # Accent- and case-folding happens in Python before the text gets here (no superuser-only
    # unaccent extension needed), so 'simple' is the right dictionary: no stemming of names.
    op.execute("ALTER TABLE patients ADD COLUMN search_vector tsvector "
               "GENERATED ALWAYS AS (to_tsvector('simple', coalesce(search_name, ''))) STORED")
    op.create_index('ix_patients_search_vector', 'patients', ['search_vector'], postgresql_using='gin')
    op.create_index('uq_patients_global_id', 'patients', ['global_id'], unique=True)
    op.create_index('ix_patients_tenant_id_birth_date', 'patients', ['tenant_id', 'birth_date'])
    op.create_index('ix_patients_tenant_id_phone', 'patients', ['tenant_id', 'phone'])
    op.create_index('ix_patients_tenant_id_email', 'patients', ['tenant_id', 'email'])
    op.create_index('ix_patients_tenant_id_government_id_hash', 'patients', ['tenant_id', 'government_id_hash'])
    # Global patient numbers: a sequence cannot hand out the same number twice, across tenants.
    op.execute("CREATE SEQUENCE patient_global_numbers")
    op.execute(f"GRANT USAGE ON SEQUENCE patient_global_numbers TO {app_role()}")

    op.create_table('patient_email_verifications',
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('tenant_id', postgresql.UUID(as_uuid=True), nullable=False),
    sa.Column('patient_id', postgresql.UUID(as_uuid=True), nullable=False),
    sa.Column('email', sa.String(length=320), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('used_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('token_hash', name=op.f('pk_patient_email_verifications'))
    )
    op.create_index('ix_patient_email_verifications_patient_id', 'patient_email_verifications', ['patient_id'])
    grant("patient_email_verifications", "SELECT, INSERT, UPDATE")
    tenant_rls("patient_email_verifications")


def downgrade() -> None:
    op.drop_table('patient_email_verifications')
    op.execute("DROP SEQUENCE patient_global_numbers")
    for name in ('ix_patients_tenant_id_government_id_hash', 'ix_patients_tenant_id_email',
                 'ix_patients_tenant_id_phone', 'ix_patients_tenant_id_birth_date', 'uq_patients_global_id',
                 'ix_patients_search_vector'):
        op.drop_index(name, table_name='patients')
    op.drop_column('patients', 'search_vector')
    op.add_column('patients', sa.Column('sex', sa.String(length=16), nullable=True))
    op.execute("UPDATE patients SET sex = CASE gender WHEN 'F' THEN 'female' WHEN 'M' THEN 'male' "
               "WHEN 'O' THEN 'other' ELSE 'unknown' END")
    for col in reversed(_NEW_COLUMNS):
        op.drop_column('patients', col.name)
