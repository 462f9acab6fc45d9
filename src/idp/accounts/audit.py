"""Audit trail writer (ASVS 16.3.1). Never pass a secret in `detail`."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import Table, insert
from sqlalchemy.orm import Session

from idp.models import AuditEvent

log = logging.getLogger("idp.audit")

_TABLE: Table = AuditEvent.__table__  # type: ignore[assignment]
#: Built once, so its compilation cache key is too. Inline: nothing reads the new row's
#: id, so PostgreSQL is not asked to return it (`RETURNING id` and the fetch of it cost a
#: fifth of the statement's CPU).
_INSERT = insert(_TABLE).inline()


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
    db.connection().execute(
        _INSERT,
        {
            "event": event,
            "account_id": account_id,
            "actor_id": actor_id,
            "client_id": client_id,
            "ip": ip,
            "detail": detail,
        },
    )
    log.info(
        "%s account=%s actor=%s client=%s ip=%s %s",
        event,
        account_id,
        actor_id,
        client_id,
        ip,
        detail,
    )
