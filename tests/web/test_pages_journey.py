"""The journey's named decisions and the pages' message vocabulary, without HTTP."""

from __future__ import annotations

import datetime as dt

import pytest

from idp.accounts.throttle import Verdict
from idp.models import Client, LoginTransaction
from idp.oauth.acr import ACR_MFA, ACR_SFA
from idp.settings import Settings
from idp.web.pages import journey, transactions
from idp.web.pages.limits import refusal
from idp.web.pages.messages import lookup, summary

BEFORE = Settings(mfa_required_from=dt.date(2099, 3, 5))
AFTER = Settings(mfa_required_from=dt.date(2024, 3, 5))
NOW = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC)


def tx(stage: str = "password", **params: str) -> LoginTransaction:
    return LoginTransaction(stage=stage, params=params, amr=[], csrf_token="t")


@pytest.mark.parametrize(
    ("acr_values", "required"),
    [
        ("", False),
        (ACR_MFA, True),
        (f"{ACR_MFA} {ACR_SFA}", False),  # password only is acceptable to the client
        (ACR_SFA, False),
        ("urn:unknown", False),  # unknown values are never treated as the highest level
    ],
)
def test_client_requires_mfa(acr_values: str, required: bool) -> None:
    assert journey.client_requires_mfa(tx(acr_values=acr_values)) is required


def test_skip_only_on_the_optional_stage_before_the_date_and_when_the_client_allows() -> None:
    assert journey.may_skip_setup(tx("mfa_setup_optional"), settings=BEFORE, now=NOW)
    assert not journey.may_skip_setup(tx("mfa_setup_optional"), settings=AFTER, now=NOW)
    assert not journey.may_skip_setup(tx("mfa_setup"), settings=BEFORE, now=NOW)
    assert not journey.may_skip_setup(
        tx("mfa_setup_optional", acr_values=ACR_MFA), settings=BEFORE, now=NOW
    )


def test_consent_for_third_parties_and_prompt_consent() -> None:
    first, third = Client(first_party=True), Client(first_party=False)
    assert not journey.needs_consent(tx(), first)
    assert journey.needs_consent(tx(), third)
    assert journey.needs_consent(tx(prompt="login consent"), first)
    given = tx()
    given.consented_at = NOW
    assert not journey.needs_consent(given, third)
    assert journey.stage_after_second_factor(tx(), third) == "consent"
    assert journey.stage_after_second_factor(tx(), first) == journey.DONE


def test_password_passed_starts_a_fresh_amr_and_forgets_the_pending_seed() -> None:
    row = tx()
    row.amr, row.pending_totp_encrypted, row.entered_email = ["otp"], "kid.x", "a@b.c"
    journey.password_passed(row, account_id="acc", now=NOW)
    assert (row.account_id, row.amr, row.auth_time) == ("acc", ["pwd"], NOW)
    assert (row.pending_totp_encrypted, row.entered_email) == (None, None)


def test_start_again_rebuilds_the_original_request() -> None:
    row = tx(client_id="app", redirect_uri="https://app.example/cb?x=1", state="s t")
    assert transactions.restart_url(row) == (
        "/authorize?client_id=app&redirect_uri=https%3A%2F%2Fapp.example%2Fcb%3Fx%3D1&state=s+t"
    )
    assert transactions.restart_url(None) is None


def test_stage_redirects() -> None:
    row = tx("mfa")
    assert transactions.redirect_for_stage(row, "T", here={"mfa"}) is None
    assert transactions.redirect_for_stage(row, "T", here={"password"}) == "/signin/code?tx=T"
    row.completed_at = NOW
    assert transactions.redirect_for_stage(row, "T", here={"mfa"}) == "/authorize/resume?tx=T"


def test_messages_and_throttle_refusals() -> None:
    assert refusal(Verdict(allowed=False, retry_after=1)) == "throttled:1"
    assert refusal(Verdict(allowed=False, retry_after=61)) == "throttled:2"
    assert refusal(Verdict(allowed=False, locked=True)) == "locked"
    assert lookup("throttled:2").text == "Too many attempts. Try again in 2 minutes."
    assert lookup("throttled:1").text == "Too many attempts. Try again in 1 minute."
    assert lookup("throttled:junk").text == "Too many attempts. Try again in 1 minute."
    assert lookup("no such key") is None
    assert lookup(None) is None
    assert summary("code_wrong")[0]["href"] == "#code"
    assert summary("csrf")[0]["href"] == "#maincontent"
    assert summary(None) == []
