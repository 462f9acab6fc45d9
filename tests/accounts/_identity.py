"""Helpers for the identity-domain tests: accounts, clients and grants in a real database."""

from __future__ import annotations

import datetime as dt
import secrets

from sqlalchemy.orm import Session

from idp.crypto import new_token, token_digest
from idp.models import Account, Client, Grant, RefreshToken

NOW = dt.datetime(2026, 11, 29, 12, 0, 0, tzinfo=dt.UTC)


def make_account(db: Session, *, email: str | None = None) -> Account:
    """A new account through the admin service (unique email each call)."""
    from idp.admin.users import create_account

    address = email or f"person-{secrets.token_hex(4)}@example.org"
    # No password: these tests never sign in with one, and argon2 would only slow them.
    account = create_account(db, email=address, password=None)
    db.flush()
    return account


def make_grant_with_refresh_token(db: Session, *, account: Account, now: dt.datetime) -> Grant:
    """A client, a grant for `account` and one live refresh token of it."""
    client = Client(
        client_id=f"client-{secrets.token_hex(4)}",
        name="PharmOutcomes",
        redirect_uris=["https://app.example/cb"],
        grant_types=["authorization_code", "refresh_token"],
    )
    db.add(client)
    grant = Grant(
        client_id=client.client_id,
        account_id=account.id,
        scope="openid",
        auth_time=now,
        acr="https://refeds.org/profile/mfa",
        amr=["pwd", "otp", "mfa"],
        expires_at=now + dt.timedelta(days=7),
    )
    db.add(grant)
    db.flush()
    db.add(
        RefreshToken(
            token_hash=token_digest(new_token()),
            grant_id=grant.id,
            client_id=client.client_id,
            scope="openid",
            expires_at=now + dt.timedelta(days=1),
        )
    )
    db.flush()
    return grant
