"""TOTP against real databases: drift, one-time acceptance across processes, enrolment, reset."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from sqlalchemy import func, select

from idp.accounts import totp
from idp.app import Services
from idp.crypto import new_token, token_digest
from idp.db import make_engine, make_session_factory, transaction
from idp.models import (
    Account,
    AuditEvent,
    BrowserSession,
    Grant,
    LoginTransaction,
    RefreshToken,
    TotpCredential,
)
from tests.accounts._identity import NOW, make_account, make_grant_with_refresh_token

# --- verification against the database ------------------------------------------------------


def _enrolled(services: Services, *, now: dt.datetime = NOW) -> tuple[str, str, str]:
    """An account with a credential whose last used step is well in the past."""
    secret = totp.new_secret()
    with transaction(services.sessions) as db:
        account = make_account(db)
        credential = TotpCredential(
            account_id=account.id,
            secret_encrypted=totp.encrypt_secret(services.encryptor, secret, account_id=account.id),
            last_used_step=totp.time_step(now) - 100,
        )
        db.add(credential)
        db.flush()
        return account.id, credential.id, secret


def _verify(services: Services, credential_id: str, code: str, now: dt.datetime) -> bool:
    with transaction(services.sessions) as db:
        credential = db.get_one(TotpCredential, credential_id)
        return totp.verify_code(
            db, credential=credential, code=code, encryptor=services.encryptor, now=now
        )


def _code(secret: str, now: dt.datetime, offset: int = 0) -> str:
    return totp.code_at(secret, totp.time_step(now) + offset)


@pytest.mark.parametrize("offset", [-1, 0, 1])
def test_code_within_one_step_of_drift_is_accepted(services: Services, offset: int) -> None:
    _, credential_id, secret = _enrolled(services)
    assert _verify(services, credential_id, _code(secret, NOW, offset), NOW)


@pytest.mark.parametrize("offset", [-3, -2, 2, 3])
def test_code_two_or_more_steps_away_is_refused(services: Services, offset: int) -> None:
    _, credential_id, secret = _enrolled(services)
    assert not _verify(services, credential_id, _code(secret, NOW, offset), NOW)


def test_code_is_accepted_once_only(services: Services) -> None:
    _, credential_id, secret = _enrolled(services)
    code = _code(secret, NOW)
    assert _verify(services, credential_id, code, NOW)
    # NIST 800-63B 5.1.4.2 / ASVS 6.5.1: the same code, seconds later, is refused.
    assert not _verify(services, credential_id, code, NOW + dt.timedelta(seconds=5))
    # ...and so is the code of the previous step, though still within drift.
    assert not _verify(services, credential_id, _code(secret, NOW, -1), NOW)
    # The next step's code still works.
    assert _verify(services, credential_id, _code(secret, NOW, 1), NOW)
    with transaction(services.sessions) as db:
        stored = db.get_one(TotpCredential, credential_id).last_used_step
    assert stored == totp.time_step(NOW) + 1


def test_wrong_and_malformed_codes_are_refused_without_spending_a_step(
    services: Services,
) -> None:
    _, credential_id, secret = _enrolled(services)
    right = _code(secret, NOW)
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"
    for bad in [wrong, right[:5], right + "0", "abcdef", "", right.replace(right[0], "x", 1)]:
        assert not _verify(services, credential_id, bad, NOW)
    assert _verify(services, credential_id, f"{right[:3]} {right[3:]}", NOW)


def test_code_from_another_accounts_seed_is_refused(services: Services) -> None:
    _, credential_a, _ = _enrolled(services)
    _, _, secret_b = _enrolled(services)
    assert not _verify(services, credential_a, _code(secret_b, NOW), NOW)


def test_racing_requests_on_separate_engines_accept_a_code_once(database_url: str) -> None:
    """Eight "processes" (own engine and connection each) submit the same code at once."""
    from idp.app import build_services
    from idp.settings import Settings

    base = build_services(Settings(database_url=database_url))
    _, credential_id, secret = _enrolled(base)
    code = _code(secret, NOW)
    racers = 8
    barrier = threading.Barrier(racers)
    results: list[bool] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def attempt() -> None:
        engine = make_engine(database_url)
        factory = make_session_factory(engine)
        try:
            # Meet before opening a transaction: SQLite may take its write lock at BEGIN,
            # and a thread holding it at the barrier would keep the others from arriving.
            barrier.wait(timeout=30)
            with transaction(factory) as db:
                credential = db.get_one(TotpCredential, credential_id)
                ok = totp.verify_code(
                    db, credential=credential, code=code, encryptor=base.encryptor, now=NOW
                )
            with lock:
                results.append(ok)
        except BaseException as exc:  # reported below; a thread must not swallow it
            with lock:
                errors.append(exc)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=attempt) for _ in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    base.engine.dispose()
    assert errors == []
    assert sorted(results) == [False] * (racers - 1) + [True]


# --- enrolment -----------------------------------------------------------------------------


def test_confirm_enrolment_with_a_wrong_code_stores_nothing(services: Services) -> None:
    secret = totp.new_secret()
    with transaction(services.sessions) as db:
        account = make_account(db)
        right = _code(secret, NOW)
        wrong = f"{(int(right) + 1) % 1_000_000:06d}"
        assert (
            totp.confirm_enrolment(
                db,
                account_id=account.id,
                secret=secret,
                code=wrong,
                encryptor=services.encryptor,
                now=NOW,
            )
            is None
        )
        assert totp.credential_for(db, account_id=account.id) is None


def test_confirm_enrolment_stores_the_encrypted_seed_and_spends_the_code(
    services: Services,
) -> None:
    secret = totp.new_secret()
    code = _code(secret, NOW)
    with transaction(services.sessions) as db:
        account = make_account(db)
        account_id = account.id
        credential = totp.confirm_enrolment(
            db,
            account_id=account_id,
            secret=secret,
            code=code,
            encryptor=services.encryptor,
            now=NOW,
        )
        assert credential is not None
        credential_id = credential.id
        assert credential.last_used_step == totp.time_step(NOW)
        assert secret not in credential.secret_encrypted
    with transaction(services.sessions) as db:
        stored = totp.credential_for(db, account_id=account_id)
        assert stored is not None
        assert (
            totp.decrypt_secret(services.encryptor, stored.secret_encrypted, account_id=account_id)
            == secret
        )
        events = db.scalars(select(AuditEvent.event).where(AuditEvent.account_id == account_id))
        assert "mfa.enrolled" in list(events)
    # The confirming code cannot be used again to sign in.
    assert not _verify(services, credential_id, code, NOW)
    assert _verify(services, credential_id, _code(secret, NOW, 1), NOW)


def test_confirm_enrolment_refuses_a_second_authenticator(services: Services) -> None:
    account_id, _, _ = _enrolled(services)
    other = totp.new_secret()
    with transaction(services.sessions) as db, pytest.raises(totp.AlreadyEnrolled):
        totp.confirm_enrolment(
            db,
            account_id=account_id,
            secret=other,
            code=_code(other, NOW),
            encryptor=services.encryptor,
            now=NOW,
        )


def test_racing_enrolments_keep_one_authenticator_and_the_losers_transaction(
    database_url: str,
) -> None:
    """Two tabs confirm different seeds at once: one wins, the other gets AlreadyEnrolled,
    and the loser's other writes in the same transaction survive (savepoint)."""
    from idp.app import build_services
    from idp.settings import Settings

    base = build_services(Settings(database_url=database_url))
    with transaction(base.sessions) as db:
        account_id = make_account(db).id
    barrier = threading.Barrier(2)
    outcomes: list[str] = []
    lock = threading.Lock()

    def attempt(tag: str) -> None:
        secret = totp.new_secret()
        engine = make_engine(database_url)
        try:
            # Meet before opening a transaction: SQLite has one writer at a time (and may
            # take the lock at BEGIN), so a thread waiting here must not hold it.
            barrier.wait(timeout=30)
            with transaction(make_session_factory(engine)) as db:
                db.add(AuditEvent(event=f"test.before.{tag}", account_id=account_id))
                db.flush()
                try:
                    totp.confirm_enrolment(
                        db,
                        account_id=account_id,
                        secret=secret,
                        code=_code(secret, NOW),
                        encryptor=base.encryptor,
                        now=NOW,
                    )
                    outcome = "enrolled"
                except totp.AlreadyEnrolled:
                    outcome = "already"
                db.add(AuditEvent(event=f"test.after.{tag}", account_id=account_id))
            with lock:
                outcomes.append(outcome)
        except BaseException as exc:
            with lock:
                outcomes.append(f"error {exc!r}")
        finally:
            engine.dispose()

    threads = [threading.Thread(target=attempt, args=(tag,)) for tag in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)
    with transaction(base.sessions) as db:
        credentials = db.scalar(
            select(func.count())
            .select_from(TotpCredential)
            .where(TotpCredential.account_id == account_id)
        )
        before, after = (
            db.scalar(
                select(func.count())
                .select_from(AuditEvent)
                .where(AuditEvent.event.like(f"test.{when}.%"))
            )
            for when in ("before", "after")
        )
    base.engine.dispose()
    assert sorted(outcomes) == ["already", "enrolled"]
    assert credentials == 1
    assert (before, after) == (2, 2)


