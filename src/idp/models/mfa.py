"""Second factors: one TOTP authenticator per account."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from idp.models.base import Base, new_id, utcnow


class TotpCredential(Base):
    """A confirmed authenticator app.

    `last_used_step` is the last accepted RFC 6238 time step: a code is accepted only by
    a compare-and-set that moves it forward, so a code works once, across processes.
    """

    __tablename__ = "totp_credentials"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), unique=True
    )
    secret_encrypted: Mapped[str] = mapped_column(Text)
    last_used_step: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
