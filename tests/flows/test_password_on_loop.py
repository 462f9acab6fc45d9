"""The password POST on the event loop (`idp.web.pages.password_on_loop`, on PostgreSQL
and SQLite), and every way it hands over to a worker thread: each attempt is hashed
exactly once whichever path it takes, every address takes the same path until its
verdict, and a journey that changed while its hash ran is not overwritten.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import pytest
from argon2 import PasswordHasher
from sqlalchemy import update

from idp.accounts.passwords import needs_rehash, verify_password
from idp.accounts.throttle import make_throttle
from idp.crypto import token_digest
from idp.models import Account, LoginTransaction
from idp.web.pages import password_check
from tests.conftest import LiveServer, start_live_server
from tests.flows.oidc import register_client, register_person
from tests.flows.pages import NOW, events, transaction, write_lock_held_elsewhere
from tests.flows.signin import parse_page, start_sign_in
from tests.flows.test_statement_counts import statements

WRONG = "not the password 1"


@dataclass
class PasswordPage:
    """A browser on the password page of a new journey."""

    browser: httpx.Client
    tx: str
    fields: dict[str, str]

    def post(self, server: LiveServer, email: str, password: str, **fields: str) -> httpx.Response:
        return self.browser.post(
            f"{server.url}/signin?tx={self.tx}",
            data={**self.fields, "email": email, "password": password, **fields},
        )

    def shown(self, server: LiveServer) -> str:
        """The error summary of the page a refused POST went back to."""
        page = self.browser.get(f"{server.url}/signin?tx={self.tx}")
        return parse_page(page.text).errors


@pytest.fixture
def page(live_server, app, browsers) -> PasswordPage:
    browser = httpx.Client()
    browsers.append(browser)
    started = start_sign_in(live_server, app, browser)
    shown = parse_page(browser.get(live_server.url + started.response.headers["location"]).text)
    form = shown.form_with("password")
    assert form is not None
    return PasswordPage(browser, started.tx, form.fields)


@dataclass
class Hashing:
    """The argon2 work the password page does: verifications (the dummy's included) and
    new hashes, counted; `during` runs in the first verification, as if another request
    acted while the hash ran."""

    verified: int = 0
    hashed: int = 0
    during: Callable[[], None] | None = None


@pytest.fixture
def hashing(monkeypatch) -> Hashing:
    seen = Hashing()
    real_verify, real_hash = password_check.verify_password, password_check.hash_password

    def counted_verify(password_hash: str, password: str) -> bool:
        seen.verified += 1
        during, seen.during = seen.during, None
        if during is not None:
            during()
        return real_verify(password_hash, password)

    def counted_hash(password: str) -> str:
        seen.hashed += 1
        return real_hash(password)

    monkeypatch.setattr(password_check, "verify_password", counted_verify)
    monkeypatch.setattr(password_check, "verify_dummy", lambda p: counted_verify("", p))
    monkeypatch.setattr(password_check, "hash_password", counted_hash)
    return seen


def failures_counted(server: LiveServer, account_id: str) -> bool:
    verdict = make_throttle(server.services).check(
        kind="password", account_id=account_id, ip="127.0.0.1", now=NOW
    )
    return verdict.resettable


def move_journey(server: LiveServer, tx: str, **values: object) -> None:
    with server.services.sessions.begin() as db:
        db.execute(
            update(LoginTransaction)
            .where(LoginTransaction.id_hash == token_digest(tx))
            .values(**values)
        )


def test_the_usual_password_sends_nothing_through_the_engine(
    live_server, person, page, clock, hashing, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="idp.audit")
    with statements(live_server) as sent:
        moved = page.post(live_server, person.email, person.password)
    assert sent == []  # transaction, account, budget, compare-and-set and audit event
    assert moved.status_code == 303
    assert moved.headers["location"] == f"/signin/code?tx={page.tx}"
    assert (hashing.verified, hashing.hashed) == (1, 0)
    row = transaction(live_server, page.tx)
    assert (row.stage, row.account_id, row.amr) == ("mfa", person.account_id, ["pwd"])
    assert (row.auth_time, row.entered_email, row.error) == (NOW, None, None)
    assert row.completed_at is None
    (event,) = events(live_server, "signin.password_ok", account_id=person.account_id)
    assert (event.client_id, event.ip) == ("web-app", "127.0.0.1")
    assert [r.message for r in caplog.records].count(
        f"signin.password_ok account={person.account_id} actor=None client=web-app"
        " ip=127.0.0.1 {}"
    ) == 1
    assert not failures_counted(live_server, person.account_id)
    assert person.password not in caplog.text


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_on_sqlite_a_held_write_lock_sends_the_verified_attempt_to_the_thread(
    live_server, person, page, clock, hashing
) -> None:
    with write_lock_held_elsewhere(live_server), statements(live_server) as sent:
        moved = page.post(live_server, person.email, person.password)
    # Read and hashed on the loop; the write found the lock held, so the thread wrote it
    # once the lock was free, without hashing again.
    assert {"SELECT", "UPDATE", "INSERT"} <= set(sent)
    assert moved.headers["location"] == f"/signin/code?tx={page.tx}"
    assert (hashing.verified, hashing.hashed) == (1, 0)
    row = transaction(live_server, page.tx)
    assert (row.stage, row.account_id) == ("mfa", person.account_id)
    assert len(events(live_server, "signin.password_ok", account_id=person.account_id)) == 1


def test_a_message_of_an_earlier_attempt_does_not_follow_to_the_next_page(
    live_server, person, page, clock
) -> None:
    move_journey(live_server, page.tx, error="credentials")  # a message never shown
    moved = page.post(live_server, person.email, person.password)
    assert moved.headers["location"] == f"/signin/code?tx={page.tx}"
    assert transaction(live_server, page.tx).error is None
    shown = page.browser.get(live_server.url + moved.headers["location"])
    assert parse_page(shown.text).errors == ""


def test_a_wrong_password_is_hashed_once_counted_and_explained(
    live_server, person, page, clock, hashing
) -> None:
    refused = page.post(live_server, person.email, WRONG)
    assert refused.headers["location"] == f"/signin?tx={page.tx}"
    assert hashing.verified == 1
    assert failures_counted(live_server, person.account_id)
    (event,) = events(live_server, "signin.password_failed", account_id=person.account_id)
    assert (event.client_id, event.ip) == ("web-app", "127.0.0.1")
    row = transaction(live_server, page.tx)
    assert (row.stage, row.account_id, row.entered_email) == ("password", None, person.email)
    assert "Enter a correct email address and password" in page.shown(live_server)


def test_an_unknown_address_takes_the_same_path_and_work(
    live_server, person, page, clock, hashing
) -> None:
    with statements(live_server) as sent:
        refused = page.post(live_server, "nobody@example.org", WRONG)
    assert refused.headers["location"] == f"/signin?tx={page.tx}"
    assert hashing.verified == 1  # the dummy hash
    # As for a known address (the threaded test above): the failure's bookkeeping in a
    # worker thread, after the same reads on the event loop.
    # (SQLite's BEGIN IMMEDIATE is a statement of its own.)
    assert sorted(s for s in sent if s != "BEGIN") == ["INSERT", "SELECT", "UPDATE"]
    (event,) = events(live_server, "signin.password_failed", account_id=None)
    assert event.client_id == "web-app"
    assert "Enter a correct email address and password" in page.shown(live_server)


def test_a_wrong_password_reads_as_an_unknown_address_does(
    live_server, person, page, clock
) -> None:
    with statements(live_server) as sent:
        page.post(live_server, person.email, WRONG)
    with statements(live_server) as unknown:
        page.post(live_server, "nobody@example.org", WRONG)
    assert sorted(sent) == sorted(unknown)  # the reads were the event loop's


def test_a_disabled_account_is_told_after_one_hash(
    live_server, person, page, clock, hashing
) -> None:
    with live_server.services.sessions.begin() as db:
        db.get(Account, person.account_id).disabled_at = NOW
    refused = page.post(live_server, person.email, person.password)
    assert refused.headers["location"] == f"/signin?tx={page.tx}"
    assert hashing.verified == 1
    assert len(events(live_server, "signin.refused", account_id=person.account_id)) == 1
    assert events(live_server, "signin.password_ok", account_id=person.account_id) == []
    assert transaction(live_server, page.tx).stage == "password"
    assert "switched off" in page.shown(live_server)


def test_an_older_hash_is_upgraded_at_sign_in(live_server, person, page, clock, hashing) -> None:
    weak = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(person.password)
    assert needs_rehash(weak)
    with live_server.services.sessions.begin() as db:
        db.get(Account, person.account_id).password_hash = weak
    moved = page.post(live_server, person.email, person.password)
    assert moved.headers["location"] == f"/signin/code?tx={page.tx}"
    assert (hashing.verified, hashing.hashed) == (1, 1)
    with live_server.services.sessions() as db:
        stored = db.get(Account, person.account_id).password_hash
    assert not needs_rehash(stored)
    assert verify_password(stored, person.password)
    assert transaction(live_server, page.tx).stage == "mfa"


def test_an_upgrade_never_puts_back_a_password_changed_meanwhile(live_server, person) -> None:
    with live_server.services.sessions() as db:
        account, _ = password_check.find_account(db, email=person.email)
    assert account is not None
    with live_server.services.sessions.begin() as db:
        db.get(Account, person.account_id).password_hash = "changed by a reset"
    with live_server.services.sessions.begin() as db:
        password_check.rehash(db, account, person.password)
    with live_server.services.sessions() as db:
        assert db.get(Account, person.account_id).password_hash == "changed by a reset"


def test_a_shared_legacy_address_is_told_after_the_right_password(
    live_server, page, clock, hashing
) -> None:
    from idp.accounts.passwords import hash_password

    password = "a legacy pass phrase 7"
    shared = "Counter@Pharmacy.example"
    with live_server.services.sessions.begin() as db:
        for _ in range(2):
            db.add(Account(legacy_email=shared, password_hash=hash_password(password)))
    refused = page.post(live_server, "counter@pharmacy.example", password)
    assert refused.headers["location"] == f"/signin?tx={page.tx}"
    assert hashing.verified == 1  # the first account's hash matched
    assert "unique email address" in page.shown(live_server)
    assert transaction(live_server, page.tx).account_id is None


def test_a_refusal_by_the_failure_budget_hashes_nothing(
    live_server, person, page, clock, hashing
) -> None:
    throttle = make_throttle(live_server.services)
    for _ in range(6):  # past the account's free failures: a delay from NOW
        throttle.record_failure(kind="password", account_id=person.account_id, ip=None, now=NOW)
    refused = page.post(live_server, person.email, person.password)
    assert refused.headers["location"] == f"/signin?tx={page.tx}"
    assert hashing.verified == 0
    assert len(events(live_server, "signin.throttled", account_id=person.account_id)) == 1
    assert "Too many attempts" in page.shown(live_server)
    assert transaction(live_server, page.tx).stage == "password"


def test_failures_to_reset_are_reset_by_the_right_password(
    live_server, person, page, clock, hashing
) -> None:
    assert page.post(live_server, person.email, WRONG).headers["location"].startswith("/signin?")
    assert failures_counted(live_server, person.account_id)
    moved = page.post(live_server, person.email, person.password)
    assert moved.headers["location"] == f"/signin/code?tx={page.tx}"
    assert hashing.verified == 2  # one each
    assert not failures_counted(live_server, person.account_id)


def test_a_wrong_csrf_token_hashes_nothing(live_server, person, page, clock, hashing) -> None:
    refused = page.post(live_server, person.email, person.password, csrf_token="forged")
    assert refused.headers["location"] == f"/signin?tx={page.tx}"
    assert hashing.verified == 0
    assert "nothing was sent" in page.shown(live_server)
    assert transaction(live_server, page.tx).account_id is None


def test_a_journey_moved_on_during_the_hash_is_not_overwritten(
    live_server, person, page, clock, hashing
) -> None:
    """Another tab's password passed while this one's hash ran: the compare-and-set finds
    the journey at the code stage, and the thread sends this tab there too."""
    other = register_person(live_server, email="sam@example.org")

    def other_tab() -> None:
        move_journey(live_server, page.tx, stage="mfa", account_id=other.account_id, amr=["pwd"])

    hashing.during = other_tab
    answered = page.post(live_server, person.email, person.password)
    assert answered.headers["location"] == f"/signin/code?tx={page.tx}"
    assert hashing.verified == 1
    assert transaction(live_server, page.tx).account_id == other.account_id
    assert events(live_server, "signin.password_ok", account_id=person.account_id) == []


def test_a_journey_that_expired_during_the_hash_is_not_moved_on(
    live_server, person, page, clock, hashing
) -> None:
    hashing.during = lambda: move_journey(
        live_server, page.tx, expires_at=NOW - dt.timedelta(seconds=1)
    )
    answered = page.post(live_server, person.email, person.password)
    assert answered.headers["location"] == f"/signin?tx={page.tx}"
    assert transaction(live_server, page.tx).account_id is None
    assert events(live_server, "signin.password_ok", account_id=person.account_id) == []
    assert page.browser.get(live_server.url + answered.headers["location"]).status_code == 410


def test_a_wrong_guess_counts_though_the_journey_moved_on(
    live_server, person, page, clock, hashing
) -> None:
    hashing.during = lambda: move_journey(live_server, page.tx, stage="mfa")
    answered = page.post(live_server, person.email, WRONG)
    assert answered.headers["location"] == f"/signin/code?tx={page.tx}"
    assert hashing.verified == 1
    assert failures_counted(live_server, person.account_id)
    assert len(events(live_server, "signin.password_failed", account_id=person.account_id)) == 1


def test_with_the_failure_budget_in_redis_the_threaded_path_answers(database_url) -> None:
    """With `IDP_REDIS_URL` the counters are in Redis, which the loop's read would not
    see: the loop takes no part, and Redis's lock holds."""
    from tests.accounts._throttle_harness import redis_or_skip, redis_url

    redis_or_skip()
    server = start_live_server(database_url, redis_url=redis_url())
    browser = httpx.Client()
    try:
        app = register_client(server, client_id="web-app")
        person = register_person(server)
        throttle = make_throttle(server.services)
        for _ in range(100):  # the account's hard stop
            throttle.record_failure(kind="password", account_id=person.account_id, ip=None, now=NOW)
        try:
            started = start_sign_in(server, app, browser)
            shown = browser.get(server.url + started.response.headers["location"])
            form = parse_page(shown.text).form_with("password")
            assert form is not None
            data = {**form.fields, "email": person.email, "password": person.password}
            refused = browser.post(f"{server.url}/signin?tx={started.tx}", data=data)
            assert refused.headers["location"] == f"/signin?tx={started.tx}"
            again = browser.get(f"{server.url}/signin?tx={started.tx}")
            assert "cannot sign in until support clears it" in parse_page(again.text).errors
        finally:
            throttle.reset_account(account_id=person.account_id)
    finally:
        browser.close()
        server.stop()
        server.services.engine.dispose()
