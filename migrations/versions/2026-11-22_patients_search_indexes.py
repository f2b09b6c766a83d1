"""patients search indexes: searches through a view so their indexes are usable; merges indexed

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-22
"""
from alembic import op

from carebase.platform.migrations import CURRENT_TENANT, grant

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Under row-level security only leakproof conditions run before the policy, so `@@`,
    # upper(mrn) and lower(email) could use no index: every search read every patient of every
    # tenant. The view repeats the policy's condition and runs with the owner's rights (no RLS),
    # so the planner may use the indexes. See patients/models.py.
    op.execute(f"CREATE VIEW patients_visible AS SELECT * FROM patients WHERE tenant_id = {CURRENT_TENANT}")
    grant('patients_visible', 'SELECT')
    op.execute("CREATE INDEX ix_patients_tenant_id_upper_mrn ON patients (tenant_id, upper(mrn))")
    op.execute("CREATE INDEX ix_patients_tenant_id_lower_email ON patients (tenant_id, lower(email))")
    # A chart gathers the records merged into its patient (patients.record_ids): without this
    # index that walk read the whole register.
    op.execute("CREATE INDEX ix_patients_merged_into ON patients (merged_into) WHERE merged_into IS NOT NULL")


def downgrade() -> None:
    op.execute("DROP INDEX ix_patients_merged_into")
    op.execute("DROP INDEX ix_patients_tenant_id_lower_email")
    op.execute("DROP INDEX ix_patients_tenant_id_upper_mrn")
    op.execute("DROP VIEW patients_visible")
