"""Ending everything an account holds: sessions, unfinished sign-ins, grants, refresh tokens.

STANDARDS (sessions): disabling an account or resetting its MFA ends its sessions and
refresh tokens (ASVS 7.4.2 server-side revocation). Access tokens are short-lived JWTs;
the protocol side refuses them at introspection and userinfo once their grant is revoked.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from idp.accounts.sessions import end_account_sessions
from idp.models import Grant, LoginTransaction, RefreshToken


def revoke_account_access(db: Session, *, account_id: str, now: dt.datetime) -> dict[str, int]:
    """End the account's sessions and unfinished sign-ins, and revoke its grants and
    refresh tokens; returns how many of each."""
    sessions = end_account_sessions(db, account_id=account_id, now=now)
    grant_ids = select(Grant.id).where(Grant.account_id == account_id).scalar_subquery()
    tokens = db.execute(
        update(RefreshToken)
        .where(RefreshToken.grant_id.in_(grant_ids), RefreshToken.revoked_at.is_(None))
        .values(revoked_at=now)
        .execution_options(synchronize_session=False)
    )
    grants = db.execute(
        update(Grant)
        .where(Grant.account_id == account_id, Grant.revoked_at.is_(None))
        .values(revoked_at=now)
        .execution_options(synchronize_session=False)
    )
    # A sign-in half-way through (password given, code pending) must start again, so
    # nobody carries a pre-reset password check into setting up a new authenticator.
    pending = db.execute(
        update(LoginTransaction)
        .where(
            LoginTransaction.account_id == account_id,
            LoginTransaction.consumed_at.is_(None),
            LoginTransaction.expires_at > now,
        )
        .values(expires_at=now)
        .execution_options(synchronize_session=False)
    )
    return {
        "sessions_ended": sessions,
        "sign_ins_expired": int(getattr(pending, "rowcount", 0) or 0),
        "grants_revoked": int(getattr(grants, "rowcount", 0) or 0),
        "refresh_tokens_revoked": int(getattr(tokens, "rowcount", 0) or 0),
    }
