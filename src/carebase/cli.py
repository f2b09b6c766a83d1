"""The ``carebase`` command."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import typer

from carebase.settings import Settings, get_settings

cli = typer.Typer(help="Carebase: a self-hostable healthcare platform.", no_args_is_help=True,
                  pretty_exceptions_enable=False)


def _database(settings: Settings):
    import carebase.domains  # noqa: F401
    from carebase.platform.db import Database

    return Database(settings)


def _run(coro):
    return asyncio.run(coro)


def _as_owner(fn, settings: Settings | None = None):
    """Run ``await fn(session)`` in one owner transaction (operator commands bypass RLS)."""

    async def go():
        db = _database(settings or get_settings())
        try:
            async with db.transaction(owner=True) as session:
                return await fn(session)
        finally:
            await db.dispose()

    return _run(go())


@cli.command()
def migrate() -> None:
    """Apply database migrations (as the table owner)."""
    from carebase.platform.db import DatabaseUrls
    from carebase.platform.migrations import upgrade

    settings = get_settings()
    urls = DatabaseUrls.resolve(settings)
    upgrade(urls.owner)
    typer.echo("database is at the latest migration")


@cli.command("seed-demo")
def seed_demo() -> None:
    """Create the demo tenants and one user per role (idempotent)."""
    created = _seed(get_settings())
    typer.echo("demo data: " + (", ".join(created) if created else "already present"))


def _seed(settings: Settings) -> list[str]:
    from carebase import demo

    return _as_owner(lambda session: demo.seed(session, settings.demo_password.get_secret_value()), settings)


def _print_logins(settings: Settings, url: str) -> None:
    from carebase import demo

    typer.echo("")
    typer.echo(f"  Carebase is running at {url}  (API docs: {url}/api/v1/docs)")
    typer.echo(f"  Demo logins (password: {settings.demo_password.get_secret_value()}):")
    for login in demo.demo_logins():
        typer.echo(f"    {login}")
    typer.echo("")


@cli.command()
def serve(
    host: str = typer.Option(None, help="Interface to listen on (CAREBASE_HOST)"),
    port: int = typer.Option(None, help="Port (CAREBASE_PORT)"),
    workers: int = typer.Option(1, help="Worker processes"),
    do_migrate: bool = typer.Option(False, "--migrate", help="Apply migrations first"),
    do_seed: bool = typer.Option(False, "--seed-demo", help="Create the demo data first (idempotent)"),
    with_worker: bool = typer.Option(False, "--with-worker",
                                     help="Also run a job worker (reminders, notifications) for as long as this runs"),
) -> None:
    """Serve the API and portals."""
    import uvicorn

    from carebase.platform.db import DatabaseUrls, libpq_url

    settings = get_settings()
    host = host or settings.host
    port = port or settings.port
    urls = DatabaseUrls.resolve(settings)
    # Worker processes connect straight to the resolved server instead of each starting one.
    os.environ["CAREBASE_DATABASE_URL"] = libpq_url(urls.owner)
    os.environ["CAREBASE_APP_DATABASE_URL"] = libpq_url(urls.app)
    os.environ.setdefault("CAREBASE_SECRET_KEY", settings.master_secret.decode())
    from carebase.settings import set_settings

    set_settings(Settings())
    if do_migrate:
        from carebase.platform.migrations import upgrade

        upgrade(urls.owner)
    if do_seed:
        _seed(get_settings())
        _print_logins(settings, f"http://{host}:{port}")
    # One command for a laptop: without a worker, reminders and notifications would wait forever.
    worker = subprocess.Popen([sys.executable, "-m", "carebase.cli", "worker"]) if with_worker else None
    try:
        uvicorn.run("carebase.app:create_app", factory=True, host=host, port=port, workers=workers,
                    log_config=None, access_log=False, timeout_graceful_shutdown=5)
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(timeout=15)


@cli.command("create-tenant")
def create_tenant(
    slug: str = typer.Option(..., help="Short name used at sign-in, e.g. 'sunrise-clinic'"),
    name: str = typer.Option(..., help="Display name"),
    admin_email: str = typer.Option(..., help="E-mail of the first admin (invited by e-mail if new)"),
    admin_name: str = typer.Option("Administrator", help="Display name of the first admin"),
    kind: str = typer.Option("clinic", help="clinic, chain, hospital, pharmacy, lab or platform"),
    timezone: str = typer.Option("UTC", help="IANA time zone of the organization, e.g. Asia/Kolkata"),
) -> None:
    """Onboard an organization with its first admin."""
    from carebase.platform.errors import DomainError
    from carebase.tenants import service as tenants

    try:
        tenant, invited = _as_owner(lambda session: tenants.onboard_tenant(
            session, slug=slug, name=name, kind=kind, timezone=timezone, admin_email=admin_email,
            admin_name=admin_name))
    except DomainError as err:
        typer.echo(f"error: {err.detail}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"created {tenant.kind} '{tenant.slug}' ({tenant.id}); admin {admin_email} "
               + ("invited by e-mail" if invited else "already had an account and can sign in"))


@cli.command("hl7-listen")
def hl7_listen(
    port: int = typer.Option(2575, help="TCP port for MLLP"),
    host: str = typer.Option("0.0.0.0", help="Interface to listen on"),
    api_key: str = typer.Option(..., envvar="CAREBASE_HL7_API_KEY",
                                help="The organization's API key with scope hl7:ingest (CAREBASE_HL7_API_KEY)"),
) -> None:
    """Take HL7 v2 ADT messages over MLLP (TCP) for one organization and acknowledge each."""
    from carebase.hl7v2.mllp import listen
    from carebase.platform import heap
    from carebase.platform import logging as cblogging

    settings = get_settings()
    cblogging.configure(settings.log_level, settings.log_file)

    async def go():
        db = _database(settings)
        heap.settle()
        try:
            await listen(db, api_key, host, port, ready=lambda: typer.echo(f"listening for HL7 v2 (MLLP) on {host}:{port}"))
        finally:
            await db.dispose()

    _run(go())


@cli.command()
def worker(concurrency: int = typer.Option(4, help="Jobs run at once by this process")) -> None:
    """Run background jobs (retries, dead-letter list, recovery of jobs of dead workers)."""
    import importlib

    from carebase.platform import channels, heap, jobs

    settings = get_settings()
    for name in filter(None, (m.strip() for m in settings.job_modules.split(","))):
        importlib.import_module(name)
    # Every channel's adapter now rather than at the first delivery: a misspelt provider stops the
    # worker at start, and the provider libraries are not imported in the middle of a burst.
    try:
        for channel in channels.CHANNELS:
            channels.adapter_for(settings, channel)
    except ValueError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    from carebase.fhir.bulk import sweep_spools
    from carebase.platform import logging as cblogging

    cblogging.configure(settings.log_level, settings.log_file)
    sweep_spools(settings.home)  # what a killed worker's exports left on disk
    db = _database(settings)

    async def go():
        heap.settle()  # long-lived like the server, and an export's batches churn the heap alike
        try:
            await jobs.run_worker(db, concurrency=concurrency, poll_seconds=settings.worker_poll_seconds,
                                  heartbeat_seconds=settings.worker_heartbeat_seconds,
                                  stalled_seconds=settings.worker_stalled_seconds)
        finally:
            await db.dispose()

    _run(go())


@cli.command("rebuild-projections")
def rebuild_projections() -> None:
    """Truncate every read model and replay the event log into it."""
    from carebase.platform import eventstore

    typer.echo(f"replayed {_as_owner(eventstore.rebuild_projections)} events")


@cli.command()
def checkpoint() -> None:
    """Sign the current head of every stream, per tenant."""
    from carebase.platform import eventstore

    for cp in _as_owner(eventstore.checkpoint_all):
        typer.echo(f"tenant {cp['tenant_id'] or 'platform'}: {cp['streams']} streams up to position {cp['position']}")


@cli.command("reconcile-payments")
def reconcile_payments(days: int = typer.Option(2, help="How far back to compare")) -> None:
    """Compare our payments with the payment provider's list and keep the report (the worker does
    this daily). Exit 1 when they disagree."""
    from datetime import UTC, datetime, timedelta

    from carebase.payments import service as payments

    report = _as_owner(lambda s: payments.run_reconciliation(s, since=datetime.now(UTC) - timedelta(days=days)))
    for m in report.mismatches:
        typer.echo(f"MISMATCH  {m.provider_ref}: ours {m.ours}; {report.provider} says {m.theirs}")
    typer.echo(f"{report.provider}: compared {report.checked} payments, "
               + ("books agree" if not report.mismatches else f"{len(report.mismatches)} mismatch(es)"))
    raise typer.Exit(1 if report.mismatches else 0)


@cli.command("verify-chain")
def verify_chain(as_json: bool = typer.Option(False, "--json", help="Machine-readable output")) -> None:
    """Recompute every stream's hash chain and check the signed checkpoints. Exit 1 on tampering."""
    from carebase.platform import eventstore

    checked, problems = _as_owner(eventstore.verify_chain)
    if as_json:
        typer.echo(json.dumps({"checked": checked, "problems": [str(p) for p in problems]}))
    else:
        for p in problems:
            typer.echo(f"TAMPERED  {p}")
        typer.echo(f"checked {checked} events: " + ("chain intact" if not problems else f"{len(problems)} problem(s)"))
    raise typer.Exit(1 if problems else 0)


