"""The one place every hosted page loads and checks its login transaction.

A page names its transaction by `tx`, a 256-bit random value from `/authorize`; only its
SHA-256 digest is stored (docs/login-transaction.md). A transaction is usable while it is
known, not expired and not consumed; a POST must also carry the transaction's CSRF token
(ASVS 3.5.1) and arrive at the page of the transaction's current stage. Anything else
ends in a page that says what happened and offers "Start again" (the client's original
authorization request), with nothing half-written.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, cast
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import RedirectResponse
from sqlalchemy import Dialect, Select, Table, bindparam, exists, inspect, select, update
from sqlalchemy.orm import Session, make_transient_to_detached
from sqlalchemy.orm.util import identity_key

from idp.app import Services
from idp.crypto import token_digest
from idp.db import driver_sql, driver_values, in_utc
from idp.loop_reads import NotReadAtOnce, loop_reads
from idp.models import (
    Client,
    LoginTransaction,
    TotpCredential,
    column_attributes,
    from_columns,
    utcnow,
)
from idp.oauth.transactions import TRANSACTION_KEYS, transaction_of
from idp.web.csrf import csrf_valid
from idp.web.pages.forms import BadForm

#: `tx` values we issue are 43 characters; longer input is not ours and is not hashed.
MAX_TX_LENGTH = 128

#: The page that serves each stage of the journey.
STAGE_PATHS: dict[str, str] = {
    "password": "/signin",
    "mfa_setup": "/signin/setup",
    "mfa_setup_optional": "/signin/setup",
    "mfa": "/signin/code",
    "consent": "/signin/consent",
}
RESUME_PATH = "/authorize/resume"
#: The stages the authenticator setup page and the security-code page serve.
SETUP_STAGES = frozenset({"mfa_setup", "mfa_setup_optional"})
CODE_STAGES = frozenset({"mfa"})

#: An account's confirmed authenticator, as `Opened.credential` carries it.
Authenticator = TotpCredential


class Problem(enum.Enum):
    """Why a transaction cannot be used (each has its own explanation page)."""

    UNKNOWN = "unknown"
    EXPIRED = "expired"
    USED = "used"


def services_and_tx(request: Request) -> tuple[Services, str]:
    """The app's services and the page's `tx` query parameter (the last one if repeated,
    as a `tx: str = ""` parameter read it).

    Page routes take these here rather than through FastAPI's dependency injection, which
    ran the synchronous `get_services` in a worker thread of its own (a second thread
    hand-off per page view) and validated `tx` on every request.
    """
    services: Services = request.app.state.services
    return services, request.query_params.get("tx", "")


def clock(request: Request) -> dt.datetime:
    """The current time; tests may install `services.extras["clock"]` to move it."""
    override = request.app.state.services.extras.get("clock")
    if callable(override):
        now: dt.datetime = override()
        return now
    return utcnow()


class ClientLike(Protocol):
    """What the pages use of a client: its names and whether it is first-party."""

    @property
    def name(self) -> str:
        """The client's registered name."""
        ...

    @property
    def service_name(self) -> str | None:
        """The service the client names in the page header, if any."""
        ...

    @property
    def first_party(self) -> bool:
        """First-party clients are not asked for consent."""
        ...


@dataclass(frozen=True)
class ClientInfo:
    """The client columns a page needs, read with its transaction in one statement."""

    name: str
    service_name: str | None
    first_party: bool


@dataclass(frozen=True)
class Opened:
    """A usable transaction with its client (None if the client was deleted meanwhile)
    and, when asked for, whether its account has an authenticator, or the authenticator."""

    row: LoginTransaction
    client: ClientInfo | None
    enrolled: bool | None = None
    credential: TotpCredential | None = None


@dataclass(frozen=True)
class Loaded:
    """What `load` read: the transaction (None if unknown), why it cannot be used (None
    if it can), and what `Opened` carries."""

    row: LoginTransaction | None
    problem: Problem | None
    client: ClientInfo | None = None
    enrolled: bool | None = None
    credential: TotpCredential | None = None

    def opened(self) -> Opened:
        """The `Opened` of a usable transaction."""
        assert self.row is not None
        return Opened(self.row, self.client, self.enrolled, self.credential)


