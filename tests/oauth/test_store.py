"""The token issuer's repository: single use by compare-and-set, family revocation,
purging (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select, update

from idp.admin.clients import create_client
from idp.admin.users import create_account
from idp.app import Services
from idp.crypto import token_digest
from idp.db import make_engine
from idp.models import Account, AuthorizationCode, Grant, RefreshToken, RevokedAccessToken
from idp.oauth import store
from idp.oauth.models import Authentication
from tests.loops import run_on_fresh_loop

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def grant_id(services: Services) -> str:
    with services.sessions() as db, db.begin():
        account = create_account(db, email="pat@example.org", password="a long passphrase 1")
        create_client(db, name="App", redirect_uris=["https://app.example/cb"], client_id="app")
        grant = store.grant_row(
            client_id="app",
            authentication=Authentication(
                account_id=account.id, auth_time=NOW, acr="x", amr=["pwd"], sid="s"
            ),
            scope="openid",
            now=NOW,
            absolute_seconds=3600,
        )
        code = store.code_row(
            code="the-code",
            grant=grant,
            redirect_uri="https://app.example/cb",
            nonce=None,
            code_challenge="c" * 43,
            code_challenge_method="S256",
            now=NOW,
            lifetime_seconds=60,
        )
        store.insert_issued_code(db, grant, code)
        subject = store.subject_of(Grant(**grant))
        for value in ("r1", "r2"):
            row = store.refresh_token_row(
                token=value,
                subject=subject,
                client_id="app",
                scope="openid",
                now=NOW,
                idle_seconds=600,
            )
            store.insert_refresh_token(db, row)
        return str(grant["id"])


def test_a_code_is_redeemed_once_and_reuse_revokes_the_grant(services, grant_id) -> None:
    with services.sessions() as db, db.begin():
        assert store.redeem_code(db, code="the-code", client_id="other", now=NOW) is None
        row = store.redeem_code(db, code="the-code", client_id="app", now=NOW)
        assert row is not None
        assert row.grant_id == grant_id
    with services.sessions() as db, db.begin():
        assert store.grant_is_live(db, grant_id=grant_id)
        with pytest.raises(store.CodeReusedError):
            store.redeem_code(db, code="the-code", client_id="app", now=NOW)
    with services.sessions() as db:
        assert not store.grant_is_live(db, grant_id=grant_id)
        revoked = db.scalar(
            select(func.count())
            .select_from(RefreshToken)
            .where(RefreshToken.revoked_at.is_not(None))
        )
        assert revoked == 2


def test_a_redeemed_code_carries_its_grants_subject(services, grant_id) -> None:
    with services.sessions() as db, db.begin():
        redeemed = store.redeem_code(db, code="the-code", client_id="app", now=NOW)
    assert redeemed is not None
    assert (redeemed.redirect_uri, redeemed.scope, redeemed.code_challenge_method) == (
        "https://app.example/cb",
        "openid",
        "S256",
    )
    assert redeemed.subject is not None
    assert redeemed.subject.grant_id == grant_id
    assert (redeemed.subject.auth_time, redeemed.subject.acr) == (NOW, "x")
    assert (redeemed.subject.amr, redeemed.subject.sid) == (["pwd"], "s")
    assert redeemed.subject.grant_expires_at == NOW + dt.timedelta(seconds=3600)


@pytest.mark.parametrize("change", ["grant revoked", "account disabled"])
def test_a_code_whose_grant_died_since_has_no_subject(services, grant_id, change) -> None:
    with services.sessions() as db, db.begin():
        grant = db.get(Grant, grant_id)
        assert grant is not None
        if change == "grant revoked":
            store.revoke_grant(db, grant_id=grant_id, now=NOW, reason="test")
        else:
            db.execute(
                update(Account).where(Account.id == grant.account_id).values(disabled_at=NOW)
            )
    with services.sessions() as db, db.begin():
        redeemed = store.redeem_code(db, code="the-code", client_id="app", now=NOW)
    assert redeemed is not None
    assert redeemed.subject is None  # the grant then refuses with invalid_grant


def test_an_expired_code_is_not_redeemed(services, grant_id) -> None:
    with services.sessions() as db, db.begin():
        later = NOW + dt.timedelta(seconds=60)
        assert store.redeem_code(db, code="the-code", client_id="app", now=later) is None


def test_a_refresh_token_rotates_once(services, grant_id) -> None:
    with services.sessions() as db, db.begin():
        found = store.find_refresh_token(db, token="r1")
        assert found is not None
        assert found.grant.id == grant_id
        assert store.rotate_refresh_token(db, token_hash=found.token.token_hash, now=NOW)
        assert not store.rotate_refresh_token(db, token_hash=found.token.token_hash, now=NOW)
        assert store.find_refresh_token(db, token="unknown") is None


def test_access_token_revocation_by_jti_and_by_grant(services, grant_id) -> None:
    with services.sessions() as db, db.begin():
        assert not store.access_token_revoked(db, jti="j1", grant_id=grant_id)
        store.revoke_access_token(db, jti="j1", expires_at=NOW)
        store.revoke_access_token(db, jti="j1", expires_at=NOW)  # idempotent
        assert store.access_token_revoked(db, jti="j1", grant_id=None)
        store.revoke_grant(db, grant_id=grant_id, now=NOW, reason="test")
        assert store.access_token_revoked(db, jti="j2", grant_id=grant_id)
        assert store.access_token_revoked(db, jti="j2", grant_id="no-such-grant")


def test_revocation_read_on_a_driver_connection_agrees_and_leaves_it_clean(
    services, grant_id
) -> None:
    # One connection in the pool: the read's connection is the one handed out next.
    engine = make_engine(services.settings.database_url, pool_size=1, max_overflow=0)
    try:

        def now_revoked(jti: str, grant: str | None) -> bool:
            return store.access_token_revoked_now(engine, jti=jti, grant_id=grant)

        assert not now_revoked("j1", grant_id)
        assert not now_revoked("j1", None)
        with services.sessions() as db, db.begin():
            store.revoke_access_token(db, jti="j1", expires_at=NOW)
        assert now_revoked("j1", grant_id)  # committed elsewhere: seen at once
        assert now_revoked("j1", None)
        assert not now_revoked("j2", grant_id)
        assert now_revoked("j2", "no-such-grant")
        with services.sessions() as db, db.begin():
            store.revoke_grant(db, grant_id=grant_id, now=NOW, reason="test")
        assert now_revoked("j2", grant_id)
        if engine.dialect.name == "postgresql":
            raw = engine.raw_connection()
            try:  # writers after it get a transaction again
                assert raw.dbapi_connection.autocommit is False  # type: ignore[union-attr]
            finally:
                raw.close()
    finally:
        engine.dispose()


def test_client_assertion_jti_is_single_use(services, grant_id) -> None:
    with services.sessions() as db, db.begin():
        assert store.use_client_assertion(db, client_id="app", jti="a", expires_at=NOW)
        assert not store.use_client_assertion(db, client_id="app", jti="a", expires_at=NOW)
        assert store.use_client_assertion(db, client_id="other", jti="a", expires_at=NOW)


def test_purge_keeps_live_rows_and_deletes_dead_ones(services, grant_id) -> None:
    with services.sessions() as db, db.begin():
        store.revoke_access_token(db, jti="j1", expires_at=NOW + dt.timedelta(minutes=10))
        assert set(store.purge_expired(db, now=NOW).values()) == {0}
    with services.sessions() as db, db.begin():
        counts = store.purge_expired(db, now=NOW + dt.timedelta(hours=2))
        assert counts["grants"] == 1
        assert counts["revoked_access_tokens"] == 1
    with services.sessions() as db:
        for model in (Grant, AuthorizationCode, RefreshToken, RevokedAccessToken):
            assert db.scalar(select(func.count()).select_from(model)) == 0, model


def _rotate_on_pg(services: Services, *, token: str, successor: str, at: dt.datetime) -> object:
    """`store.refresh_rotation_query` as the event loop runs it (`idp.async_db`)."""

    from idp.async_db import AsyncDatabase

    sql, params = store.refresh_rotation_query(
        token=token,
        successor=successor,
        client_id="app",
        now=at,
        idle_seconds=600,
    )

    async def main() -> object:
        database = AsyncDatabase.for_engine(services.engine, size=1)
        try:
            return await database.fetch_row(sql, params)
        finally:
            await database.close()

    return run_on_fresh_loop(main())


def _refresh_rows(services: Services) -> dict[str, RefreshToken]:
    with services.sessions() as db:
        return {row.token_hash: row for row in db.scalars(select(RefreshToken))}


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_rotation_in_one_statement_writes_what_the_threaded_path_writes(
    services, grant_id
) -> None:
    """PostgreSQL's refresh on the event loop claims the token and stores its successor
    in one statement: the successor's row is `refresh_token_row`'s, its expiry the idle
    time or, nearer the grant's end, the grant's end; the claim is single use."""
    row = _rotate_on_pg(services, token="r1", successor="s1", at=NOW)
    assert row is not None
    claimed = store.claimed_from_row(row)  # type: ignore[arg-type]
    assert (claimed.scope, claimed.subject.grant_id, claimed.subject.acr) == (
        "openid",
        grant_id,
        "x",
    )
    rows = _refresh_rows(services)
    assert rows[token_digest("r1")].rotated_at == NOW
    with services.sessions() as db:
        grant = db.get(Grant, grant_id)
        assert grant is not None
        expected = store.refresh_token_row(
            token="s1",
            subject=store.subject_of(grant),
            client_id="app",
            scope="openid",
            now=NOW,
            idle_seconds=600,
        )
    written = rows[token_digest("s1")]
    assert {k: getattr(written, k) for k in expected} == expected
    # Single use: the same token again claims nothing and writes nothing.
    assert _rotate_on_pg(services, token="r1", successor="s2", at=NOW) is None
    assert token_digest("s2") not in _refresh_rows(services)
    # Used within the idle time every time: near the grant's end (3,600 s after sign-in)
    # the successor expires with the grant.
    current = "s1"
    for step, seconds in enumerate((500, 1000, 1500, 2000, 2500, 3000, 3300)):
        at = NOW + dt.timedelta(seconds=seconds)
        assert _rotate_on_pg(services, token=current, successor=f"n{step}", at=at) is not None
        current = f"n{step}"
    end = _refresh_rows(services)[token_digest(current)].expires_at
    assert end == NOW + dt.timedelta(seconds=3600)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("change", ["grant revoked", "account disabled", "expired", "client"])
def test_a_rotation_in_one_statement_writes_nothing_it_may_not(services, grant_id, change) -> None:
    at = NOW
    with services.sessions() as db, db.begin():
        grant = db.get(Grant, grant_id)
        assert grant is not None
        if change == "grant revoked":
            store.revoke_grant(db, grant_id=grant_id, now=NOW, reason="test")
        elif change == "account disabled":
            db.execute(
                update(Account).where(Account.id == grant.account_id).values(disabled_at=NOW)
            )
        elif change == "expired":
            at = NOW + dt.timedelta(seconds=601)
        else:
            db.execute(update(RefreshToken).values(client_id="other"))
    before = {h: (r.rotated_at, r.revoked_at) for h, r in _refresh_rows(services).items()}
    assert _rotate_on_pg(services, token="r1", successor="s1", at=at) is None
    after = {h: (r.rotated_at, r.revoked_at) for h, r in _refresh_rows(services).items()}
    assert after == before  # not claimed, no successor
