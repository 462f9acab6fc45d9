"""The MFA policy: mandatory from `IDP_MFA_REQUIRED_FROM`, optional before, always once set up."""

from __future__ import annotations

import datetime as dt

import pytest

from idp.accounts.mfa_policy import mfa_required, mfa_setup_optional, stage_after_password

FROM = dt.date(2024, 3, 5)
BEFORE = FROM - dt.timedelta(days=1)
AFTER = FROM + dt.timedelta(days=400)


def test_mfa_is_required_from_the_date_itself() -> None:
    assert not mfa_required(today=BEFORE, required_from=FROM)
    assert mfa_required(today=FROM, required_from=FROM)
    assert mfa_required(today=AFTER, required_from=FROM)


def test_setup_is_optional_only_before_the_date_and_only_without_an_authenticator() -> None:
    assert mfa_setup_optional(today=BEFORE, required_from=FROM)
    assert not mfa_setup_optional(today=FROM, required_from=FROM)
    assert not mfa_setup_optional(today=BEFORE, required_from=FROM, has_authenticator=True)


@pytest.mark.parametrize(
    ("today", "has_authenticator", "stage"),
    [
        (BEFORE, False, "mfa_setup_optional"),
        (BEFORE, True, "mfa"),  # once set up, a code at every sign-in, whatever the date
        (FROM, False, "mfa_setup"),
        (AFTER, False, "mfa_setup"),
        (AFTER, True, "mfa"),
    ],
)
def test_stage_after_password(today: dt.date, has_authenticator: bool, stage: str) -> None:
    assert (
        stage_after_password(today=today, required_from=FROM, has_authenticator=has_authenticator)
        == stage
    )
