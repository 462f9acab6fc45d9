"""Browser sessions and login transactions, both behind opaque random values."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from idp.models.base import Base, utcnow


class BrowserSession(Base):
    """A signed-in browser. The cookie holds a random value; we store its digest.

    `sid` is the public session id put in ID tokens (OIDC front/back-channel logout).
    """

    __tablename__ = "browser_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    sid: Mapped[str] = mapped_column(String(64), unique=True)
    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    auth_time: Mapped[dt.datetime]
    amr: Mapped[list[str]] = mapped_column(default=list)
    acr: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime]
    ended_at: Mapped[dt.datetime | None]


class LoginTransaction(Base):
    """A validated authorization request waiting for the hosted pages to sign someone in.

    `/authorize` creates it; the pages fill in `account_id`, `amr`, `acr`, `auth_time`
    and set `completed_at`; `/authorize` resumes it once and issues the code.
    """

    __tablename__ = "login_transactions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any]]
    csrf_token: Mapped[str] = mapped_column(String(64))
    account_id: Mapped[str | None] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    stage: Mapped[str] = mapped_column(String(20), default="password")
    pending_totp_encrypted: Mapped[str | None] = mapped_column(Text)
    amr: Mapped[list[str]] = mapped_column(default=list)
    acr: Mapped[str | None] = mapped_column(String(100))
    auth_time: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime]
    consented_at: Mapped[dt.datetime | None]
    completed_at: Mapped[dt.datetime | None]
    consumed_at: Mapped[dt.datetime | None]
    #: A message key the next page view shows once (POST -> 303 -> GET keeps errors visible).
    error: Mapped[str | None] = mapped_column(String(200))
    #: The email address typed on the sign-in page, shown again after a failed attempt.
    entered_email: Mapped[str | None] = mapped_column(String(320))