_UNKNOWN = Loaded(None, Problem.UNKNOWN)


def load(
    db: Session,
    *,
    tx: str,
    now: dt.datetime,
    for_update: bool = False,
    enrolment: bool = False,
    credential: bool = False,
) -> Loaded:
    """The transaction named by `tx`, if it cannot be used why, and its client; with
    `enrolment` whether its account has an authenticator, with `credential` the
    authenticator itself. One statement.

    `for_update` locks the row (PostgreSQL), so two tabs posting at once are serialised.
    The statement is Core (the ORM's loading of two entities cost more CPU than the
    statement): the transaction is put in `db` as if the ORM had loaded it, so what the
    request changes on it is written (`posting`); the authenticator is a detached copy,
    which nothing writes back (its single use is a compare-and-set of its own).
    """
    if not tx or len(tx) > MAX_TX_LENGTH:
        return _UNKNOWN
    query = _load_query(enrolment, credential, for_update)
    found = db.connection().execute(query, {"id_hash": token_digest(tx)}).first()
    if found is None:
        return _UNKNOWN
    loaded = _loaded(found, now, enrolment=enrolment, credential=credential)
    assert loaded.row is not None
    row = _in_session(db, loaded.row)
    if row is loaded.row:
        return loaded
    return dataclasses.replace(loaded, row=row, problem=_problem(row, now))


def _loaded(found: Sequence[Any], now: dt.datetime, *, enrolment: bool, credential: bool) -> Loaded:
    """A row of `load`'s statement as `Loaded`, the objects in no session."""
    row = transaction_of(found)
    n = len(TRANSACTION_KEYS)
    name, service, first_party = found[n : n + 3]
    client = None if name is None else ClientInfo(name, service, bool(first_party))
    enrolled = bool(found[n + 3]) if enrolment else None
    authenticator: TotpCredential | None = None
    if credential and found[-len(_CREDENTIAL_KEYS)] is not None:
        values = found[-len(_CREDENTIAL_KEYS) :]
        authenticator = from_columns(
            TotpCredential, dict(zip(_CREDENTIAL_KEYS, values, strict=True))
        )
    return Loaded(row, _problem(row, now), client, enrolled, authenticator)


def load_statement(
    dialect: Dialect, *, tx: str, for_update: bool, credential: bool
) -> tuple[str, dict[str, Any]] | None:
    """`load`'s statement as PostgreSQL driver SQL and parameters, for a POST on the
    event loop: the security code's (`idp.web.pages.code_on_loop`: locked, with the
    authenticator) and the password's (`idp.web.pages.password_on_loop`: a plain read).
    None for a `tx` that cannot be ours. Its row goes to `loaded_from_driver`."""
    if not tx or len(tx) > MAX_TX_LENGTH:
        return None
    query = _load_query(enrolment=False, credential=credential, for_update=for_update)
    return driver_sql(dialect, query)[0], {"id_hash": token_digest(tx)}


def loaded_from_driver(found: Sequence[Any], *, now: dt.datetime, credential: bool) -> Loaded:
    """A row of `load_statement` as read by the driver (timestamps then in UTC, as a
    session reads them), the objects in no session: nothing changed on them is written
    but by a statement of the caller's (`completed_statement`, say)."""
    return _loaded(in_utc(found), now, enrolment=False, credential=credential)


def _in_session(db: Session, row: LoginTransaction) -> LoginTransaction:
    """`row` (just read) as a persistent object of `db`, whose changes the session
    tracks; the session's own copy if it holds one already (as the ORM's loading would
    return it)."""
    key = identity_key(LoginTransaction, (row.id_hash,))
    existing = db.identity_map.get(key)
    if isinstance(existing, LoginTransaction):
        return existing
    make_transient_to_detached(row)
    db.add(row)
    return row


def _problem(row: LoginTransaction, now: dt.datetime) -> Problem | None:
    """Why the known transaction `row` cannot be used now, or None if it can."""
    if row.consumed_at is not None:
        # The back button after success lands here: the code was already issued.
        return Problem.USED
    if now >= row.expires_at:
        return Problem.EXPIRED
    return None


