"""The password POST on the event loop, with only the argon2 hash in a worker thread: on
PostgreSQL three round trips over `idp.async_db`, on SQLite the same reads and writes on
the loop's own connections (`idp.loop_sqlite`, the counters in the throttle's file),
where the threaded path (`signin._submit`) makes two hops to a worker thread around the
hash and sends its statements through SQLAlchemy.

1. the transaction with its client, and the account with whether it has an
   authenticator (`password_check.find_account`'s read), in one pipeline;
2. the failure budget's counters (the read `DatabaseThrottle.check` makes) and, for an
   address no account has as its own, the hashes of accounts known only by it as a
   shared legacy address;
3. after the hash, for the usual right password: one statement, the transaction moved on
   only if it is still at this stage and usable (a compare-and-set), with the audit event
   written only if it was (on SQLite the two in one transaction, begun only if the write
   lock is free). If it was not (a double click, the lock held), the worker thread
   answers.

No connection is held across the hash. What the loop decides before hashing depends only
on the form, the transaction and the failure budget, never on whether the address has an
account, so every address takes the same path and the same work until its verdict
(ASVS 6.3.8): a POST the loop does not take (another database, a refused form, a budget
that refuses or has failures to reset, the budget in Redis) goes to the threaded path
before anything is hashed, and that path answers it as it always has. After the hash,
anything but the usual right password (a wrong one to count, a refusal to explain, a hash
to upgrade) goes to a worker thread with what was verified (`signin._conclude_verified`),
which never hashes again.
"""

from __future__ import annotations

import datetime as dt
from typing import cast

from fastapi.responses import Response
from sqlalchemy import Dialect, Table, bindparam, update

from idp.accounts import audit
from idp.accounts.throttle_db import DatabaseThrottle, check_statement, verdict_of
from idp.app import Services
from idp.async_db import AsyncDatabase
from idp.db import driver_sql, driver_values
from idp.loop_sqlite import Busy, SqliteOnLoop, loop_databases
from idp.models import LoginTransaction
from idp.web import threads
from idp.web.pages import journey, transactions
from idp.web.pages.forms import BadForm
from idp.web.pages.limits import PASSWORD, throttle_for, throttle_subject
from idp.web.pages.password_check import (
    Attempt,
    Verified,
    account_of,
    account_statement,
    email_key,
    legacy_hashes_statement,
    verify,
)

#: The stage the password page serves.
HERE = frozenset({"password"})
#: The audit event of a correct password.
PASSWORD_OK = "signin.password_ok"  # noqa: S105 (an event's name)

#: What a correct password changes on its transaction (`journey.password_passed` and the
#: next stage).
_PASSED_COLUMNS = (
    "account_id",
    "amr",
    "auth_time",
    "entered_email",
    "pending_totp_encrypted",
    "error",
    "stage",
)
_TABLE = cast(Table, LoginTransaction.__table__)
#: The compare-and-set of a correct password with its audit event, built once: the
#: transaction moves on only if it is still at the password stage, neither completed nor
#: used nor expired, and the event is written for each row moved (so for none, if none).
#: (SQLite has no data-modifying WITH: there the two go in one transaction.)
_PASS = (
    update(_TABLE)
    .where(
        _TABLE.c.id_hash == bindparam("b_id_hash"),
        _TABLE.c.stage == bindparam("b_stage"),
        _TABLE.c.completed_at.is_(None),
        _TABLE.c.consumed_at.is_(None),
        _TABLE.c.expires_at > bindparam("b_now", type_=_TABLE.c.expires_at.type),
    )
    .values({name: bindparam(name) for name in _PASSED_COLUMNS})
    .returning(_TABLE.c.id_hash)
)
_PASSED = audit.insert_for_each(_PASS.cte("passed"))


