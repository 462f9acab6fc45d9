"""Persistence of the token issuer: grants, codes, refresh tokens, revocations.

Keyword-only repository functions over the models in `idp.models.grant`. Only SHA-256
digests of codes and refresh tokens are stored. Single use is enforced by compare-and-set
updates, so two processes racing on one code or refresh token cannot both win.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import (
    Connection,
    Dialect,
    Engine,
    Table,
    bindparam,
    delete,
    exists,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.sql import ClauseElement

from idp.accounts import audit
from idp.crypto import token_digest
from idp.db import driver_sql, driver_values, in_utc, libpq_dialect
from idp.models import (
    Account,
    AuthorizationCode,
    Grant,
    RefreshToken,
    RevokedAccessToken,
    UsedClientAssertion,
    new_id,
)
from idp.oauth.models import Authentication, RedeemedCode, Subject

if TYPE_CHECKING:
    from idp.loop_sqlite import LoopTransaction

#: The INSERTs of a new grant and its code, built once (and their cache keys with them):
#: Core statements sent at once on the session's connection, since nothing reads these
#: rows back in the request and the ORM's unit of work cost more CPU than the statements
#: (sign-in profile). Every column is a named parameter, so the same statements compile
#: to driver SQL for the resume on the event loop (`issued_code_inserts`).
_GRANTS = cast(Table, Grant.__table__)
_CODES = cast(Table, AuthorizationCode.__table__)
_INSERT_GRANT = insert(_GRANTS).values(
    {name: bindparam(name) for name in _GRANTS.columns.keys()}  # noqa: SIM118
)
_INSERT_CODE = insert(_CODES).values(
    {name: bindparam(name) for name in _CODES.columns.keys()}  # noqa: SIM118
)


def grant_row(
    *,
    client_id: str,
    authentication: Authentication,
    scope: str,
    now: dt.datetime,
    absolute_seconds: int,
) -> dict[str, Any]:
    """The values of a new grant (token family) for a person's authorisation of a client.
    Its refresh tokens stop working `absolute_seconds` after sign-in at the latest."""
    return {
        "id": new_id(),
        "client_id": client_id,
        "account_id": authentication.account_id,
        "scope": scope,
        "auth_time": authentication.auth_time,
        "acr": authentication.acr,
        "amr": list(authentication.amr),
        "sid": authentication.sid,
        "created_at": now,
        "expires_at": authentication.auth_time + dt.timedelta(seconds=absolute_seconds),
        "revoked_at": None,
    }


def code_row(
    *,
    code: str,
    grant: Mapping[str, Any],
    redirect_uri: str,
    nonce: str | None,
    code_challenge: str,
    code_challenge_method: str,
    now: dt.datetime,
    lifetime_seconds: int,
) -> dict[str, Any]:
    """The values of an authorization code of `grant` (a `grant_row`): its digest, bound
    to its client and redirect URI."""
    return {
        "code_hash": token_digest(code),
        "grant_id": grant["id"],
        "client_id": grant["client_id"],
        "redirect_uri": redirect_uri,
        "scope": grant["scope"],
        "nonce": nonce,
        "code_challenge": code_challenge,
        "code_challenge_method": code_challenge_method,
        "expires_at": now + dt.timedelta(seconds=lifetime_seconds),
        "redeemed_at": None,
    }


def insert_issued_code(db: Session, grant: Mapping[str, Any], code: Mapping[str, Any]) -> None:
    """Store a new grant and its code (`grant_row`, `code_row`), now."""
    connection = db.connection()
    connection.execute(_INSERT_GRANT, dict(grant))
    connection.execute(_INSERT_CODE, dict(code))


def issued_code_inserts(
    dialect: Dialect, grant: Mapping[str, Any], code: Mapping[str, Any]
) -> list[tuple[str, dict[str, Any]]]:
    """`insert_issued_code`'s statements as PostgreSQL driver SQL and parameters, for the
    resume on the event loop (`idp.async_db`)."""
    return [
        (driver_sql(dialect, _INSERT_GRANT)[0], driver_values(dialect, _GRANTS, grant)),
        (driver_sql(dialect, _INSERT_CODE)[0], driver_values(dialect, _CODES, code)),
    ]


class CodeReusedError(Exception):
    """A code was presented again after its first redemption."""


def redeem_code(db: Session, *, code: str, client_id: str, now: dt.datetime) -> RedeemedCode | None:
    """Mark a code redeemed and return it with its grant's subject; None when unknown,
    another client's, or expired. Raises `CodeReusedError` (after revoking its grant) on a
    second redemption (RFC 6749 4.1.2, RFC 9700 4.2.4: revoke every token issued from
    that code)."""
    digest = token_digest(code)
    params = {"b_code_hash": digest, "b_client_id": client_id, "b_now": now}
    connection = db.connection()
    # The hot path: claim the code and read it with its grant and account together, in
    # one statement on PostgreSQL (UPDATE ... FROM ... RETURNING); SQLite's RETURNING may
    # not name the joined tables, so there the grant is a second (in-process) statement.
    found: Sequence[Any] | None
    if connection.dialect.name == "sqlite":
        found = connection.execute(_REDEEM_CODE, params).one_or_none()
        if found is not None:
            found = (*found, *connection.execute(_CODE_GRANT, {"b_grant_id": found[0]}).one())
    else:
        found = connection.execute(_REDEEM_CODE_WITH_GRANT, params).one_or_none()
    if found is None:
        used = db.get(AuthorizationCode, digest)
        if used is not None and used.client_id == client_id:
            revoke_grant(db, grant_id=used.grant_id, now=now, reason="code_reused")
            raise CodeReusedError
        return None
    return _redeemed(found, now=now)


async def redeem_code_on_loop(
    transaction: LoopTransaction, *, dialect: Dialect, code: str, client_id: str, now: dt.datetime
) -> Sequence[Any] | None:
    """`redeem_code`'s hot path in a transaction on the event loop: the code redeemed and
    read with its grant and account (on PostgreSQL one statement, on SQLite two, as
    `redeem_code` sends them); its row goes to `redeemed_from_row`. None means unknown,
    another client's or used before: `redeem_code` tells which."""
    params = {"b_code_hash": token_digest(code), "b_client_id": client_id, "b_now": now}
    if dialect.name != "sqlite":
        return await transaction.fetch_one(driver_sql(dialect, _REDEEM_CODE_WITH_GRANT)[0], params)
    found = await transaction.fetch_one(driver_sql(dialect, _REDEEM_CODE)[0], params)
    if found is None:
        return None
    grant = await transaction.fetch_one(
        driver_sql(dialect, _CODE_GRANT)[0], {"b_grant_id": found[0]}
    )
    assert grant is not None  # a code's grant is a foreign key
    return (*found, *grant)


