"""How many SQL statements the hosted sign-in pages send (issue 5: the sign-in flow's CPU
is mostly per-statement work). Each page reads its login transaction, its client and
(on the code pages) the authenticator in one statement (a page view on the event loop),
and a POST writes the transaction once; a clean sign-in resets no failure counters,
since it saw none."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urljoin

import httpx
import pytest
from sqlalchemy import Engine, event

from idp.accounts import sessions
from idp.accounts.throttle import make_throttle
from tests.conftest import LiveServer
from tests.flows.oidc import register_client, register_person
from tests.flows.signin import parse_page, start_sign_in, totp_code


@contextmanager
def statements(engine: Engine) -> Iterator[list[str]]:
    """The first word of every statement `engine` sends while the block runs, BEGIN left
    out (SQLite's explicit BEGIN is no round trip to a server)."""
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        word = statement.split(None, 1)[0].upper()
        if word != "BEGIN":
            sent.append(word)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", record)


def test_hosted_sign_in_statements(live_server: LiveServer, monkeypatch) -> None:
    monkeypatch.setattr(sessions, "PURGE_ONE_IN", 10**9)  # no occasional purge DELETE
    app = register_client(live_server, client_id="web-app")
    person = register_person(live_server)
    engine = live_server.services.engine
    throttle_engine: Engine = make_throttle(live_server.services).engine  # type: ignore[attr-defined]
    browser = httpx.Client(follow_redirects=False)
    started = start_sign_in(live_server, app, browser)
    url = urljoin(live_server.url, started.response.headers["location"])
    sent: dict[str, list[str]] = {}
    throttled: dict[str, list[str]] = {}

    def step(name: str, send: Any) -> httpx.Response:
        with statements(engine) as main, statements(throttle_engine) as counters:
            response: httpx.Response = send()
        sent[name], throttled[name] = sorted(main), counters
        return response

    page = step("GET /signin", lambda: browser.get(url))
    form = parse_page(page.text).form_with("password")
    assert form is not None
    values = {**form.fields, "email": person.email, "password": person.password}
    moved = step("POST /signin", lambda: browser.post(url, data=values))
    assert moved.status_code == 303
    code_url = urljoin(live_server.url, moved.headers["location"])
    page = step("GET /signin/code", lambda: browser.get(code_url))
    form = parse_page(page.text).form_with("code")
    assert form is not None
    values = {**form.fields, "code": totp_code(person.totp_secret)}
    done = step("POST /signin/code", lambda: browser.post(code_url, data=values))
    assert done.status_code == 303
    assert done.headers["location"].startswith("/authorize/resume?tx=")
    if throttle_engine is engine:
        pytest.skip("the throttle shares the engine: counted apart only on its own engine")
    assert sent == {
        # Page views read transaction, client and (code page) whether there is an
        # authenticator in one SELECT on the event loop (idp.loop_reads), not here.
        "GET /signin": [],
        "GET /signin/code": [],
        # Transaction with client and account with has-authenticator, and the failure
        # budget's counters, read before the hash; after it the transaction moved on with
        # its audit event: all of it on the event loop (idp.web.pages.password_on_loop).
        "POST /signin": [],
        # Transaction with client and authenticator, the budget, the code's single-use
        # step, the session, the audit event and the transaction: on the event loop too
        # (idp.web.pages.code_on_loop).
        "POST /signin/code": [],
    }
    # The checks were the event loop's; no DELETE to reset counters that did not exist.
    assert throttled == {
        "GET /signin": [],
        "GET /signin/code": [],
        "POST /signin": [],
        "POST /signin/code": [],
    }
