"""The protocol side of the login transaction (idp.oauth.transactions): read as stored,
claimed exactly once, and only when completed (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import update

from idp.accounts.sessions import start_session
from idp.admin.users import create_account
from idp.app import Services
from idp.crypto import token_digest
from idp.loop_sqlite import SqliteOnLoop
from idp.models import LoginTransaction
from idp.oauth import transactions
from tests.loops import run_on_fresh_loop

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
PARAMS = {"client_id": "app", "redirect_uri": "https://app.example/cb", "scope": "openid"}


def _new(services: Services, *, completed: bool, account_id: str | None = None) -> str:
    with services.sessions.begin() as db:
        txid, row = transactions.new_transaction(
            client_id="app",
            params={**PARAMS, "request": "dropped"},
            stage="password",
            account_id=None,
            now=NOW,
            lifetime_seconds=600,
        )
        transactions.insert_transaction(db, row)
        if completed:
            db.execute(
                update(LoginTransaction)
                .where(LoginTransaction.id_hash == token_digest(txid))
                .values(completed_at=NOW, stage="done", account_id=account_id)
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


def _signed_in(services: Services, email: str) -> tuple[str, str]:
    """An account with a live browser session: its id and the session's cookie value."""
    with services.sessions.begin() as db:
        account = create_account(db, email=email, password="a long passphrase 1")
        _, cookie = start_session(
            db,
            account_id=account.id,
            auth_time=NOW,
            amr=["pwd", "otp"],
            acr="x",
            settings=services.settings,
            now=NOW,
        )
        return account.id, cookie


def _claim_from_session(services: Services, txid: str, cookie: str, at: dt.datetime) -> object:
    claim = transactions.claim_from_session_query(
        services.engine.dialect, txid=txid, cookie_value=cookie, now=at
    )
    assert claim is not None
    read, then_claim = claim
    if then_claim is None:  # PostgreSQL: one statement claims and returns
        with services.engine.begin() as connection:
            return connection.exec_driver_sql(*read).first()
    database = SqliteOnLoop.for_engine(services.engine)
    assert database is not None

    async def read_then_claim() -> object:  # as `authorize.resume_on_loop` does
        async with database.transaction() as transaction:
            row = await transaction.fetch_one(*read)
            if row is not None:
                transaction.defer(*then_claim)
            return row

    try:
        return run_on_fresh_loop(read_then_claim())
    finally:
        database.close()


def test_the_claim_from_a_session_takes_only_its_own_live_transaction(
    services: Services,
) -> None:
    """The resume's claim on the event loop (one UPDATE ... FROM; on SQLite a read and
    the claim): nothing for another account's session, an unfinished or an expired
    transaction; the browser's own claims once, and returns the transaction and that
    session."""
    account_id, cookie = _signed_in(services, "pat@example.org")
    _, other_cookie = _signed_in(services, "sam@example.org")
    txid = _new(services, completed=True, account_id=account_id)
    unfinished = _new(services, completed=False)
    assert _claim_from_session(services, txid, other_cookie, NOW) is None
    assert _claim_from_session(services, unfinished, cookie, NOW) is None
    expired = NOW + dt.timedelta(seconds=600)
    assert _claim_from_session(services, txid, cookie, expired) is None
    row = _claim_from_session(services, txid, cookie, NOW)
    assert row is not None
    tx, session, disabled_at = transactions.claimed_with_session(row)  # type: ignore[arg-type]
    assert (tx.id_hash, tx.account_id) == (token_digest(txid), account_id)
    with services.sessions() as db:
        stored = db.get(LoginTransaction, token_digest(txid))
        assert stored is not None
        assert stored.consumed_at == NOW
    assert (session.account_id, session.id_hash) == (account_id, token_digest(cookie))
    assert session.auth_time == NOW
    assert disabled_at is None
    assert _claim_from_session(services, txid, cookie, NOW) is None  # once only
    assert (
        transactions.claim_from_session_query(
            services.engine.dialect, txid="x" * 129, cookie_value=cookie, now=NOW
        )
        is None
    )