@cli.command()
def backup(file: Path = typer.Argument(..., help="Where to write the backup (custom-format dump)")) -> None:
    """Back up the whole database (consistent while running). Keep the master secret separately."""
    from carebase.platform import backup as bk
    from carebase.platform.db import DatabaseUrls

    try:
        size = bk.backup(DatabaseUrls.resolve(get_settings()).owner, file)
    except bk.BackupError as err:
        typer.echo(f"backup failed: {err}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"wrote {file} ({size} bytes)")


@cli.command()
def restore(file: Path = typer.Argument(..., help="A file written by 'carebase backup'"),
            yes: bool = typer.Option(False, "--yes", help="Do not ask before replacing the database")) -> None:
    """Replace the database's contents with a backup, in one transaction (all of it or nothing)."""
    from carebase.platform import backup as bk
    from carebase.platform.db import DatabaseUrls

    settings = get_settings()
    if not yes and not typer.confirm("This replaces everything in the database with the backup. Continue?"):
        raise typer.Exit(1)
    try:
        bk.restore(DatabaseUrls.resolve(settings).owner, file, settings.app_db_role)
    except bk.BackupError as err:
        typer.echo(f"restore failed, nothing was changed: {err}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"restored {file}")


@cli.command("database-url")
def database_url(owner: bool = typer.Option(True, help="Owner URL (default) or the app role's")) -> None:
    """Print the connection URL (starting the embedded server if needed)."""
    from carebase.platform.db import DatabaseUrls, libpq_url

    urls = DatabaseUrls.resolve(get_settings())
    typer.echo(libpq_url(urls.owner if owner else urls.app))


def main() -> None:
    cli()


if __name__ == "__main__":
    sys.exit(main())
