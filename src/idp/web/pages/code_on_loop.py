"""The usual security-code POST on the event loop, without a worker thread or an ORM
session: on PostgreSQL one `idp.async_db` transaction of three round trips, where the
threaded path (`mfa._submit`) sends eight statements through SQLAlchemy; on SQLite the
same statements in one `idp.loop_sqlite` transaction, which is begun only if the write
lock is free (else the threaded path waits its turn), with the counters read from the
throttle's own file.

1. BEGIN with the transaction's locked read, with its client and authenticator (the
   statement `guard_post` sends);
2. the code's failure-budget counters (the read `DatabaseThrottle.check` makes) with the
   single-use compare-and-set of the code's time step (`totp.use_step_statement`): the
   code is checked against the seed in between, in process;
3. the new browser session, the audit event and the completed transaction, with the
   COMMIT.

Only the successful sign-in of a journey that holds the password, for a first-party
client, from a browser with no session to replace, with the failure budget in the
database, is answered here. Anything else rolls back, so nothing is changed and no code
is spent, and returns None: the threaded path then does it all as before, and answers
every refusal, every message and every failure count itself. That includes a refusal by
the failure budget, which the counters read in step 2 show only after the code's step
was taken: the rollback gives it back.
"""

from __future__ import annotations

import datetime as dt

from fastapi.responses import Response

from idp.accounts import audit, sessions, totp
from idp.accounts.throttle_db import DatabaseThrottle, check_statement, verdict_of
from idp.app import Services
from idp.loop_sqlite import Busy, loop_databases
from idp.oauth.acr import AMR_PASSWORD
from idp.web.pages import journey, transactions
from idp.web.pages.forms import BadForm
from idp.web.pages.limits import CODE, throttle_for


class _Threaded(Exception):  # noqa: N818 (an outcome, not an error)
    """Not a POST the event loop answers: roll back and take the threaded path."""


async def submit(
    services: Services,
    *,
    tx: str,
    form: dict[str, str] | BadForm,
    cookie: str | None,
    ip: str | None,
    now: dt.datetime,
) -> Response | None:
    """The 303 to `/authorize/resume` with the new session's cookie, for the usual right
    code; None (nothing changed) for anything else (the module's docstring)."""
    dialect = services.engine.dialect
    if cookie or isinstance(form, BadForm):
        return None
    code = form.get("code", "")
    load = transactions.load_statement(dialect, tx=tx, for_update=True, credential=True)
    throttle = throttle_for(services)
    if (
        load is None
        or totp.normalise_code(code) is None
        or not isinstance(throttle, DatabaseThrottle)
    ):
        return None
    databases = loop_databases(services, throttle.engine)
    if databases is None:
        return None
    database, counters_in = databases  # `counters_in`: SQLite's file of the counters
    settings = services.settings
    try:
        async with database.transaction() as transaction:
            found = await transaction.fetch_one(*load)
            if found is None:
                raise _Threaded
            loaded = transactions.loaded_from_driver(found, now=now, credential=True)
            row, client, credential = loaded.row, loaded.client, loaded.credential
            assert row is not None
            if (
                loaded.problem is not None
                or transactions.redirect_for_stage(row, tx, here=transactions.CODE_STAGES)
                is not None
                or not transactions.csrf_ok(row, form.get("csrf_token"))
                or credential is None
                or row.account_id is None
                or AMR_PASSWORD not in row.amr  # a step-up: the password is the session's
                or client is None
                or journey.needs_consent(row, client)
            ):
                raise _Threaded
            step = totp.accepted_step(credential, code, encryptor=services.encryptor, now=now)
            if step is None:
                raise _Threaded
            keys, check = check_statement(dialect, kind=CODE, account_id=row.account_id, ip=ip)
            use_step = totp.use_step_statement(dialect, credential, step)
            if counters_in is not None:
                (counters,) = await counters_in.fetch_all(check)
                (spent,) = await transaction.fetch_all(use_step)
            else:
                counters, spent = await transaction.fetch_all(check, use_step)
            verdict = verdict_of(keys, counters, now=now)
            # A budget to refuse or to reset, or a code used already: the thread's to say.
            if not verdict.allowed or verdict.resettable or not spent:
                raise _Threaded
            journey.otp_passed(row)
            journey.mark_completed(row, now=now)
            assert row.auth_time is not None
            assert row.acr is not None
            values, cookie_value = sessions.new_session(
                account_id=row.account_id,
                auth_time=row.auth_time,
                amr=list(row.amr),
                acr=row.acr,
                settings=settings,
                now=now,
            )
            for statement in sessions.start_statements(dialect, values, now=now):
                transaction.defer(*statement)
            transaction.defer(*transactions.completed_statement(dialect, row))
            event = audit.Pending(journey.COMPLETED, **journey.completed_event(row, ip=ip))
            transaction.defer(*event.insert_statement(dialect))
    except (_Threaded, Busy):
        return None  # rolled back (or never begun): nothing changed
    event.written()  # logged once committed (a failed COMMIT's retry in the thread logs it)
    response = transactions.see_other(transactions.page_url(tx, transactions.RESUME_PATH))
    sessions.set_session_cookie(response, value=cookie_value, settings=settings)
    return response