def redeemed_from_row(row: Sequence[Any], *, now: dt.datetime) -> RedeemedCode | None:
    """A row of `redeem_code_on_loop` as read by the driver; None when the code expired."""
    utc = in_utc(row)
    return _redeemed(utc, now=now)


def _redeemed(found: Sequence[Any], *, now: dt.datetime) -> RedeemedCode | None:
    grant_id, redirect_uri, scope, nonce, challenge, method, expires_at = found[:7]
    if expires_at <= now:
        return None
    *grant, grant_revoked_at, account_disabled_at = found[7:]
    live = grant_revoked_at is None and account_disabled_at is None
    return RedeemedCode(
        grant_id=grant_id,
        redirect_uri=redirect_uri,
        scope=scope,
        nonce=nonce,
        code_challenge=challenge,
        code_challenge_method=method,
        subject=_subject(grant) if live else None,
    )


def subject_of(grant: Grant) -> Subject:
    """The `Subject` (Authlib's user) a grant stands for."""
    columns = (grant.id, grant.account_id, grant.auth_time, grant.acr, grant.amr, grant.sid)
    return _subject((*columns, grant.expires_at))


def insert_refresh_token(db: Session, row: dict[str, Any]) -> None:
    """Store a refresh token (its digest), as made by `refresh_token_row`. A Core INSERT,
    sent now: nothing reads the row back in the request, and the ORM's unit of work cost
    more CPU than the statement (refresh profile)."""
    db.connection().execute(_INSERT_REFRESH_TOKEN, row)


def refresh_token_row(
    *,
    token: str,
    subject: Subject,
    client_id: str,
    scope: str,
    now: dt.datetime,
    idle_seconds: int,
) -> dict[str, Any]:
    """The values of a new refresh token's row: it expires after `idle_seconds` unused,
    and never later than its grant (the absolute lifetime)."""
    expires_at = now + dt.timedelta(seconds=idle_seconds)
    if subject.grant_expires_at is not None:
        expires_at = min(expires_at, subject.grant_expires_at)
    return {
        "token_hash": token_digest(token),
        "grant_id": subject.grant_id,
        "client_id": client_id,
        "scope": scope,
        "issued_at": now,
        "expires_at": expires_at,
        "rotated_at": None,
        "revoked_at": None,
    }


