"""The protocol side of the login transaction (idp.oauth.transactions): read as stored,
claimed exactly once, and only when completed (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import update

from idp.app import Services
from idp.crypto import token_digest
from idp.models import LoginTransaction
from idp.oauth import transactions

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
PARAMS = {"client_id": "app", "redirect_uri": "https://app.example/cb", "scope": "openid"}


def _new(services: Services, *, completed: bool) -> str:
    with services.sessions.begin() as db:
        txid = transactions.create_transaction(
            db,
            client_id="app",
            params={**PARAMS, "request": "dropped"},
            stage="password",
            account_id=None,
            now=NOW,
            lifetime_seconds=600,
        )
        if completed:
            db.execute(
                update(LoginTransaction)
                .where(LoginTransaction.id_hash == token_digest(txid))
                .values(completed_at=NOW, stage="done")
            )
    return txid


def test_found_as_stored_and_unknown_or_overlong_ids_are_none(services: Services) -> None:
    txid = _new(services, completed=False)
    with services.sessions.begin() as db:
        found = transactions.find_transaction(db, txid=txid)
        assert transactions.find_transaction(db, txid=txid[:-1] + "x") is None
        assert transactions.find_transaction(db, txid="x" * 129) is None
        assert transactions.find_transaction(db, txid=None) is None
    assert found is not None
    assert found.params == PARAMS  # `request` is never stored
    assert found.id_hash == token_digest(txid)
    assert found.expires_at == NOW + dt.timedelta(seconds=600)  # an aware UTC datetime
    assert found.consumed_at is None
    assert found.completed_at is None
    assert found.amr == []


def test_a_completed_transaction_is_claimed_once(services: Services) -> None:
    txid = _new(services, completed=True)
    with services.sessions.begin() as db:
        found = transactions.find_transaction(db, txid=txid)
        assert found is not None
        assert transactions.claim_transaction(db, transaction=found, now=NOW)
        # The same read again (a second tab that read before the first claimed).
        assert not transactions.claim_transaction(db, transaction=found, now=NOW)
    with services.sessions.begin() as db:
        again = transactions.find_transaction(db, txid=txid)
    assert again is not None
    assert again.consumed_at == NOW


def test_an_unfinished_transaction_cannot_be_claimed(services: Services) -> None:
    txid = _new(services, completed=False)
    with services.sessions.begin() as db:
        found = transactions.find_transaction(db, txid=txid)
        assert found is not None
        assert not transactions.claim_transaction(db, transaction=found, now=NOW)
