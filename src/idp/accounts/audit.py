"""Audit trail writer (ASVS 16.3.1). Never pass a secret in `detail`."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import Dialect, FromClause, Insert, Table, bindparam, insert, select
from sqlalchemy.orm import Session

from idp.db import driver_sql, driver_values
from idp.models import AuditEvent, utcnow

log = logging.getLogger("idp.audit")

_TABLE: Table = AuditEvent.__table__  # type: ignore[assignment]
#: The columns an event gives (the id is the database's).
_COLUMNS = ("at", "event", "account_id", "actor_id", "client_id", "ip", "detail")
#: Built once, so its compilation cache key is too. Inline: nothing reads the new row's
#: id, so PostgreSQL is not asked to return it (`RETURNING id` and the fetch of it cost a
#: fifth of the statement's CPU).
_INSERT = insert(_TABLE).values({name: bindparam(name) for name in _COLUMNS}).inline()


def record(
    db: Session,
    event: str,
    *,
    account_id: str | None = None,
    actor_id: str | None = None,
    client_id: str | None = None,
    ip: str | None = None,
    **detail: Any,
) -> None:
    """Add an audit event to the current transaction and log it.

    A Core INSERT, sent now: the unit of work's bookkeeping for an ORM object (and the
    RETURNING of its id) cost more than the row, on every sign-in step. The row is part
    of the session's transaction, so it commits or rolls back with the rest; it goes on
    the session's connection directly (the session's own `execute` adds ORM dispatch
    that a Core INSERT does not use).
    """
    values = _event(event, account_id, actor_id, client_id, ip, detail)
    db.connection().execute(_INSERT, values)
    _log(values)


def insert_statement(
    dialect: Dialect,
    event: str,
    *,
    account_id: str | None = None,
    actor_id: str | None = None,
    client_id: str | None = None,
    ip: str | None = None,
    **detail: Any,
) -> tuple[str, dict[str, Any]]:
    """`record`'s INSERT as PostgreSQL driver SQL and parameters, for a transaction on the
    event loop (`idp.async_db`), which sends it; the event is logged now, as `record`
    logs it."""
    values = _event(event, account_id, actor_id, client_id, ip, detail)
    _log(values)
    return driver_sql(dialect, _INSERT)[0], driver_values(dialect, _TABLE, values)


def insert_for_each(source: FromClause) -> Insert:
    """`record`'s INSERT of one event for each row of `source` (none when it has none),
    returning the new rows' ids: for an event that stands or falls with another
    statement's change, the two sent as one statement (`source` a data-modifying WITH).
    Build it once; its parameters are `pending`'s."""
    values = select(*(bindparam(name, type_=_TABLE.c[name].type) for name in _COLUMNS))
    return insert(_TABLE).from_select(_COLUMNS, values.select_from(source)).returning(_TABLE.c.id)


class Pending:
    """An event for `insert_for_each`'s statement: its `params`, and `written()` to log
    it once the statement has written it (nothing is logged for an event not written)."""

    __slots__ = ("_values",)

    def __init__(
        self,
        event: str,
        *,
        account_id: str | None = None,
        actor_id: str | None = None,
        client_id: str | None = None,
        ip: str | None = None,
        **detail: Any,
    ) -> None:
        self._values = _event(event, account_id, actor_id, client_id, ip, detail)

    def params(self, dialect: Dialect) -> dict[str, Any]:
        """The event's columns, as the driver of `dialect` takes them."""
        return driver_values(dialect, _TABLE, self._values)

    def insert_statement(self, dialect: Dialect) -> tuple[str, dict[str, Any]]:
        """`record`'s INSERT of the event alone, as `insert_statement` gives it (for a
        transaction that writes it only with another change; `written()` once it has)."""
        return driver_sql(dialect, _INSERT)[0], self.params(dialect)

    def written(self) -> None:
        """Log the event, now that it is in the audit trail."""
        _log(self._values)


def _event(
    event: str,
    account_id: str | None,
    actor_id: str | None,
    client_id: str | None,
    ip: str | None,
    detail: dict[str, Any],
) -> dict[str, Any]:
    return {
        "at": utcnow(),
        "event": event,
        "account_id": account_id,
        "actor_id": actor_id,
        "client_id": client_id,
        "ip": ip,
        "detail": detail,
    }


def _log(values: dict[str, Any]) -> None:
    log.info(
        "%s account=%s actor=%s client=%s ip=%s %s",
        values["event"],
        values["account_id"],
        values["actor_id"],
        values["client_id"],
        values["ip"],
        values["detail"],
    )
