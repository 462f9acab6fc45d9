"""When a second factor applies: the named MFA policy of the PharmOutcomes announcement.

From `IDP_MFA_REQUIRED_FROM` every sign-in needs an authenticator app (NIST 800-63B AAL2);
before that date a person may set one up or skip it. Once someone has an authenticator,
every sign-in asks for a code, whatever the date.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

#: What follows a correct password: the code page, the setup page, or an optional setup.
Stage = Literal["mfa", "mfa_setup", "mfa_setup_optional"]


def mfa_required(*, today: dt.date, required_from: dt.date) -> bool:
    """True from the day MFA becomes mandatory for everyone."""
    return today >= required_from


def mfa_setup_optional(
    *, today: dt.date, required_from: dt.date, has_authenticator: bool = False
) -> bool:
    """True when a person without an authenticator may skip setting one up."""
    return not has_authenticator and not mfa_required(today=today, required_from=required_from)


def stage_after_password(
    *, today: dt.date, required_from: dt.date, has_authenticator: bool
) -> Stage:
    """The hosted page that follows a correct password."""
    if has_authenticator:
        return "mfa"
    if mfa_required(today=today, required_from=required_from):
        return "mfa_setup"
    return "mfa_setup_optional"
