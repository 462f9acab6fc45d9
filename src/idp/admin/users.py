"""Account administration shared by the CLI and the admin pages: create, find, list,
disable, change email, set password.

Every function takes the caller's `Session` as `db`, flushes so that constraint errors
surface here, and never commits: the caller owns the transaction. Each change writes an
audit event (ASVS 16.3.1), which never holds a password or its hash.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from idp.accounts.audit import record
from idp.accounts.emails import EmailAddress, InvalidEmail, parse_email
from idp.accounts.passwords import check_password_policy, hash_password
from idp.admin.orgs import clean_org_name, get_or_create_org
from idp.models import (
    Account,
    BrowserSession,
    GlobalRole,
    Grant,
    LoginTransaction,
    Membership,
    Organisation,
    OrgRole,
    RefreshToken,
    utcnow,
)

MAX_NAME = 200
MAX_LIST_LIMIT = 1000


class EmailTaken(Exception):  # noqa: N818 (the name callers use)
    """The address (in any case or Unicode form) already belongs to another account."""

    def __init__(self, email: str) -> None:
        super().__init__(f"the email address {email} is already used by another account")
        self.email = email


class AccountNotFound(LookupError):  # noqa: N818 (the name callers use)
    """No account has the given id or email address."""


class InvalidName(ValueError):  # noqa: N818 (reads as the refusal it is)
    """A display name that cannot be stored."""


def _clean_name(name: str | None) -> str | None:
    if name is None:
        return None
    cleaned = name.strip()
    if len(cleaned) > MAX_NAME:
        raise InvalidName(f"Name is too long (at most {MAX_NAME} characters).")
    return cleaned or None


def _key_in_use(db: Session, *, key: str, except_id: str | None = None) -> bool:
    query = select(Account.id).where(Account.email_key == key)
    if except_id is not None:
        query = query.where(Account.id != except_id)
    return db.scalar(query.limit(1)) is not None


def _flush_unique_email(db: Session, address: EmailAddress, *, add: Account | None) -> None:
    """Flush inside a SAVEPOINT; the unique index's refusal becomes `EmailTaken`.

    The look-up before this cannot see a concurrent transaction's uncommitted insert;
    the index (uq_accounts_email_key) is what guarantees uniqueness, and the savepoint
    keeps the caller's transaction usable after it refuses. Callers flush their other
    pending changes before making this one, so only ours are inside the savepoint.
    """
    try:
        with db.begin_nested():
            if add is not None:
                db.add(add)
            db.flush()
    except IntegrityError as exc:
        if add is not None and add in db:
            db.expunge(add)
        if "email_key" not in str(exc.orig):
            raise  # another constraint refused: not ours to explain
        raise EmailTaken(address.display) from exc


def create_account(
    db: Session,
    *,
    email: str,
    password: str | None,
    name: str | None = None,
    org: str | None = None,
    org_role: OrgRole = OrgRole.MEMBER,
    global_role: GlobalRole | None = None,
    actor_id: str | None = None,
) -> Account:
    """Create an account with a unique email address (and join `org`, created if new).

    Raises `InvalidEmail`, `PasswordRejected` (with its reason) or `EmailTaken`.
    A `password` of None makes an account that cannot sign in with a password yet.
    """
    address = parse_email(email)
    cleaned_name = _clean_name(name)
    if org is not None:
        clean_org_name(org)  # refuse a bad name before anything is written
    password_hash = None
    if password is not None:
        check_password_policy(password, email=address.display)
    if _key_in_use(db, key=address.key):
        raise EmailTaken(address.display)
    if password is not None:
        # Hashed only once the address is known to be free: argon2 is the slow part.
        password_hash = hash_password(password)
    account = Account(
        email=address.display,
        email_key=address.key,
        email_verified=False,
        name=cleaned_name,
        password_hash=password_hash,
        global_role=global_role,
    )
    db.flush()
    _flush_unique_email(db, address, add=account)
    organisation = None
    if org is not None:
        organisation = get_or_create_org(db, name=org)
        account.memberships.append(Membership(organisation=organisation, role=org_role))
        db.flush()
    record(
        db,
        "account.created",
        account_id=account.id,
        actor_id=actor_id,
        email=address.display,
        org=organisation.name if organisation else None,
        org_role=org_role.value if organisation else None,
        global_role=global_role.value if global_role else None,
        with_password=password is not None,
    )
    return account


def find_by_email(db: Session, *, email: str) -> Account | None:
    """The account whose address matches `email` in any case or Unicode form, or None."""
    try:
        key = parse_email(email).key
    except InvalidEmail:
        return None
    return db.scalar(select(Account).where(Account.email_key == key))


def get_account(db: Session, *, account_id: str) -> Account | None:
    """The account with this id (OIDC `sub`), or None."""
    return db.get(Account, account_id)


def require_account(db: Session, *, account_id: str) -> Account:
    """The account with this id, or `AccountNotFound`."""
    account = get_account(db, account_id=account_id)
    if account is None:
        raise AccountNotFound(f"no account has the id {account_id!r}")
    return account


def list_accounts(
    db: Session, *, org: str | None = None, limit: int = 100, offset: int = 0
) -> list[Account]:
    """Accounts oldest first, optionally only members of the organisation named `org`."""
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_LIST_LIMIT}")
    if offset < 0:
        raise ValueError("offset must not be negative")
    query = select(Account).options(
        selectinload(Account.memberships).selectinload(Membership.organisation)
    )
    if org is not None:
        query = (
            query.join(Membership, Membership.account_id == Account.id)
            .join(Organisation, Organisation.id == Membership.organisation_id)
            .where(Organisation.name == org.strip())
        )
    query = query.order_by(Account.created_at, Account.id).limit(limit).offset(offset)
    return list(db.scalars(query))


def _rowcount(result: Any) -> int:
    return int(cast(CursorResult[Any], result).rowcount)


def disable_account(
    db: Session,
    *,
    account: Account,
    actor_id: str | None = None,
    now: dt.datetime | None = None,
) -> None:
    """Stop the account signing in, and end what it already holds.

    NIST 800-63B / ASVS 7.4.2: disabling an account ends its sessions; its grants and
    refresh tokens are revoked so no client can keep acting for it, and its unfinished
    sign-ins expire. Access tokens are self-contained JWTs: the protocol side checks the
    grant and `disabled_at` where they are used.
    """
    now = now or utcnow()
    if account.disabled_at is None:
        account.disabled_at = now
    sessions = db.execute(
        update(BrowserSession)
        .where(BrowserSession.account_id == account.id, BrowserSession.ended_at.is_(None))
        .values(ended_at=now)
    )
    grant_ids = select(Grant.id).where(Grant.account_id == account.id)
    tokens = db.execute(
        update(RefreshToken)
        .where(RefreshToken.grant_id.in_(grant_ids), RefreshToken.revoked_at.is_(None))
        .values(revoked_at=now)
        .execution_options(synchronize_session="fetch")
    )
    grants = db.execute(
        update(Grant)
        .where(Grant.account_id == account.id, Grant.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    # A sign-in half-way through must not finish for a disabled account either.
    pending = db.execute(
        update(LoginTransaction)
        .where(
            LoginTransaction.account_id == account.id,
            LoginTransaction.consumed_at.is_(None),
            LoginTransaction.expires_at > now,
        )
        .values(expires_at=now)
    )
    db.flush()
    record(
        db,
        "account.disabled",
        account_id=account.id,
        actor_id=actor_id,
        sessions_ended=_rowcount(sessions),
        grants_revoked=_rowcount(grants),
        refresh_tokens_revoked=_rowcount(tokens),
        login_transactions_ended=_rowcount(pending),
    )


def enable_account(db: Session, *, account: Account, actor_id: str | None = None) -> None:
    """Let a disabled account sign in again (its old sessions and tokens stay ended)."""
    if account.disabled_at is None:
        return
    account.disabled_at = None
    db.flush()
    record(db, "account.enabled", account_id=account.id, actor_id=actor_id)


def change_email(
    db: Session, *, account: Account, new_email: str, actor_id: str | None = None
) -> None:
    """Give the account a new address, unique in every case and Unicode form.

    The new address is unverified. An imported account that shared its address
    (`legacy_email`) gets one of its own and loses the shared one.
    """
    address = parse_email(new_email)
    if _key_in_use(db, key=address.key, except_id=account.id):
        raise EmailTaken(address.display)
    db.flush()
    before = (account.email, account.email_key, account.legacy_email, account.email_verified)
    old_email = account.email
    same_mailbox = account.email_key == address.key
    account.email = address.display
    account.email_key = address.key
    account.legacy_email = None
    if not same_mailbox:
        account.email_verified = False
    try:
        _flush_unique_email(db, address, add=None)
    except EmailTaken:
        # Put the old values back so the caller's next flush does not retry the change.
        (account.email, account.email_key, account.legacy_email, account.email_verified) = before
        raise
    record(
        db,
        "account.email_changed",
        account_id=account.id,
        actor_id=actor_id,
        old_email=old_email,
        new_email=address.display,
    )


def set_password(
    db: Session, *, account: Account, password: str, actor_id: str | None = None
) -> None:
    """Set the account's password after the policy accepts it (`PasswordRejected` if not)."""
    check_password_policy(password, email=account.email)
    account.password_hash = hash_password(password)
    db.flush()
    record(db, "account.password_set", account_id=account.id, actor_id=actor_id)
