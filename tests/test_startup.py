"""Start-up: signing keys exist as soon as the server is up, before any request needs one."""

from __future__ import annotations

from sqlalchemy import func, select

from idp.models import SigningKey
from tests.conftest import LiveServer


def test_signing_keys_are_made_at_first_start(live_server: LiveServer) -> None:
    with live_server.services.sessions() as db:
        algs = db.scalars(select(SigningKey.alg).group_by(SigningKey.alg)).all()
        total = db.scalar(select(func.count()).select_from(SigningKey))
    assert sorted(algs) == ["ES256", "RS256"]
    assert total == 2
