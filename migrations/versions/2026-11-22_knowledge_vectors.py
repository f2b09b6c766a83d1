"""knowledge base: sentence embeddings for vector retrieval, where the server has pgvector

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-22
"""
import logging

from alembic import op

from carebase.platform.migrations import grant

revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None

log = logging.getLogger("alembic.runtime.migration")


def upgrade() -> None:
    # pgvector is optional: a server without it keeps full-text retrieval only (the `ai` extra's
    # vector search needs both this table and the model, see carebase.knowledge.vectors). Creating
    # the extension needs a superuser (pgvector is not a trusted extension); a savepoint keeps a
    # refusal from aborting the migration.
    conn = op.get_bind()
    if conn.exec_driver_sql("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'").scalar() is None:
        log.warning("pgvector is not installed in this PostgreSQL server: knowledge search stays full-text")
        return
    try:
        with conn.begin_nested():
            conn.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS vector")
    except Exception as exc:  # noqa: BLE001 - any refusal means the same: no vectors here
        log.warning("cannot create the pgvector extension (%s): knowledge search stays full-text",
                    type(exc).__name__)
        return
    # One row per knowledge entry, filled by the knowledge loader when the model is installed; the
    # 783 entries are few enough that an exact scan beats an approximate index (and is exact).
    op.execute("""
        CREATE TABLE kb_vectors (
            kind varchar(16) NOT NULL,
            key varchar(200) NOT NULL,
            embedding vector(384) NOT NULL,
            CONSTRAINT pk_kb_vectors PRIMARY KEY (kind, key),
            CONSTRAINT fk_kb_vectors_kb_entries FOREIGN KEY (kind, key)
                REFERENCES kb_entries (kind, key) ON DELETE CASCADE
        )""")
    grant('kb_vectors', 'SELECT')


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS kb_vectors")