async def usable_on_loop(
    services: Services, *, tx: str, here: Collection[str], now: dt.datetime, enrolment: bool
) -> Opened | None:
    """The transaction a page GET may show as it is, read on the event loop
    (`idp.loop_reads`) with its client and whether its account has an authenticator:
    only when it is usable, at a stage `here` serves, and has no message to clear.
    None for anything else (an unknown, expired or used transaction, another stage, a
    message, a read that cannot be made at once): the page's threaded path then reads
    again and answers as it always does."""
    if not tx or len(tx) > MAX_TX_LENGTH:
        return None
    try:
        found = await loop_reads(services).fetch_one(
            _LOOP_LOADS[enrolment], {"id_hash": token_digest(tx)}
        )
    except NotReadAtOnce:
        return None
    if found is None:
        return None
    row = transaction_of(found)
    if (
        _problem(row, now) is not None
        or redirect_for_stage(row, tx, here=here) is not None
        or row.error is not None
    ):
        return None
    n = len(TRANSACTION_KEYS)
    name, service, first_party = found[n : n + 3]
    client = None if name is None else ClientInfo(name, service, bool(first_party))
    return Opened(row, client, bool(found[n + 3]) if enrolment else None)


#: The statements `load` sends, built once: a statement object kept between requests
#: also keeps its compilation cache key, which would otherwise be computed every time.
_LOAD_QUERIES: dict[tuple[bool, bool, bool], Select[Any]] = {}
_TABLE = cast(Table, LoginTransaction.__table__)
_CREDENTIALS = cast(Table, TotpCredential.__table__)
#: The authenticator's attributes, in the order of its table's columns.
_CREDENTIAL_KEYS = column_attributes(TotpCredential)


def _load_query(enrolment: bool, credential: bool, for_update: bool) -> Select[Any]:
    key = (enrolment, credential, for_update)
    query = _LOAD_QUERIES.get(key)
    if query is None:
        query = _build_load(enrolment, credential)
        if for_update:
            query = query.with_for_update(of=_TABLE)
        _LOAD_QUERIES[key] = query
    return query


def _build_load(enrolment: bool, credential: bool = False) -> Select[Any]:
    """`load`'s statement: the transaction's columns, its client's, whether its account
    has an authenticator (when `enrolment`) and the authenticator's columns (when
    `credential`)."""
    clients = cast(Table, Client.__table__)
    columns: list[Any] = [*_TABLE.c, clients.c.name, clients.c.service_name, clients.c.first_party]
    if enrolment:
        # Its own FROM, even when the authenticator is joined below.
        enrolled = exists().where(_CREDENTIALS.c.account_id == _TABLE.c.account_id)
        columns.append(enrolled.correlate_except(_CREDENTIALS))
    # The client has no foreign key from the transaction: outer joins, locking only the
    # transaction's row (the authenticator's single use is its own compare-and-set).
    joined = _TABLE.outerjoin(clients, clients.c.client_id == _TABLE.c.client_id)
    if credential:
        columns.extend(_CREDENTIALS.c)
        joined = joined.outerjoin(_CREDENTIALS, _CREDENTIALS.c.account_id == _TABLE.c.account_id)
    return select(*columns).select_from(joined).where(_TABLE.c.id_hash == bindparam("id_hash"))


_LOOP_LOADS = {enrolment: _build_load(enrolment) for enrolment in (False, True)}


@contextmanager
def posting(services: Services) -> Iterator[Session]:
    """The writing session of a POST: committed when the block ends normally, with the
    login transactions it changed written by `save` (one Core UPDATE each) rather than by
    the ORM's flush at commit, whose unit of work cost more CPU than the statement.

    No autoflush: nothing is written before each read, only at the end.
    """
    with services.sessions.begin() as db, db.no_autoflush:
        yield db
        changed = [
            row
            for row in db.identity_map.values()
            if isinstance(row, LoginTransaction) and inspect(row).committed_state
        ]
        for row in changed:
            save(db, row)


#: `save`'s UPDATE: its SET clause comes from the parameters' column names.
_SAVE = update(_TABLE).where(_TABLE.c.id_hash == bindparam("b_id_hash"))


def save(db: Session, row: LoginTransaction) -> None:
    """Write the columns of `row` changed since it was read, now, and take the row out of
    the session (its state is then in the database; the ORM has nothing left to flush)."""
    state = inspect(row)
    values: dict[str, Any] = {key: state.dict.get(key) for key in state.committed_state}
    if values:
        values["b_id_hash"] = row.id_hash
        db.connection().execute(_SAVE, values)
    db.expunge(row)


