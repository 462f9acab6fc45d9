"""`idp serve` and `idp migrate`: run the provider, bring the database schema up to date."""

from __future__ import annotations

import socket
from typing import Annotated

import typer

from idp import migrations
from idp.cli.context import NOT_MIGRATED, connect, load_settings, safe_url
from idp.cli.errors import EXIT_DATABASE, CliError
from idp.cli.output import JSON_HELP, emit


def migrate(json_: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False) -> None:
    """Migrate the database to the newest schema revision."""
    settings = load_settings()
    engine = connect(settings)
    try:
        before = migrations.current_revision(engine)
        migrations.upgrade(engine)
        after = migrations.current_revision(engine)
    finally:
        engine.dispose()
    url = safe_url(settings.database_url)
    emit(
        {"database": url, "from_revision": before, "revision": after},
        as_json=json_,
        text=f"{url} is at revision {after} (was {before or 'empty'})",
    )


def ensure_port_free(host: str, port: int) -> None:
    """Fail in one line before starting when something already listens on host:port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.create_server((host, port), family=family):
            pass
    except OSError as exc:
        raise CliError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}; "
            "stop what uses it or choose another --port/--host"
        ) from exc


def serve(
    host: Annotated[str, typer.Option(metavar="HOST", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(min=1, max=65535, metavar="PORT", help="TCP port to listen on.")
    ] = 8000,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            metavar="N",
            help="Worker processes, forked from one built application; one that exits is "
            "replaced. New code or settings take a restart of the service.",
        ),
    ] = 1,
) -> None:
    """Serve the provider over HTTP (development databases are migrated first)."""
    settings = load_settings()
    ensure_port_free(host, port)
    engine = connect(settings)
    try:
        if not migrations.is_at_head(engine):
            if settings.env != "development":
                # A production schema changes only by an explicit, reviewed `idp migrate`.
                raise CliError(NOT_MIGRATED, status=EXIT_DATABASE)
            migrations.upgrade(engine)
    finally:
        engine.dispose()
    import uvicorn

    from idp.cli.worker import build_before_forking
    from idp.memory import resume_gc

    # With several workers, the application is built once here and forked into each
    # (idp.cli.worker). Where that is not safe, each worker builds its own from the
    # import string below, and this process only supervises.
    if workers > 1 and not build_before_forking():
        resume_gc()
    # uvicorn calls the factory in each serving process: the application built before
    # forking, or else a new one, built with the garbage collector paused.
    uvicorn.run(
        "idp.cli.worker:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        loop="uvloop",
        http="httptools",
        ws="none",  # no WebSocket routes, so no WebSocket implementation to import
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        log_level=settings.log_level,
        # No per-request access log from uvicorn: its lines carry whole query strings
        # (`login_hint` addresses, `id_token_hint` tokens), and formatting one per request
        # was a visible share of a token request's CPU. Security events go to the audit
        # trail; request logs belong to the reverse proxy in front.
        access_log=False,
        server_header=False,
    )