def refresh_token_insert(dialect: Dialect, row: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """`insert_refresh_token`'s statement as PostgreSQL driver SQL and parameters, for the
    refresh on the event loop (`idp.async_db`)."""
    return driver_sql(dialect, _INSERT_REFRESH_TOKEN)[0], row


_INSERT_REFRESH_TOKEN = insert(cast(Table, RefreshToken.__table__)).values(
    {name: bindparam(name) for name in RefreshToken.__table__.columns.keys()}  # noqa: SIM118
)


@dataclass(frozen=True)
class RefreshFound:
    """A refresh token row with its grant, as read for the refresh grant."""

    token: RefreshToken
    grant: Grant
    account_disabled: bool


def find_refresh_token(db: Session, *, token: str) -> RefreshFound | None:
    """A refresh token by value, with its grant and account state (one query)."""
    found = db.execute(
        select(RefreshToken, Grant, Account.disabled_at)
        .join(Grant, Grant.id == RefreshToken.grant_id)
        .join(Account, Account.id == Grant.account_id)
        .where(RefreshToken.token_hash == token_digest(token))
    ).first()
    if found is None:
        return None
    row, grant, disabled_at = found
    return RefreshFound(token=row, grant=grant, account_disabled=disabled_at is not None)


_TOKENS = cast(Table, RefreshToken.__table__)
_GRANTS = cast(Table, Grant.__table__)
_ACCOUNTS = cast(Table, Account.__table__)
_CLAIMABLE = (
    _TOKENS.c.token_hash == bindparam("b_token_hash"),
    _TOKENS.c.client_id == bindparam("b_client_id"),
    _TOKENS.c.rotated_at.is_(None),
    _TOKENS.c.revoked_at.is_(None),
    _TOKENS.c.expires_at > bindparam("b_now"),
    _GRANTS.c.id == _TOKENS.c.grant_id,
    _GRANTS.c.revoked_at.is_(None),
    _GRANTS.c.expires_at > bindparam("b_now"),
    _ACCOUNTS.c.id == _GRANTS.c.account_id,
    _ACCOUNTS.c.disabled_at.is_(None),
)
_CLAIMED_TOKEN = (_TOKENS.c.scope, _TOKENS.c.issued_at, _TOKENS.c.expires_at)
_CLAIMED_GRANT = (
    _GRANTS.c.id,
    _GRANTS.c.account_id,
    _GRANTS.c.auth_time,
    _GRANTS.c.acr,
    _GRANTS.c.amr,
    _GRANTS.c.sid,
    _GRANTS.c.expires_at,
)
# Core statements on the table, not the ORM's bulk UPDATE: the ORM's execution path cost
# more CPU than the statement (refresh profile), and nothing here needs ORM objects.
_CLAIM = update(_TOKENS).where(*_CLAIMABLE).values(rotated_at=bindparam("b_now"))
#: PostgreSQL: the token and its grant in one statement (UPDATE ... FROM ... RETURNING).
_CLAIM_WITH_GRANT = _CLAIM.returning(*_CLAIMED_TOKEN, *_CLAIMED_GRANT)
#: SQLite's RETURNING may not name the joined tables: the token, then its grant.
_CLAIM_TOKEN = _CLAIM.returning(*_CLAIMED_TOKEN, _TOKENS.c.grant_id)
_GRANT_BY_ID = select(*_CLAIMED_GRANT).where(_GRANTS.c.id == bindparam("b_grant_id"))

_CODES = cast(Table, AuthorizationCode.__table__)
_REDEEM = (
    update(_CODES)
    .where(
        _CODES.c.code_hash == bindparam("b_code_hash"),
        _CODES.c.client_id == bindparam("b_client_id"),
        _CODES.c.redeemed_at.is_(None),
    )
    .values(redeemed_at=bindparam("b_now"))
)
_REDEEMED = (
    _CODES.c.grant_id,
    _CODES.c.redirect_uri,
    _CODES.c.scope,
    _CODES.c.nonce,
    _CODES.c.code_challenge,
    _CODES.c.code_challenge_method,
    _CODES.c.expires_at,
)
_CODE_GRANT_STATE = (*_CLAIMED_GRANT, _GRANTS.c.revoked_at, _ACCOUNTS.c.disabled_at)
_REDEEM_CODE_WITH_GRANT = _REDEEM.where(
    _GRANTS.c.id == _CODES.c.grant_id, _ACCOUNTS.c.id == _GRANTS.c.account_id
).returning(*_REDEEMED, *_CODE_GRANT_STATE)
_REDEEM_CODE = _REDEEM.returning(*_REDEEMED)
_CODE_GRANT = (
    select(*_CODE_GRANT_STATE)
    .join_from(_GRANTS, _ACCOUNTS, _ACCOUNTS.c.id == _GRANTS.c.account_id)
    .where(_GRANTS.c.id == bindparam("b_grant_id"))
)


@dataclass(frozen=True)
class Claimed:
    """A refresh token just marked used, and who its grant stands for."""

    scope: str
    issued_at: dt.datetime
    expires_at: dt.datetime
    subject: Subject


def claim_refresh_token(
    db: Session, *, token: str, client_id: str, now: dt.datetime
) -> Claimed | None:
    """The hot path of a refresh: mark the token used (compare-and-set) and return it with
    its grant, in one statement, when it is usable: this client's, not used, revoked or
    expired, and its grant live and unexpired, its account enabled. None otherwise; then
    `find_refresh_token` tells why (a reuse must revoke the grant) and nothing changed."""
    params = {"b_token_hash": token_digest(token), "b_client_id": client_id, "b_now": now}
    connection = db.connection()
    if connection.dialect.name == "sqlite":
        # Claim, then read the grant (an in-process call, not a network round trip).
        claimed = connection.execute(_CLAIM_TOKEN, params).one_or_none()
        if claimed is None:
            return None
        grant = connection.execute(_GRANT_BY_ID, {"b_grant_id": claimed[3]}).one()
        return _claimed(claimed[:3], grant)
    found = connection.execute(_CLAIM_WITH_GRANT, params).one_or_none()
    if found is None:
        return None
    return _claimed(found[:3], found[3:])


def _rotation() -> ClauseElement:
    """PostgreSQL: `_CLAIM_WITH_GRANT` and the insert of the successor in one statement
    (`refresh_rotation_query`). The successor's row is `refresh_token_row`'s: same grant,
    client and scope, expiring when unused for the idle time and never after its grant
    (LEAST passes over a grant without an end, as `refresh_token_row` does)."""
    claimed = _CLAIM.returning(
        *_CLAIMED_TOKEN, *(c.label(f"grant_{c.name}") for c in _CLAIMED_GRANT)
    ).cte("claimed")
    successor = insert(_TOKENS).from_select(
        ["token_hash", "grant_id", "client_id", "scope", "issued_at", "expires_at"],
        select(
            bindparam("b_successor_hash", type_=_TOKENS.c.token_hash.type),
            claimed.c.grant_id,
            bindparam("b_client_id", type_=_TOKENS.c.client_id.type),
            claimed.c.scope,
            bindparam("b_now", type_=_TOKENS.c.issued_at.type),
            func.least(
                bindparam("b_idle_expiry", type_=_TOKENS.c.expires_at.type),
                claimed.c.grant_expires_at,
            ),
        ),
    )
    return select(claimed).add_cte(successor.cte("successor"))


_ROTATE = _rotation()


def refresh_rotation_query(
    *,
    token: str,
    successor: str,
    client_id: str,
    now: dt.datetime,
    idle_seconds: int,
) -> tuple[str, tuple[Any, ...]]:
    """The rotation of a refresh token on the event loop (`AsyncDatabase.fetch_row`,
    PostgreSQL) as one statement, as libpq takes it (`$1` parameters, in order):
    `claim_refresh_token`'s claim of `token`, and with it the row of `successor`, its
    replacement. Its row, if any, goes to `claimed_from_row`; none means nothing was
    written."""
    params = {
        "b_token_hash": token_digest(token),
        "b_client_id": client_id,
        "b_now": now,
        "b_successor_hash": token_digest(successor),
        "b_idle_expiry": now + dt.timedelta(seconds=idle_seconds),
    }
    sql_text, order = driver_sql(libpq_dialect(), _ROTATE)
    assert order is not None  # libpq's parameters are positional
    return sql_text, tuple(params[name] for name in order)


def claimed_from_row(row: Sequence[Any]) -> Claimed:
    """A row of `refresh_rotation_query` as read by the driver (no SQLAlchemy types)."""
    utc = in_utc(row)
    return _claimed(utc[:3], utc[3:])


def _claimed(token: Sequence[Any], grant: Sequence[Any]) -> Claimed:
    scope, issued_at, expires_at = token
    return Claimed(scope=scope, issued_at=issued_at, expires_at=expires_at, subject=_subject(grant))


def _subject(grant: Sequence[Any]) -> Subject:
    """The subject of a grant read as the columns `_CLAIMED_GRANT`."""
    grant_id, account_id, auth_time, acr, amr, sid, grant_expires_at = grant
    return Subject(
        account_id=account_id,
        grant_id=grant_id,
        auth_time=auth_time,
        acr=acr,
        amr=list(amr),
        sid=sid,
        grant_expires_at=grant_expires_at,
    )


def rotate_refresh_token(db: Session, *, token_hash: str, now: dt.datetime) -> bool:
    """Mark a refresh token used; False when it already was (a replay)."""
    result = db.execute(
        update(RefreshToken)
        .where(
            RefreshToken.token_hash == token_hash,
            RefreshToken.rotated_at.is_(None),
            RefreshToken.revoked_at.is_(None),
        )
        .values(rotated_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def revoke_grant(db: Session, *, grant_id: str, now: dt.datetime, reason: str) -> None:
    """Revoke a whole token family: the grant, its refresh tokens and (through the grant
    id in their `gid` claim) its access tokens. Audited with `reason` (ASVS 16.3)."""
    revoked = db.execute(
        update(Grant)
        .where(Grant.id == grant_id, Grant.revoked_at.is_(None))
        .values(revoked_at=now)
        .returning(Grant.account_id, Grant.client_id)
        .execution_options(synchronize_session=False)
    ).first()
    db.execute(
        update(RefreshToken)
        .where(RefreshToken.grant_id == grant_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=now)
        .execution_options(synchronize_session=False)
    )
    if revoked is not None:
        audit.record(
            db,
            "oauth.grant_revoked",
            account_id=revoked.account_id,
            client_id=revoked.client_id,
            grant_id=grant_id,
            reason=reason,
        )


def grant_is_live(db: Session, *, grant_id: str) -> bool:
    """True while the grant exists and is not revoked."""
    revoked = db.execute(select(Grant.revoked_at).where(Grant.id == grant_id)).first()
    return revoked is not None and revoked[0] is None


def revoke_access_token(db: Session, *, jti: str, expires_at: dt.datetime) -> None:
    """Remember a revoked access token's `jti` until it would have expired anyway."""
    if db.get(RevokedAccessToken, jti) is None:
        db.add(RevokedAccessToken(jti=jti, expires_at=expires_at))
        db.flush()


# Built once: constructing a statement cost more CPU than running it (profile of
# introspection); the values travel as bound parameters.
_REVOKED_JTIS = cast(Table, RevokedAccessToken.__table__)
_JTI_REVOKED = exists().where(_REVOKED_JTIS.c.jti == bindparam("jti"))
_ACCESS_TOKEN_REVOKED = select(
    _JTI_REVOKED,
    exists().where(_GRANTS.c.id == bindparam("grant_id"), _GRANTS.c.revoked_at.is_(None)),
)
_ACCESS_TOKEN_JTI_REVOKED = select(_JTI_REVOKED)


def access_token_revoked(db: Session, *, jti: str, grant_id: str | None) -> bool:
    """True when the access token, or the grant it came from, has been revoked (or the
    grant is gone). One statement: both primary-key look-ups together."""
    # Introspection's only query, compiled once per dialect: SQLAlchemy's compilation
    # cache look-up cost more CPU than the query itself.
    connection = db.connection()
    if grant_id is None:
        (revoked,) = _fetch_one(connection, _ACCESS_TOKEN_JTI_REVOKED, {"jti": jti})
        return bool(revoked)
    params = {"jti": jti, "grant_id": grant_id}
    revoked, live = _fetch_one(connection, _ACCESS_TOKEN_REVOKED, params)
    return bool(revoked) or not live


def access_token_revocation_query(
    dialect: Dialect, *, jti: str, grant_id: str | None
) -> tuple[str, tuple[Any, ...] | dict[str, Any]]:
    """`access_token_revoked`'s statement as the driver's SQL and parameters, for reads
    outside a session (`access_token_revoked_now`, `idp.async_db`); its row goes to
    `access_token_revoked_from`."""
    statement = _ACCESS_TOKEN_JTI_REVOKED if grant_id is None else _ACCESS_TOKEN_REVOKED
    params = {"jti": jti} if grant_id is None else {"jti": jti, "grant_id": grant_id}
    sql_text, order = driver_sql(dialect, statement)
    return sql_text, tuple(params[name] for name in order) if order else params


def access_token_revocation_libpq(*, jti: str, grant_id: str | None) -> tuple[str, tuple[Any, ...]]:
    """`access_token_revocation_query` as libpq takes it (`$1` parameters, in order), for
    introspection's read on the event loop (`AsyncDatabase.fetch_flags`)."""
    sql_text, params = access_token_revocation_query(libpq_dialect(), jti=jti, grant_id=grant_id)
    assert isinstance(params, tuple)
    return sql_text, params


def access_token_revoked_from(row: Sequence[Any] | None) -> bool:
    """The answer of `access_token_revocation_query`'s row."""
    if row is None:
        raise ValueError("an EXISTS query always answers one row")
    if len(row) == 1:
        return bool(row[0])
    revoked, live = row
    return bool(revoked) or not live


def access_token_revoked_now(engine: Engine, *, jti: str, grant_id: str | None) -> bool:
    """`access_token_revoked`, on a pooled driver connection of its own, outside any
    session or transaction: introspection's one read on SQLite (see
    `IdpAuthorizationServer._introspect_on_loop`). A session and SQLAlchemy's execution
    path cost four times the query's own CPU. PostgreSQL reads in autocommit (one round
    trip, latest committed data); SQLite's driver connection runs a SELECT without a
    transaction (`idp.db`)."""
    sql_text, params = access_token_revocation_query(engine.dialect, jti=jti, grant_id=grant_id)
    connection = engine.raw_connection()
    try:
        postgres = engine.dialect.name == "postgresql"
        if postgres:
            connection.dbapi_connection.autocommit = True  # type: ignore[union-attr]
        try:
            cursor = connection.cursor()
            cursor.execute(sql_text, params)
            row = cursor.fetchone()
            cursor.close()
        finally:
            if postgres:
                connection.dbapi_connection.autocommit = False  # type: ignore[union-attr]
    finally:
        connection.close()  # back to the pool
    return access_token_revoked_from(row)


def _fetch_one(connection: Connection, statement: ClauseElement, params: dict[str, Any]) -> Any:
    """The one row `statement` returns, compiled once and then sent as the driver's SQL
    (`exec_driver_sql`: events and logging still see it). Only for statements whose
    parameters and results need no type conversion."""
    sql_text, order = driver_sql(connection.dialect, statement)
    values = tuple(params[name] for name in order) if order else params
    return connection.exec_driver_sql(sql_text, values).one()


def use_client_assertion(db: Session, *, client_id: str, jti: str, expires_at: dt.datetime) -> bool:
    """Record a client assertion's `jti`; False when it was seen before (RFC 7523 3)."""
    key = token_digest(f"{client_id}\x00{jti}")
    try:
        with db.begin_nested():
            db.add(UsedClientAssertion(jti=key, expires_at=expires_at))
    except IntegrityError:
        return False
    return True


def purge_expired(db: Session, *, now: dt.datetime) -> dict[str, int]:
    """Delete what can no longer be used or needs no replay guard any more: grants past
    their absolute lifetime (their codes and refresh tokens go with them), refresh tokens
    past their idle lifetime, codes a day after expiry, and revoked `jti` and client
    assertion records once the token or assertion would have expired anyway."""
    day = dt.timedelta(days=1)
    counts: dict[str, int] = {}
    for name, statement in (
        ("grants", delete(Grant).where(Grant.expires_at < now)),
        ("refresh_tokens", delete(RefreshToken).where(RefreshToken.expires_at < now)),
        (
            "authorization_codes",
            delete(AuthorizationCode).where(AuthorizationCode.expires_at < now - day),
        ),
        (
            "revoked_access_tokens",
            delete(RevokedAccessToken).where(RevokedAccessToken.expires_at < now),
        ),
        (
            "used_client_assertions",
            delete(UsedClientAssertion).where(UsedClientAssertion.expires_at < now),
        ),
    ):
        result = db.execute(statement.execution_options(synchronize_session=False))
        counts[name] = int(getattr(result, "rowcount", 0) or 0)
    return counts
