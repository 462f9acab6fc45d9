"""Registered relying parties (OAuth clients)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import String, Text
from sqlalchemy.orm import Mapped, mapped_column

from idp.models.base import Base, utcnow


class Client(Base):
    """An OAuth 2.0 / OIDC client.

    `client_secret_hash` is the SHA-256 of a 256-bit random secret (never a slow hash:
    the secret has full entropy, and the token endpoint is the hot path).
    """

    __tablename__ = "clients"

    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_secret_hash: Mapped[str | None] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    service_name: Mapped[str | None] = mapped_column(String(200))
    redirect_uris: Mapped[list[str]] = mapped_column(default=list)
    post_logout_redirect_uris: Mapped[list[str]] = mapped_column(default=list)
    grant_types: Mapped[list[str]] = mapped_column(default=list)
    scope: Mapped[str] = mapped_column(Text, default="openid email profile")
    token_endpoint_auth_method: Mapped[str] = mapped_column(
        String(40), default="client_secret_basic"
    )
    jwks: Mapped[dict[str, Any] | None]
    id_token_signed_response_alg: Mapped[str] = mapped_column(String(10), default="RS256")
    first_party: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    @property
    def is_public(self) -> bool:
        """Public clients (native or browser apps) have no secret."""
        return self.token_endpoint_auth_method == "none"  # noqa: S105 (a method name)
