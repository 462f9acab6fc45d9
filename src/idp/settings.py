"""Service configuration, read from `IDP_*` environment variables.

Every field has a working development default. `IDP_ENV=production` refuses to
start while a development-only default or an unsafe value is left in place.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from functools import cached_property
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: The development encryption key. Public by design, so production refuses it.
DEV_ENCRYPTION_KEYS = "dev:ZGV2ZWxvcG1lbnQtb25seS1rZXktMzItYnl0ZXMhISE"


class UnsafeSettingError(ValueError):
    """A production configuration left an unsafe value in place."""


def parse_encryption_keys(value: str) -> dict[str, bytes]:
    """Parse `kid:base64url-key[,kid:key...]` into an ordered mapping of 32-byte keys."""
    keys: dict[str, bytes] = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        kid, sep, encoded = item.partition(":")
        if not sep or not kid:
            raise ValueError("IDP_ENCRYPTION_KEYS entries must look like 'kid:base64url-key'")
        try:
            raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"IDP_ENCRYPTION_KEYS key {kid!r} is not base64url") from exc
        if len(raw) != 32:
            raise ValueError(f"IDP_ENCRYPTION_KEYS key {kid!r} must decode to 32 bytes")
        if kid in keys:
            raise ValueError(f"IDP_ENCRYPTION_KEYS key id {kid!r} appears twice")
        keys[kid] = raw
    if not keys:
        raise ValueError("IDP_ENCRYPTION_KEYS must hold at least one key")
    return keys


class Settings(BaseSettings):
    """Everything the service reads from its environment (prefix `IDP_`)."""

    model_config = SettingsConfigDict(env_prefix="IDP_", extra="ignore", frozen=True)

    env: Literal["development", "production"] = Field(
        default="development",
        description="`production` refuses development defaults and insecure values.",
    )
    issuer: str = Field(
        default="http://127.0.0.1:8000",
        description="Public base URL of the provider; `iss` of every token. https in production.",
    )
    database_url: str = Field(
        default="sqlite:///var/idp.sqlite3",
        description="SQLAlchemy URL: a SQLite file (default) or `postgresql+psycopg://...`.",
    )
    redis_url: str | None = Field(
        default=None,
        description="Optional Redis URL for shared ephemeral state (failure budgets) "
        "across instances.",
    )
    mfa_required_from: dt.date = Field(
        default=dt.date(2024, 3, 5),
        description="From this date every sign-in needs an authenticator app (ISO date).",
    )
    encryption_keys: str = Field(
        default=DEV_ENCRYPTION_KEYS,
        description="AES-256-GCM keys for secrets at rest, `kid:base64url,...`; "
        "the first encrypts, all decrypt.",
    )
    session_idle_seconds: int = Field(
        default=3600, ge=60, le=3600, description="Sign-in session idle limit (NIST AAL2: 1 h)."
    )
    session_absolute_seconds: int = Field(
        default=12 * 3600,
        ge=300,
        le=24 * 3600,
        description="Sign-in session absolute limit (NIST AAL2: at most 24 h).",
    )
    login_transaction_seconds: int = Field(
        default=900, ge=60, le=3600, description="Time allowed to finish a sign-in journey."
    )
    authorization_code_seconds: int = Field(
        default=60, ge=5, le=60, description="Authorization code lifetime (at most 60 s)."
    )
    access_token_seconds: int = Field(
        default=600, ge=60, le=3600, description="Access token lifetime."
    )
    access_token_alg: Literal["ES256", "RS256"] = Field(
        default="ES256",
        description=(
            "How access tokens (RFC 9068 JWTs) are signed. ES256 signs about ten times faster"
            " than RS256; choose RS256 if a resource server verifies only RS256. ID tokens"
            " use each client's registered algorithm (RS256 unless it says otherwise)."
        ),
    )
    id_token_seconds: int = Field(default=600, ge=60, le=3600, description="ID token lifetime.")
    refresh_token_idle_seconds: int = Field(
        default=24 * 3600, ge=300, description="A refresh token unused for this long expires."
    )
    refresh_token_absolute_seconds: int = Field(
        default=7 * 24 * 3600,
        ge=3600,
        description="A grant's refresh tokens stop working this long after sign-in.",
    )
    key_activation_delay_seconds: int = Field(
        default=900,
        ge=0,
        description="After `idp keys rotate`, the new key is published at once and signs "
        "only after this delay, so relying parties' JWKS caches pick it up first.",
    )
    support_contact: str = Field(
        default="For help signing in, contact PharmOutcomes support on 0345 450 6279.",
        description="Support contact text shown on every hosted page.",
    )
    smtp_url: str | None = Field(
        default=None,
        description="SMTP server for notifications, `smtp://host:port`; unset logs instead.",
    )
    mail_from: str = Field(
        default="no-reply@idp.localhost", description="Sender address of notifications."
    )
    forwarded_allow_ips: str = Field(
        default="127.0.0.1",
        description="Proxies trusted for X-Forwarded-For/-Proto (uvicorn's setting).",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Log level."
    )

    @model_validator(mode="after")
    def _check(self) -> Settings:
        parse_encryption_keys(self.encryption_keys)
        if self.issuer.endswith("/"):
            raise ValueError("IDP_ISSUER must not end with '/'")
        if self.session_absolute_seconds < self.session_idle_seconds:
            raise ValueError(
                "IDP_SESSION_ABSOLUTE_SECONDS must be at least IDP_SESSION_IDLE_SECONDS"
            )
        if self.env == "production":
            self._refuse_unsafe_production_values()
        return self

    def _refuse_unsafe_production_values(self) -> None:
        if not self.issuer.startswith("https://"):
            raise UnsafeSettingError("IDP_ISSUER must be an https:// URL in production")
        if self.encryption_keys == DEV_ENCRYPTION_KEYS or any(
            kid == "dev" for kid in parse_encryption_keys(self.encryption_keys)
        ):
            raise UnsafeSettingError(
                "IDP_ENCRYPTION_KEYS is the development placeholder; set a real key in production "
                "(python -c \"import secrets,base64;print('k1:'+base64.urlsafe_b64encode("
                "secrets.token_bytes(32)).decode().rstrip('='))\")"
            )
        if self.log_level == "debug":
            raise UnsafeSettingError("IDP_LOG_LEVEL=debug is not allowed in production")

    @cached_property
    def secure_cookies(self) -> bool:
        """Cookies are Secure and `__Host-` prefixed when the issuer is https."""
        return self.issuer.startswith("https://")

    @cached_property
    def encryption_keyring(self) -> dict[str, bytes]:
        """The parsed encryption keys, current key first."""
        return parse_encryption_keys(self.encryption_keys)
