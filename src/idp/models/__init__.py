"""SQLAlchemy 2 typed tables. Importing this package registers every table."""

from idp.models.account import Account, GlobalRole, Membership, Organisation, OrgRole
from idp.models.audit import AuditEvent
from idp.models.base import Base, column_attributes, from_columns, new_id, utcnow
from idp.models.client import Client
from idp.models.grant import (
    AuthorizationCode,
    Grant,
    RefreshToken,
    RevokedAccessToken,
    UsedClientAssertion,
)
from idp.models.key import SigningKey
from idp.models.mfa import TotpCredential
from idp.models.session import BrowserSession, LoginTransaction
from idp.models.throttle import FailureCounter

__all__ = [
    "Account",
    "AuditEvent",
    "AuthorizationCode",
    "Base",
    "BrowserSession",
    "Client",
    "FailureCounter",
    "GlobalRole",
    "Grant",
    "LoginTransaction",
    "Membership",
    "OrgRole",
    "Organisation",
    "RefreshToken",
    "RevokedAccessToken",
    "SigningKey",
    "TotpCredential",
    "UsedClientAssertion",
    "column_attributes",
    "from_columns",
    "new_id",
    "utcnow",
]
