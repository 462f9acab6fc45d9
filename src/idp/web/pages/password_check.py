"""The password page's reads and its one argon2 verification, shared by the threaded POST
(`idp.web.pages.signin`) and the POST on the event loop (`idp.web.pages.password_on_loop`).

Every attempt costs the same argon2 work whatever the address (ASVS 6.3.8), and is
hashed exactly once, on either path: `verify` is the only place a password attempt meets
a hash.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import (
    Dialect,
    Integer,
    Select,
    String,
    Table,
    bindparam,
    exists,
    func,
    select,
    update,
)
from sqlalchemy.orm import Session

from idp.accounts.emails import InvalidEmail, parse_email
from idp.accounts.passwords import hash_password, needs_rehash, verify_dummy, verify_password
from idp.db import driver_sql, in_utc
from idp.models import Account, TotpCredential, column_attributes, from_columns

#: RFC 5321 4.5.3.1.3: no longer address can be delivered to, so none can be an account.
MAX_EMAIL_LENGTH = 320
#: Accounts sharing one legacy address are few; this bounds the hashing work regardless.
MAX_LEGACY_CANDIDATES = 5


class Verified(enum.Enum):
    """What an attempt's argon2 work found."""

    #: The account's own password.
    RIGHT = "right"
    #: Not the account's password, or no account has this address (the same work).
    WRONG = "wrong"
    #: The password of an account that only has a shared legacy address.
    LEGACY = "legacy"


def verify(password_hash: str | None, legacy_hashes: Sequence[str], password: str) -> Verified:
    """Check `password` against the account's hash; for an address with no account (or
    an account with no password, `password_hash` None) against the hashes of the
    accounts that only have it as a shared legacy address (`legacy_hashes_statement`),
    then the dummy hash, so an unknown address costs a real check's time (ASVS 6.3.8)."""
    if password_hash is not None:
        return Verified.RIGHT if verify_password(password_hash, password) else Verified.WRONG
    if any(verify_password(h, password) for h in legacy_hashes if h):
        # Such accounts cannot sign in until given an address of their own; saying so only
        # after a correct password keeps their existence from anyone who does not know it.
        return Verified.LEGACY
    verify_dummy(password)
    return Verified.WRONG


@dataclass(frozen=True)
class Attempt:
    """One email-and-password attempt, as read before its verification: the account
    found for the address (None if none), whether it has an authenticator, whose failure
    budget it spends (`limits.throttle_subject`) and the client it was for."""

    email: str
    password: str = field(repr=False)
    account: Account | None
    has_authenticator: bool
    subject: str
    client_id: str

    @property
    def password_hash(self) -> str | None:
        """The account's hash, None for an address no account (or no password) has."""
        return self.account.password_hash if self.account else None

    def moves_on(self, verified: Verified) -> bool:
        """Whether `verified` simply moves the journey on: the account's own password,
        the account neither switched off nor without an address of its own, its hash
        current. Anything else is `signin._conclude`'s to answer."""
        account = self.account
        return (
            verified is Verified.RIGHT
            and account is not None
            and account.password_hash is not None
            and not account.disabled
            and account.email is not None
            and not needs_rehash(account.password_hash)
        )


def email_key(email: str) -> str | None:
    """The key an account with address `email` is found by, or None if no account can
    have it (too long to deliver to, or not an address)."""
    if len(email) > MAX_EMAIL_LENGTH:
        return None
    try:
        return parse_email(email).key
    except InvalidEmail:
        return None


_ACCOUNTS = cast(Table, Account.__table__)
_CREDENTIALS = cast(Table, TotpCredential.__table__)
_ACCOUNT_KEYS = column_attributes(Account)
#: The account with an address key, and whether it has an authenticator: one statement,
#: Core (the ORM's loading of the row cost more CPU than the statement). Built once, so
#: its compilation cache key is too.
_ACCOUNT_BY_EMAIL_KEY = select(
    *_ACCOUNTS.c, exists().where(_CREDENTIALS.c.account_id == _ACCOUNTS.c.id)
).where(_ACCOUNTS.c.email_key == bindparam("email_key"))


def find_account(db: Session, *, email: str) -> tuple[Account | None, bool]:
    """The account whose address matches `email` in any case or Unicode form (as
    `idp.admin.users.find_by_email`), in no session, and whether it has an
    authenticator."""
    key = email_key(email)
    if key is None:
        return None, False
    found = db.connection().execute(_ACCOUNT_BY_EMAIL_KEY, {"email_key": key}).first()
    return (None, False) if found is None else account_of(found)


def account_statement(dialect: Dialect, *, key: str) -> tuple[str, dict[str, Any]]:
    """`find_account`'s read as PostgreSQL driver SQL and parameters, for the POST on
    the event loop; its row goes to `account_of`."""
    return driver_sql(dialect, _ACCOUNT_BY_EMAIL_KEY)[0], {"email_key": key}


def account_of(found: Sequence[Any]) -> tuple[Account, bool]:
    """A row of `find_account`'s statement: the account (in no session) and whether it
    has an authenticator."""
    values = in_utc(found)
    return from_columns(Account, dict(zip(_ACCOUNT_KEYS, values[:-1], strict=True))), bool(
        values[-1]
    )


#: The password hashes of accounts known only by a shared legacy address.
_LEGACY_HASHES: Select[Any] = (
    select(_ACCOUNTS.c.password_hash)
    .where(
        _ACCOUNTS.c.email_key.is_(None),
        _ACCOUNTS.c.password_hash.is_not(None),
        func.lower(_ACCOUNTS.c.legacy_email) == bindparam("email", type_=String()),
    )
    .limit(bindparam("limit", type_=Integer()))
)


def legacy_hashes(db: Session, *, email: str) -> list[str]:
    """The hashes `verify` tries for an address no account has as its own."""
    return list(db.connection().scalars(_LEGACY_HASHES, _legacy_params(email)))


def legacy_hashes_statement(dialect: Dialect, *, email: str) -> tuple[str, dict[str, Any]]:
    """`legacy_hashes`'s read as PostgreSQL driver SQL and parameters."""
    return driver_sql(dialect, _LEGACY_HASHES)[0], _legacy_params(email)


def _legacy_params(email: str) -> dict[str, Any]:
    return {"email": email.lower(), "limit": MAX_LEGACY_CANDIDATES}


#: The upgrade of an older hash: only if the account's hash is still the one verified, so
#: a password changed meanwhile is never put back.
_REHASH = (
    update(_ACCOUNTS)
    .where(_ACCOUNTS.c.id == bindparam("b_id"), _ACCOUNTS.c.password_hash == bindparam("b_old"))
    .values(password_hash=bindparam("password_hash"))
)


def rehash(db: Session, account: Account, password: str) -> None:
    """Store a hash of `password` with the current parameters (OWASP password storage:
    older hashes are upgraded at the next successful sign-in)."""
    db.connection().execute(
        _REHASH,
        {
            "b_id": account.id,
            "b_old": account.password_hash,
            "password_hash": hash_password(password),
        },
    )
