"""Accounts, organisations and memberships."""

from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import Enum, ForeignKey, Index, String, func
from sqlalchemy.orm import Mapped, mapped_column, relationship

from idp.models.base import Base, new_id, utcnow


class GlobalRole(enum.StrEnum):
    """Roles across every organisation."""

    SUPPORT = "support"
    ADMIN = "admin"


class OrgRole(enum.StrEnum):
    """A person's role within one organisation."""

    MEMBER = "member"
    ORG_ADMIN = "org_admin"


class Account(Base):
    """A person who signs in. `id` is the OIDC `sub`: stable, opaque, never the email.

    `email_key` is the normalised address (NFKC, case-folded, IDNA domain); its unique
    index means two accounts can never share an address. Legacy accounts imported with an
    address shared by others keep it in `legacy_email` with `email` unset, and cannot
    sign in until they are given an address of their own.
    """

    __tablename__ = "accounts"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    email: Mapped[str | None] = mapped_column(String(320))
    email_key: Mapped[str | None] = mapped_column(String(320))
    email_verified: Mapped[bool] = mapped_column(default=False)
    legacy_email: Mapped[str | None] = mapped_column(String(320))
    name: Mapped[str | None] = mapped_column(String(200))
    password_hash: Mapped[str | None] = mapped_column(String(255))
    global_role: Mapped[GlobalRole | None] = mapped_column(
        Enum(GlobalRole, native_enum=False, length=20, validate_strings=True)
    )
    disabled_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    memberships: Mapped[list[Membership]] = relationship(
        back_populates="account", cascade="all, delete-orphan"
    )

    __table_args__ = (Index("uq_accounts_email_key", "email_key", unique=True),)

    @property
    def disabled(self) -> bool:
        """True once an administrator has disabled the account."""
        return self.disabled_at is not None


#: The sign-in page's search for accounts known only by a shared legacy address, made for
#: every address no account has as its own (`idp.web.pages.password_check`): without it a
#: scan of every account, whose time would grow with the accounts and tell an address
#: with no account from one that has one (ASVS 6.3.8).
Index(
    "ix_accounts_legacy_email",
    func.lower(Account.__table__.c.legacy_email),
    postgresql_where=Account.__table__.c.email_key.is_(None),
    sqlite_where=Account.__table__.c.email_key.is_(None),
)


class Organisation(Base):
    """A pharmacy, practice or other organisation whose administrators manage members."""

    __tablename__ = "organisations"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    memberships: Mapped[list[Membership]] = relationship(
        back_populates="organisation", cascade="all, delete-orphan"
    )


class Membership(Base):
    """An account's role in an organisation."""

    __tablename__ = "memberships"

    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    organisation_id: Mapped[str] = mapped_column(
        ForeignKey("organisations.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    role: Mapped[OrgRole] = mapped_column(
        Enum(OrgRole, native_enum=False, length=20, validate_strings=True),
        default=OrgRole.MEMBER,
    )

    account: Mapped[Account] = relationship(back_populates="memberships")
    organisation: Mapped[Organisation] = relationship(back_populates="memberships")
