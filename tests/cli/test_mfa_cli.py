"""`idp mfa reset` and `idp mfa unblock`, run as the real `idp` subprocess on real databases."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from idp.accounts import sessions, totp
from idp.accounts.throttle_db import DatabaseThrottle
from idp.accounts.throttle_redis import RedisThrottle
from idp.admin.users import create_account
from idp.app import Services
from idp.db import transaction
from idp.models import AuditEvent, BrowserSession, Grant, TotpCredential, utcnow
from idp.oauth.acr import ACR_MFA
from tests.accounts._identity import make_grant_with_refresh_token
from tests.accounts._throttle_harness import redis_or_skip, redis_url
from tests.cli.test_cli import assert_one_line_error, environment, ok_json, run_idp

EMAIL = "asha.patel@example.org"


def _enrolled_and_signed_in(services: Services) -> str:
    """An account with an authenticator, a live session and a grant; returns its id."""
    now = utcnow()
    with transaction(services.sessions) as db:
        account = create_account(db, email=EMAIL, password=None)
        db.flush()
        db.add(
            TotpCredential(
                account_id=account.id,
                secret_encrypted=totp.encrypt_secret(
                    services.encryptor, totp.new_secret(), account_id=account.id
                ),
            )
        )
        sessions.start_session(
            db,
            account_id=account.id,
            auth_time=now,
            amr=["pwd", "otp", "mfa"],
            acr=ACR_MFA,
            settings=services.settings,
            now=now,
        )
        make_grant_with_refresh_token(db, account=account, now=now)
        return account.id


def _fail(throttle: DatabaseThrottle | RedisThrottle, account_id: str, kind: str, n: int) -> None:
    now = utcnow()
    for _ in range(n):
        throttle.record_failure(kind=kind, account_id=account_id, ip="192.0.2.1", now=now)


def _locked(throttle: DatabaseThrottle | RedisThrottle, account_id: str, kind: str) -> bool:
    verdict = throttle.check(kind=kind, account_id=account_id, ip="198.51.100.1", now=utcnow())
    return verdict.locked


def test_mfa_reset_removes_the_authenticator_ends_sessions_and_clears_code_failures(
    database_url: str, services: Services
) -> None:
    account_id = _enrolled_and_signed_in(services)
    throttle = DatabaseThrottle.for_engine(services.engine)
    _fail(throttle, account_id, "code", 100)
    _fail(throttle, account_id, "password", 100)
    assert _locked(throttle, account_id, "code")
    env = environment(database_url)

    result = ok_json(
        run_idp(
            "mfa", "reset", "--email", EMAIL.upper(), "--reason", "lost phone", "--json", env=env
        )
    )
    assert result == {"id": account_id, "email": EMAIL, "authenticator_removed": True}
    with transaction(services.sessions) as db:
        assert totp.credential_for(db, account_id=account_id) is None
        live = db.scalar(
            select(func.count())
            .select_from(BrowserSession)
            .where(BrowserSession.account_id == account_id, BrowserSession.ended_at.is_(None))
        )
        assert live == 0
        grants = db.scalars(select(Grant).where(Grant.account_id == account_id)).all()
        assert grants
        assert all(g.revoked_at is not None for g in grants)
        event = db.scalars(
            select(AuditEvent).where(
                AuditEvent.account_id == account_id, AuditEvent.event == "mfa.reset"
            )
        ).one()
        assert event.detail["reason"] == "lost phone"
    # The new authenticator starts with a clean code budget; the password one is untouched.
    assert not _locked(throttle, account_id, "code")
    assert _locked(throttle, account_id, "password")

    again = run_idp("mfa", "reset", "--email", EMAIL, "--reason", "double check", env=env)
    assert again.returncode == 0, again.stderr
    assert "had no authenticator" in again.stdout
    throttle.dispose()


def test_mfa_reset_refusals_are_one_line(database_url: str, services: Services) -> None:
    account_id = _enrolled_and_signed_in(services)
    env = environment(database_url)
    unknown = run_idp("mfa", "reset", "--email", "nobody@example.org", "--reason", "x", env=env)
    assert "no account has the email address" in assert_one_line_error(unknown, 1)
    blank = run_idp("mfa", "reset", "--email", EMAIL, "--reason", "   ", env=env)
    assert "reason is required" in assert_one_line_error(blank, 1)
    missing = run_idp("mfa", "reset", "--email", EMAIL, env=env)
    assert "--reason" in assert_one_line_error(missing, 2)
    with transaction(services.sessions) as db:
        # Nothing was removed by the refused commands.
        assert totp.credential_for(db, account_id=account_id) is not None


def test_mfa_unblock_clears_both_budgets_and_is_audited(
    database_url: str, services: Services
) -> None:
    account_id = _enrolled_and_signed_in(services)
    throttle = DatabaseThrottle.for_engine(services.engine)
    _fail(throttle, account_id, "code", 100)
    _fail(throttle, account_id, "password", 100)
    env = environment(database_url)
    blank = run_idp("mfa", "unblock", "--email", EMAIL, "--reason", " ", env=env)
    assert "--reason" in assert_one_line_error(blank, 1)
    assert _locked(throttle, account_id, "password")

    result = ok_json(
        run_idp("mfa", "unblock", "--email", EMAIL, "--reason", "ticket 42", "--json", env=env)
    )
    assert result == {"id": account_id, "email": EMAIL, "unblocked": True}
    assert not _locked(throttle, account_id, "password")
    assert not _locked(throttle, account_id, "code")
    with transaction(services.sessions) as db:
        reasons = db.scalars(
            select(AuditEvent.detail).where(
                AuditEvent.account_id == account_id, AuditEvent.event == "throttle.reset"
            )
        ).all()
        assert [r["reason"] for r in reasons] == ["ticket 42"]
        # Unblocking is not an authenticator reset.
        assert totp.credential_for(db, account_id=account_id) is not None
    throttle.dispose()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_mfa_unblock_clears_redis_budgets_when_redis_is_configured(
    database_url: str, services: Services
) -> None:
    client = redis_or_skip()
    account_id = _enrolled_and_signed_in(services)
    throttle = RedisThrottle.from_url(redis_url())
    try:
        _fail(throttle, account_id, "password", 100)
        assert _locked(throttle, account_id, "password")
        env = environment(database_url, IDP_REDIS_URL=redis_url())
        ok_json(run_idp("mfa", "unblock", "--email", EMAIL, "--reason", "t", "--json", env=env))
        assert not _locked(throttle, account_id, "password")
        assert list(client.scan_iter(f"idp:throttle:*{account_id}*")) == []
    finally:
        doomed = list(client.scan_iter(f"idp:throttle:*{account_id}*"))
        if doomed:
            client.delete(*doomed)
        throttle.dispose()
        client.close()
