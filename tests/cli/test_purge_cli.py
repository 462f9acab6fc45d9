"""`idp purge`: what can never be used again goes; what is still live stays."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select

from idp.app import Services
from idp.crypto import new_token, token_digest
from idp.models import AuditEvent, LoginTransaction, utcnow
from tests.cli.test_cli import environment, ok_json, run_idp


def _transaction(services: Services, *, expires_at: dt.datetime) -> str:
    digest = token_digest(new_token())
    with services.sessions() as db, db.begin():
        db.add(
            LoginTransaction(
                id_hash=digest,
                client_id="app",
                params={},
                csrf_token=new_token(),
                expires_at=expires_at,
            )
        )
        db.add(AuditEvent(event="test.kept"))
    return digest


def test_purge_deletes_long_expired_journeys_and_keeps_live_ones(
    database_url: str, services: Services
) -> None:
    now = utcnow()
    old = _transaction(services, expires_at=now - dt.timedelta(days=2))
    live = _transaction(services, expires_at=now + dt.timedelta(minutes=10))
    recent = _transaction(services, expires_at=now - dt.timedelta(minutes=5))

    result = ok_json(run_idp("purge", "--json", env=environment(database_url)))

    assert result["deleted"]["login_transactions"] == 1
    assert set(result["deleted"]) >= {"grants", "refresh_tokens", "browser_sessions"}
    with services.sessions() as db:
        left = set(db.scalars(select(LoginTransaction.id_hash)))
        audit = db.scalars(select(AuditEvent.event)).all()
    assert left == {live, recent}  # an expired journey still shows its "expired" page a day
    assert old not in left
    assert audit.count("test.kept") == 3  # the audit trail is never purged
