"""The hosted pages' read of their login transaction (`idp.web.pages.transactions.load`):
one Core statement, whose transaction the request's session then writes as the ORM
would (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt

from idp.accounts import totp
from idp.admin.clients import create_client
from idp.admin.users import create_account
from idp.app import Services
from idp.crypto import token_digest
from idp.models import LoginTransaction, TotpCredential
from idp.web.pages import transactions

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


def _setup(services: Services, *, enrolled: bool) -> str:
    with services.sessions.begin() as db:
        account = create_account(db, email="pat@example.org", password="a long passphrase 1")
        create_client(db, name="App", redirect_uris=["https://app.example/cb"], client_id="app")
        if enrolled:
            secret = totp.new_secret()
            db.add(
                TotpCredential(
                    account_id=account.id,
                    secret_encrypted=totp.encrypt_secret(
                        services.encryptor, secret, account_id=account.id
                    ),
                    last_used_step=0,
                    created_at=NOW,
                )
            )
        db.add(
            LoginTransaction(
                id_hash=token_digest("the-tx"),
                client_id="app",
                params={"redirect_uri": "https://app.example/cb"},
                csrf_token="c" * 43,
                account_id=account.id,
                amr=["pwd"],
                created_at=NOW,
                expires_at=NOW + dt.timedelta(minutes=30),
                stage="mfa",
            )
        )
        return account.id


def test_load_reads_the_transaction_its_client_and_authenticator(services: Services) -> None:
    account_id = _setup(services, enrolled=True)
    with services.sessions.begin() as db:
        loaded = transactions.load(db, tx="the-tx", now=NOW, for_update=True, credential=True)
    assert loaded.problem is None
    assert loaded.row is not None
    assert loaded.row.stage == "mfa"
    assert loaded.row.amr == ["pwd"]
    assert loaded.row.expires_at == NOW + dt.timedelta(minutes=30)
    assert loaded.client == transactions.ClientInfo("App", None, True)
    assert loaded.credential is not None
    assert loaded.credential.account_id == account_id
    assert loaded.credential.last_used_step == 0
    with services.sessions.begin() as db:
        assert transactions.load(db, tx="the-tx", now=NOW, enrolment=True).enrolled is True
        assert transactions.load(db, tx="other", now=NOW).row is None
        late = transactions.load(db, tx="the-tx", now=NOW + dt.timedelta(hours=1))
    assert late.problem is transactions.Problem.EXPIRED


def test_without_an_authenticator_there_is_none(services: Services) -> None:
    _setup(services, enrolled=False)
    with services.sessions.begin() as db:
        loaded = transactions.load(db, tx="the-tx", now=NOW, credential=True, enrolment=True)
    assert loaded.row is not None
    assert loaded.credential is None
    assert loaded.enrolled is False


def test_what_a_post_changes_on_it_is_written(services: Services) -> None:
    _setup(services, enrolled=False)
    with transactions.posting(services) as db:
        loaded = transactions.load(db, tx="the-tx", now=NOW, for_update=True)
        assert loaded.row is not None
        loaded.row.stage = "consent"
        loaded.row.amr = ["pwd", "otp"]
        # Read again in the same session: the session's own (changed) copy.
        assert transactions.load(db, tx="the-tx", now=NOW).row is loaded.row
    with services.sessions.begin() as db:
        again = transactions.load(db, tx="the-tx", now=NOW)
    assert again.row is not None
    assert again.row.stage == "consent"
    assert again.row.amr == ["pwd", "otp"]


def test_an_unchanged_transaction_is_not_written(services: Services) -> None:
    _setup(services, enrolled=False)
    with transactions.posting(services) as db:
        loaded = transactions.load(db, tx="the-tx", now=NOW, for_update=True)
        assert loaded.row is not None
        # Read as loaded: no history, so nothing to flush or save.
        assert not db.dirty
        assert not db.new
