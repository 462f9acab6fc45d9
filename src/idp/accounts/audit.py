"""Audit trail writer (ASVS 16.3.1). Never pass a secret in `detail`."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.orm import Session

from idp.models import AuditEvent

log = logging.getLogger("idp.audit")


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
    """Add an audit event to the current transaction and log it."""
    db.add(
        AuditEvent(
            event=event,
            account_id=account_id,
            actor_id=actor_id,
            client_id=client_id,
            ip=ip,
            detail=detail,
        )
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
