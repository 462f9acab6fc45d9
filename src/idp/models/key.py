"""Token signing keys, private parts encrypted at rest."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from idp.models.base import Base, utcnow


class SigningKey(Base):
    """A JWS signing key. Published from `created_at`, signs from `active_from`,
    withdrawn from the JWKS after `retired_at`.

    `seq` numbers the keys of one `alg` (1, 2, ...); its unique constraint is the race
    guard: two processes creating "the next key" at once cannot both commit."""

    __tablename__ = "signing_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    alg: Mapped[str] = mapped_column(String(10))
    public_jwk: Mapped[dict[str, Any]]
    private_key_encrypted: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    active_from: Mapped[dt.datetime]
    retired_at: Mapped[dt.datetime | None]
    seq: Mapped[int] = mapped_column(default=1)

    __table_args__ = (UniqueConstraint("alg", "seq"),)