async def submit(
    services: Services,
    *,
    tx: str,
    form: dict[str, str] | BadForm,
    ip: str | None,
    now: dt.datetime,
) -> Response | tuple[Attempt, Verified] | None:
    """The 303 onwards for the usual right password; the attempt and what its hash found
    for any other verified outcome (for `signin._conclude_verified`); None, with nothing
    read that matters and nothing hashed or written, for a POST the threaded path takes
    (the module's docstring)."""
    dialect = services.engine.dialect
    throttle = throttle_for(services)
    if isinstance(form, BadForm) or not isinstance(throttle, DatabaseThrottle):
        return None
    email = form.get("email", "").strip()
    password = form.get("password", "")
    load = transactions.load_statement(dialect, tx=tx, for_update=False, credential=False)
    key = email_key(email)
    if load is None or key is None or not password:
        return None
    databases = loop_databases(services, throttle.engine)
    if databases is None:
        return None
    database, counters_in = databases  # `counters_in`: SQLite's file of the counters
    try:
        found, accounts = await database.fetch_all(load, account_statement(dialect, key=key))
    except Busy:
        return None
    if not found:
        return None
    loaded = transactions.loaded_from_driver(found[0], now=now, credential=False)
    row = loaded.row
    assert row is not None
    if (
        loaded.problem is not None
        or transactions.redirect_for_stage(row, tx, here=HERE) is not None
        or not transactions.csrf_ok(row, form.get("csrf_token"))
    ):
        return None
    account, has_authenticator = account_of(accounts[0]) if accounts else (None, False)
    account_id = account.id if account else None
    subject = throttle_subject(services, account_id=account_id, email=email)
    keys, check = check_statement(dialect, kind=PASSWORD, account_id=subject, ip=ip)
    password_hash = account.password_hash if account else None
    legacy_read = (
        [] if password_hash is not None else [legacy_hashes_statement(dialect, email=email)]
    )
    try:
        if counters_in is None:  # PostgreSQL: one pipeline
            counters, *legacy = await database.fetch_all(check, *legacy_read)
        else:
            (counters,) = await counters_in.fetch_all(check)
            legacy = await database.fetch_all(*legacy_read)
    except Busy:
        return None
    verdict = verdict_of(keys, counters, now=now)
    if not verdict.allowed or verdict.resettable:
        return None  # a refusal, or counters to reset: the threaded path's, unhashed
    hashes = [h for (h,) in legacy[0]] if legacy else []
    verified = await threads.run(verify, password_hash, hashes, password)
    attempt = Attempt(email, password, account, has_authenticator, subject, row.client_id)
    if not attempt.moves_on(verified):
        return attempt, verified
    assert account is not None
    journey.password_passed(row, account_id=account.id, now=now)
    row.stage = journey.stage_after_password(
        row, has_authenticator=has_authenticator, settings=services.settings, now=now
    )
    event = audit.Pending(PASSWORD_OK, account_id=account.id, client_id=row.client_id, ip=ip)
    try:
        written = await _pass(database, dialect, row, event, now=now)
    except Busy:
        return attempt, verified
    if not written:
        # The journey changed meanwhile (a double click, another tab): the thread reads it
        # again, locked, and answers as the threaded path would (to the page of its stage).
        return attempt, verified
    event.written()
    return transactions.see_other(transactions.page_url(tx, transactions.STAGE_PATHS[row.stage]))


async def _pass(
    database: AsyncDatabase | SqliteOnLoop,
    dialect: Dialect,
    row: LoginTransaction,
    event: audit.Pending,
    *,
    now: dt.datetime,
) -> bool:
    """Whether `row` (the password passed on it) was moved on, with its audit event;
    `Busy` on SQLite if the write lock was held elsewhere (nothing written)."""
    values = driver_values(dialect, _TABLE, {name: getattr(row, name) for name in _PASSED_COLUMNS})
    conditions = {"b_id_hash": row.id_hash, "b_stage": "password", "b_now": now}
    if isinstance(database, AsyncDatabase):
        statement = (
            driver_sql(dialect, _PASSED)[0],
            {**values, **conditions, **event.params(dialect)},
        )
        (written,) = await database.fetch_all(statement)
        return bool(written)
    async with database.transaction() as transaction:
        passed = await transaction.fetch_one(
            driver_sql(dialect, _PASS)[0], {**values, **conditions}
        )
        if passed is not None:
            transaction.defer(*event.insert_statement(dialect))
    return passed is not None