# --- support reset -------------------------------------------------------------------------


def test_reset_mfa_removes_the_authenticator_and_ends_sessions_and_tokens(
    services: Services,
) -> None:
    from idp.accounts import sessions

    account_id, _, _ = _enrolled(services)
    with transaction(services.sessions) as db:
        account = db.get_one(Account, account_id)
        grant = make_grant_with_refresh_token(db, account=account, now=NOW)
        _, cookie = sessions.start_session(
            db,
            account_id=account_id,
            auth_time=NOW,
            amr=["pwd", "otp", "mfa"],
            acr="https://refeds.org/profile/mfa",
            settings=services.settings,
            now=NOW,
        )
        # A sign-in half-way through: password given, code page pending.
        pending = LoginTransaction(
            id_hash=token_digest(new_token()),
            client_id=grant.client_id,
            params={},
            csrf_token=new_token(),
            account_id=account_id,
            stage="mfa",
            amr=["pwd"],
            expires_at=NOW + dt.timedelta(minutes=15),
        )
        db.add(pending)
        later = NOW + dt.timedelta(minutes=5)
        assert totp.reset_mfa(
            db, account=account, actor_id="support-1", reason="lost phone", now=later
        )
        grant_id, pending_id = grant.id, pending.id_hash
    with transaction(services.sessions) as db:
        assert totp.credential_for(db, account_id=account_id) is None
        assert (
            sessions.current_session(db, cookie_value=cookie, settings=services.settings, now=later)
            is None
        )
        live_sessions = db.scalar(
            select(func.count())
            .select_from(BrowserSession)
            .where(BrowserSession.account_id == account_id, BrowserSession.ended_at.is_(None))
        )
        assert live_sessions == 0
        assert db.get_one(Grant, grant_id).revoked_at == later
        assert db.get_one(LoginTransaction, pending_id).expires_at == later
        tokens = db.scalars(select(RefreshToken).where(RefreshToken.grant_id == grant_id)).all()
        assert tokens
        assert all(t.revoked_at == later for t in tokens)
        event = db.scalars(
            select(AuditEvent).where(
                AuditEvent.account_id == account_id, AuditEvent.event == "mfa.reset"
            )
        ).one()
        assert event.actor_id == "support-1"
        assert event.detail["reason"] == "lost phone"
        assert event.detail["removed"] is True
        assert event.detail["sessions_ended"] == 1
        assert event.detail["refresh_tokens_revoked"] == 1
        assert event.detail["sign_ins_expired"] == 1


def test_reset_mfa_without_an_authenticator_returns_false(services: Services) -> None:
    with transaction(services.sessions) as db:
        account = make_account(db)
        assert not totp.reset_mfa(db, account=account, actor_id=None, reason="check", now=NOW)


def test_reset_mfa_needs_a_reason(services: Services) -> None:
    account_id, _, _ = _enrolled(services)
    with transaction(services.sessions) as db:
        account = db.get_one(Account, account_id)
        with pytest.raises(ValueError, match="reason"):
            totp.reset_mfa(db, account=account, actor_id=None, reason="  ", now=NOW)
    with transaction(services.sessions) as db:
        assert totp.credential_for(db, account_id=account_id) is not None
