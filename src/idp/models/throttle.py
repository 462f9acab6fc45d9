"""Failure budgets kept in the database when no Redis is configured."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from idp.models.base import Base


class FailureCounter(Base):
    """Consecutive failures for one key, e.g. `pwd:account:<id>` or `otp:ip:<addr>`."""

    __tablename__ = "failure_counters"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    failures: Mapped[int] = mapped_column(default=0)
    last_failure_at: Mapped[dt.datetime]
    blocked_until: Mapped[dt.datetime | None]
