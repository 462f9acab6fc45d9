"""`idp purge`: delete what can never be used again (run it daily, e.g. from cron)."""

from __future__ import annotations

from typing import Annotated

import typer

from idp.cli.output import JSON_HELP, emit


def purge(json_: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False) -> None:
    """Delete expired codes, grants, refresh tokens, sessions, sign-in journeys and replay
    records, and forgotten failure counters. The audit trail is kept."""
    # Imported here: every command line registers `purge`, and these bring the ORM models
    # and the protocol store, which `idp serve`'s supervisor process never needs.
    from idp.accounts.sessions import purge_sessions
    from idp.accounts.throttle import build_throttle
    from idp.accounts.throttle_db import DatabaseThrottle
    from idp.cli.context import database, load_settings
    from idp.models import utcnow
    from idp.oauth.store import purge_expired
    from idp.oauth.transactions import purge_transactions

    now = utcnow()
    with database() as db:
        counts = purge_expired(db, now=now)
        counts["browser_sessions"] = purge_sessions(db, now=now)
        counts["login_transactions"] = purge_transactions(db, now=now)
        if not load_settings().redis_url:  # Redis counters expire by themselves
            throttle = build_throttle(redis_url=None, engine=db.get_bind().engine)
            assert isinstance(throttle, DatabaseThrottle)
            try:
                counts["failure_counters"] = throttle.purge_forgotten(now=now)
            finally:
                throttle.dispose()
    emit(
        {"deleted": counts},
        as_json=json_,
        text=", ".join(f"{name}: {count}" for name, count in counts.items()) + " deleted",
    )