#: What a journey finished by its security code changes on its transaction
#: (`journey.otp_passed`, `journey.mark_completed`), and the UPDATE that writes them.
_COMPLETED_COLUMNS = (
    "amr",
    "pending_totp_encrypted",
    "acr",
    "auth_time",
    "completed_at",
    "stage",
    "error",
)
_COMPLETED = _SAVE.values({name: bindparam(name) for name in _COMPLETED_COLUMNS})


def completed_statement(dialect: Dialect, row: LoginTransaction) -> tuple[str, dict[str, Any]]:
    """The UPDATE of a transaction just finished by its security code on the event loop
    (`idp.web.pages.code_on_loop`), as PostgreSQL driver SQL and parameters."""
    values = driver_values(
        dialect, _TABLE, {name: getattr(row, name) for name in _COMPLETED_COLUMNS}
    )
    return driver_sql(dialect, _COMPLETED)[0], {**values, "b_id_hash": row.id_hash}


def csrf_ok(row: LoginTransaction, submitted: str | None) -> bool:
    """Whether a POST carries this transaction's CSRF token (constant-time compare)."""
    return csrf_valid(row.csrf_token, submitted)


def service_name(client: ClientLike | None) -> str | None:
    """The name shown in the page header: the client's service name, else its name."""
    if client is None:
        return None
    return client.service_name or client.name


def restart_url(row: LoginTransaction | None) -> str | None:
    """The client's original authorization request, to start the journey again."""
    if row is None or not row.params:
        return None
    params = {k: str(v) for k, v in row.params.items() if v is not None}
    return f"/authorize?{urlencode(params)}"


def page_url(tx: str, path: str) -> str:
    """A hosted page (or the resume endpoint) of transaction `tx`."""
    return f"{path}?{urlencode({'tx': tx})}"


def see_other(url: str) -> RedirectResponse:
    """303 See Other: after every POST (RFC 9700 4.12), and between stages."""
    return RedirectResponse(url, status_code=303)


def redirect_for_stage(row: LoginTransaction, tx: str, *, here: Collection[str]) -> str | None:
    """Where this transaction belongs if not on a page serving `here`, else None.

    A completed transaction goes to `/authorize/resume`; one at another stage goes to that
    stage's page (e.g. the back button to the password page after the password step).
    """
    if row.completed_at is not None:
        return page_url(tx, RESUME_PATH)
    if row.stage not in here:
        return page_url(tx, STAGE_PATHS.get(row.stage, "/signin"))
    return None


def take_error(row: LoginTransaction) -> str | None:
    """The error key stored by the last POST, cleared so it shows once."""
    key, row.error = row.error, None
    return key


def guard_post(
    db: Session,
    *,
    tx: str,
    form: dict[str, str] | BadForm,
    here: Collection[str],
    now: dt.datetime,
    credential: bool = False,
) -> Opened | RedirectResponse:
    """The transaction a POST may act on (with its client and, with `credential`, its
    account's authenticator), or the 303 that explains why not.

    Every refusal redirects (303 after every POST) to a page that shows the reason: an
    unusable transaction's problem page, or this stage's page with a message stored on the
    transaction. Nothing else is written, so a refused POST leaves no half-done state.
    """
    loaded = load(db, tx=tx, now=now, for_update=True, credential=credential)
    row, problem = loaded.row, loaded.problem
    if row is None or problem is not None:
        # The GET explains; a value that cannot be ours is not echoed into the Location.
        return see_other(page_url(tx if len(tx) <= MAX_TX_LENGTH else "", "/signin"))
    elsewhere = redirect_for_stage(row, tx, here=here)
    if elsewhere is not None:
        return see_other(elsewhere)
    back = see_other(page_url(tx, STAGE_PATHS[row.stage]))
    if isinstance(form, BadForm):
        row.error = form.reason
        return back
    if not csrf_ok(row, form.get("csrf_token")):
        # ASVS 3.5.1: a missing or wrong token changes nothing but the message.
        row.error = "csrf"
        return back
    return loaded.opened()
