"""platform jobs: procrastinate's queue schema and the job failure log

procrastinate's schema is pinned to the installed version (requirements.txt); a procrastinate
upgrade brings its own migration here. The app role uses the queue tables directly (it defers jobs
inside request transactions and runs them in workers); they hold ids, never PHI.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""
from importlib import resources

import sqlalchemy as sa
from alembic import op

from carebase.platform.migrations import app_role, grant, tenant_rls

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

QUEUE_TABLES = ("procrastinate_jobs", "procrastinate_events", "procrastinate_periodic_defers",
                "procrastinate_workers")


def upgrade() -> None:
    schema = resources.files("procrastinate.sql").joinpath("schema.sql").read_text()
    # The driver's own connection: the schema is many statements with $$ bodies and % signs.
    op.get_bind().connection.dbapi_connection.execute(schema)
    op.create_table('job_failures',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=True), nullable=False),
    sa.Column('job_id', sa.BigInteger(), nullable=False),
    sa.Column('task_name', sa.String(length=128), nullable=False),
    sa.Column('tenant_id', sa.UUID(), nullable=True),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('error_type', sa.String(length=200), nullable=False),
    sa.Column('error', sa.Text(), nullable=False),
    sa.Column('failed_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_job_failures'))
    )
    op.create_index(op.f('ix_job_failures_job_id'), 'job_failures', ['job_id'], unique=False)
    for table in QUEUE_TABLES:
        grant(table)
    grant("job_failures", "SELECT, INSERT")
    tenant_rls("job_failures", global_rows=True)
    op.execute(f"GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO {app_role()}")


def downgrade() -> None:
    op.drop_index(op.f('ix_job_failures_job_id'), table_name='job_failures')
    op.drop_table('job_failures')
    for table in reversed(QUEUE_TABLES):
        op.execute(f"DROP TABLE IF EXISTS {table} CASCADE")
    op.execute("""
        DO $$ DECLARE r record; BEGIN
          FOR r IN SELECT p.oid::regprocedure AS sig FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                   WHERE n.nspname = 'public' AND p.proname LIKE 'procrastinate%' LOOP
            EXECUTE 'DROP FUNCTION IF EXISTS ' || r.sig || ' CASCADE';
          END LOOP;
          FOR r IN SELECT t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
                   WHERE n.nspname = 'public' AND t.typname LIKE 'procrastinate%' AND t.typtype IN ('e', 'c') LOOP
            EXECUTE 'DROP TYPE IF EXISTS ' || quote_ident(r.typname) || ' CASCADE';
          END LOOP;
        END $$;
    """)
