"""Alembic environment: runs on the connection the Carebase CLI hands in (as the table owner)."""

from alembic import context

import carebase.domains  # noqa: F401  - registers every table on the metadata
from carebase.platform import migrations
from carebase.platform.db import metadata

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise SystemExit("Run migrations with 'carebase migrate', which connects as the table owner.")

context.configure(connection=connection, target_metadata=metadata, compare_type=True)
with context.begin_transaction():
    context.run_migrations()
    migrations.run_after_upgrade(connection)
