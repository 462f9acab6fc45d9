"""The protocol side of the login transaction (docs/login-transaction.md): create one
when `/authorize` needs the person, and claim a completed one exactly once."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any, cast

from sqlalchemy import Dialect, Table, bindparam, delete, insert, select, update
from sqlalchemy.orm import Session

from idp.accounts.sessions import MAX_COOKIE_LENGTH
from idp.crypto import new_token, token_digest
from idp.db import driver_sql, driver_values, in_utc
from idp.models import (
    Account,
    BrowserSession,
    LoginTransaction,
    column_attributes,
    from_columns,
)

#: Parameters never stored: refused anyway, and potentially large.
_DROPPED = frozenset({"request", "request_uri"})
#: Transaction ids we issue are 43 characters.
_MAX_TXID_LENGTH = 128


_TABLE = cast(Table, LoginTransaction.__table__)
#: The columns a new transaction is given (`new_transaction`); the others are NULL.
_NEW_KEYS = (
    "id_hash",
    "client_id",
    "params",
    "csrf_token",
    "account_id",
    "stage",
    "amr",
    "created_at",
    "expires_at",
)
#: `insert_transaction`'s INSERT, built once (and its cache key with it).
_INSERT = insert(_TABLE).values({name: bindparam(name) for name in _NEW_KEYS})
#: The attribute of each of the table's columns, in the table's order.
TRANSACTION_KEYS = column_attributes(LoginTransaction)


def transaction_of(values: Sequence[Any]) -> LoginTransaction:
    """The transaction whose columns, in the table's order, are `values` (a Core read),
    as an object in no session: nothing it is changed on is written unless it is put in
    one (`idp.web.pages.transactions.load` does)."""
    return from_columns(LoginTransaction, dict(zip(TRANSACTION_KEYS, values, strict=False)))


def new_transaction(
    *,
    client_id: str,
    params: Mapping[str, str],
    stage: str,
    account_id: str | None,
    now: dt.datetime,
    lifetime_seconds: int,
) -> tuple[str, dict[str, Any]]:
    """A new login transaction for the validated request: the `txid` for `/signin?tx=`
    (only its digest is stored) and the values of its row, for `insert_transaction` or
    `insert_statement`."""
    txid = new_token(32)
    return txid, {
        "id_hash": token_digest(txid),
        "client_id": client_id,
        "params": {k: v for k, v in params.items() if k not in _DROPPED},
        "csrf_token": new_token(32),
        "account_id": account_id,
        "stage": stage,
        "amr": [],
        "created_at": now,
        "expires_at": now + dt.timedelta(seconds=lifetime_seconds),
    }


def insert_transaction(db: Session, row: Mapping[str, Any]) -> None:
    """Store `row` (`new_transaction`'s)."""
    # A Core INSERT, sent now: nothing reads the row back in this request, and the ORM's
    # flush at commit cost more CPU than the statement.
    db.connection().execute(_INSERT, dict(row))


def insert_statement(dialect: Dialect, row: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """`insert_transaction`'s INSERT as PostgreSQL driver SQL and parameters, for
    `/authorize` on the event loop (`authorize.start_on_loop`)."""
    return driver_sql(dialect, _INSERT)[0], driver_values(dialect, _TABLE, row)


#: `find_transaction`'s read, built once.
_BY_ID_HASH = select(*_TABLE.c).where(_TABLE.c.id_hash == bindparam("id_hash"))


def find_transaction(db: Session, *, txid: str | None) -> LoginTransaction | None:
    """The transaction named by `txid`, if any, as read now (`transaction_of`): the
    resume only reads it, and claims it with `claim_transaction`. A Core read: the ORM's
    identity lookup and loading cost more CPU than the statement."""
    if not txid or len(txid) > _MAX_TXID_LENGTH:
        return None
    found = db.connection().execute(_BY_ID_HASH, {"id_hash": token_digest(txid)}).first()
    return None if found is None else transaction_of(found)


#: The compare-and-set of `claim_transaction`, built once (and its cache key with it):
#: the transaction, only if completed and not consumed yet, is consumed now.
_CLAIM = (
    update(_TABLE)
    .where(
        _TABLE.c.id_hash == bindparam("claimed_id_hash"),
        _TABLE.c.consumed_at.is_(None),
        _TABLE.c.completed_at.is_not(None),
    )
    .values(consumed_at=bindparam("claimed_at"))
)


def claim_transaction(db: Session, *, transaction: LoginTransaction, now: dt.datetime) -> bool:
    """Mark a completed transaction consumed; False when someone else already did
    (compare-and-set: a double submit or the back button cannot issue twice). `transaction`
    itself is left as it was read."""
    result = db.connection().execute(
        _CLAIM, {"claimed_id_hash": transaction.id_hash, "claimed_at": now}
    )
    return result.rowcount == 1


_SESSIONS = cast(Table, BrowserSession.__table__)
_ACCOUNTS = cast(Table, Account.__table__)
#: The resume's claim on the event loop (PostgreSQL's UPDATE ... FROM): `_CLAIM`, for an
#: unexpired transaction only, and only from a browser whose session cookie names a
#: session of the account that completed it; returning the transaction, that session and
#: whether its account is disabled.
_CLAIM_FROM_SESSION = _CLAIM.where(
    _TABLE.c.expires_at > bindparam("claimed_at"),
    _SESSIONS.c.id_hash == bindparam("session_id_hash"),
    _SESSIONS.c.account_id == _TABLE.c.account_id,
    _ACCOUNTS.c.id == _SESSIONS.c.account_id,
).returning(*_TABLE.c, *_SESSIONS.c, _ACCOUNTS.c.disabled_at)
_SESSION_KEYS = column_attributes(BrowserSession)


#: The same on SQLite, whose RETURNING may not name the joined tables: the read of what
#: `_CLAIM_FROM_SESSION` would claim, in the transaction that then claims it by its id
#: (`_CLAIM`), the write lock held from its BEGIN IMMEDIATE.
_TO_CLAIM_FROM_SESSION = select(*_TABLE.c, *_SESSIONS.c, _ACCOUNTS.c.disabled_at).where(
    _TABLE.c.id_hash == bindparam("claimed_id_hash"),
    _TABLE.c.consumed_at.is_(None),
    _TABLE.c.completed_at.is_not(None),
    _TABLE.c.expires_at > bindparam("claimed_at"),
    _SESSIONS.c.id_hash == bindparam("session_id_hash"),
    _SESSIONS.c.account_id == _TABLE.c.account_id,
    _ACCOUNTS.c.id == _SESSIONS.c.account_id,
)

Statement = tuple[str, dict[str, Any]]


def claim_from_session_query(
    dialect: Dialect, *, txid: str, cookie_value: str, now: dt.datetime
) -> tuple[Statement, Statement | None] | None:
    """The claim of the completed transaction `txid` by the browser whose session cookie
    is `cookie_value`, as driver SQL and parameters, for the resume on the event loop
    (`idp.oauth.authorize.resume_on_loop`); None for values that cannot be ours. Its row
    goes to `claimed_with_session`. No row means nothing was claimed: the transaction is
    unknown, unfinished, used, expired, or another browser's, and `find_transaction` with
    `claim_transaction` tell which.

    On PostgreSQL one statement claims and returns; on SQLite the first reads and the
    second, to send only once the first found the row, claims it."""
    if not txid or len(txid) > _MAX_TXID_LENGTH or len(cookie_value) > MAX_COOKIE_LENGTH:
        return None
    params = {
        "claimed_id_hash": token_digest(txid),
        "claimed_at": now,
        "session_id_hash": token_digest(cookie_value),
    }
    if dialect.name == "sqlite":
        claim = {k: params[k] for k in ("claimed_id_hash", "claimed_at")}
        return (
            (driver_sql(dialect, _TO_CLAIM_FROM_SESSION)[0], params),
            (driver_sql(dialect, _CLAIM)[0], claim),
        )
    return (driver_sql(dialect, _CLAIM_FROM_SESSION)[0], params), None


def claimed_with_session(
    row: Sequence[Any],
) -> tuple[LoginTransaction, BrowserSession, dt.datetime | None]:
    """A row of `claim_from_session_query` as read by the driver (timestamps in UTC): the
    claimed transaction, the browser's session and its account's `disabled_at`, the
    objects in no session."""
    utc = in_utc(row)
    n = len(TRANSACTION_KEYS)
    session = from_columns(BrowserSession, dict(zip(_SESSION_KEYS, utc[n:-1], strict=True)))
    return transaction_of(utc[:n]), session, utc[-1]


def purge_transactions(db: Session, *, now: dt.datetime) -> int:
    """Delete sign-in journeys that expired over a day ago (their pages already say
    "expired", and nothing can resume them); returns how many."""
    result = db.execute(
        delete(LoginTransaction)
        .where(LoginTransaction.expires_at < now - dt.timedelta(days=1))
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)
