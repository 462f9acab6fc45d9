"""The token, introspection and revocation endpoints in front of the app
(idp.web.fast_protocol), over real HTTP: the headers every response gets, bad input, and
the `client_credentials` short-cut on the event loop falling back to a worker thread."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from idp.app import create_app
from idp.oauth import client_cache
from idp.oauth.server import get_oauth_server
from idp.web.fast_protocol import MAX_BODY_BYTES
from idp.web.security import content_security_policy
from tests.conftest import LiveServer
from tests.flows.oidc import RegisteredClient, introspect, register_client
from tests.loops import run_on_fresh_loop

SECURITY_HEADERS = {
    "content-security-policy": content_security_policy(),
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
}


@pytest.fixture
def machine(live_server: LiveServer) -> RegisteredClient:
    return register_client(live_server, grant_types=["client_credentials"], scope="pharmacy.read")


def _client_credentials(server: LiveServer, app: RegisteredClient, **data: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}/token",
        data={"grant_type": "client_credentials", **data},
        auth=(app.client_id, app.client_secret or ""),
    )


def _assert_security_headers(response: httpx.Response) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, name


def test_a_token_response_is_json_never_cached_with_the_security_headers(
    live_server: LiveServer, machine: RegisteredClient
) -> None:
    response = _client_credentials(live_server, machine)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"
    _assert_security_headers(response)
    token = response.json()
    assert token["token_type"] == "Bearer"
    assert token["scope"] == "pharmacy.read"
    assert introspect(live_server, machine, token["access_token"])["active"] is True


def test_a_wrong_secret_is_refused_also_when_the_client_is_cached(
    live_server: LiveServer, machine: RegisteredClient
) -> None:
    assert _client_credentials(live_server, machine).status_code == 200  # now cached
    wrong = RegisteredClient(machine.client_id, "not-the-secret")
    response = _client_credentials(live_server, wrong)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert "access_token" not in response.text
    _assert_security_headers(response)


def test_client_credentials_is_answered_on_the_event_loop_once_the_client_is_cached(
    live_server: LiveServer, machine: RegisteredClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = get_oauth_server(live_server.services)
    in_threads: list[str] = []
    run = server.run

    async def counted(func: Callable[..., Any], *args: Any, read_only: bool = False) -> Any:
        in_threads.append(getattr(func, "__name__", ""))
        return await run(func, *args, read_only=read_only)

    monkeypatch.setattr(server, "run", counted)
    assert _client_credentials(live_server, machine).status_code == 200  # reads the client
    assert in_threads == ["create_token_response"]
    for _ in range(3):
        assert _client_credentials(live_server, machine).status_code == 200
    assert in_threads == ["create_token_response"]  # no worker thread, no database


def test_a_client_changed_here_is_read_again_before_the_next_token(
    live_server: LiveServer, machine: RegisteredClient
) -> None:
    assert _client_credentials(live_server, machine).status_code == 200  # cached
    with live_server.services.sessions() as db, db.begin():
        from idp.models import Client

        row = db.get(Client, machine.client_id)
        assert row is not None
        db.delete(row)
    response = _client_credentials(live_server, machine)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


@pytest.mark.parametrize("path", ["/token", "/introspect", "/revoke"])
def test_a_body_over_the_limit_is_refused_with_413(
    live_server: LiveServer, machine: RegisteredClient, path: str
) -> None:
    response = httpx.post(
        f"{live_server.url}{path}",
        content=b"grant_type=client_credentials&pad=" + b"x" * MAX_BODY_BYTES,
        headers={"content-type": "application/x-www-form-urlencoded"},
        auth=(machine.client_id, machine.client_secret or ""),
    )
    assert response.status_code == 413
    assert response.json()["error"] == "invalid_request"
    _assert_security_headers(response)


@pytest.mark.parametrize(
    "body", [b"grant_type=client_credentials&scope=%ff", b"grant_type=client_\xffcredentials"]
)
def test_a_form_that_is_not_utf8_is_invalid_request(
    live_server: LiveServer, machine: RegisteredClient, body: bytes
) -> None:
    response = httpx.post(
        f"{live_server.url}/token",
        content=body,
        headers={"content-type": "application/x-www-form-urlencoded"},
        auth=(machine.client_id, machine.client_secret or ""),
    )
    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid_request",
        "error_description": "The request is not UTF-8 form encoded.",
    }


def test_a_body_that_is_not_a_form_has_no_parameters(
    live_server: LiveServer, machine: RegisteredClient
) -> None:
    response = httpx.post(
        f"{live_server.url}/token",
        json={"grant_type": "client_credentials"},
        auth=(machine.client_id, machine.client_secret or ""),
    )
    assert response.status_code == 400
    assert response.json()["error"] == "unsupported_grant_type"


@pytest.mark.parametrize("path", ["/token", "/introspect", "/revoke"])
def test_other_methods_are_405_with_allow(live_server: LiveServer, path: str) -> None:
    response = httpx.get(f"{live_server.url}{path}")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.json()["error"] == "invalid_request"
    _assert_security_headers(response)


def test_a_database_failure_is_a_logged_500_without_detail(
    live_server: LiveServer, machine: RegisteredClient, caplog: pytest.LogCaptureFixture
) -> None:
    client_cache.invalidate_all()  # the next request must read the client
    with live_server.services.engine.begin() as conn:
        conn.execute(text("ALTER TABLE clients RENAME TO clients_gone"))
    try:
        response = _client_credentials(live_server, machine)
    finally:
        with live_server.services.engine.begin() as conn:
            conn.execute(text("ALTER TABLE clients_gone RENAME TO clients"))
    assert response.status_code == 500
    assert response.json() == {
        "error": "server_error",
        "error_description": "Something went wrong.",
    }
    assert "clients" not in response.text
    _assert_security_headers(response)


def test_introspection_by_a_cached_client_with_a_wrong_secret_is_refused(
    live_server: LiveServer, machine: RegisteredClient
) -> None:
    token = _client_credentials(live_server, machine).json()["access_token"]  # now cached
    assert introspect(live_server, machine, token)["active"] is True
    response = httpx.post(
        f"{live_server.url}/introspect",
        data={"token": token},
        auth=(machine.client_id, "not-the-secret"),
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert "active" not in response.text


@pytest.mark.parametrize("hint", ["access_token", "refresh_token", "unknown_kind", ""])
def test_introspection_and_revocation_hints_order_the_search_and_never_limit_it(
    live_server: LiveServer, machine: RegisteredClient, hint: str
) -> None:
    """RFC 7662 2.1 and RFC 7009 2.1: a wrong hint only costs a longer search, and one
    the server does not know is ignored."""
    token = _client_credentials(live_server, machine).json()["access_token"]
    auth = (machine.client_id, machine.client_secret or "")
    form = {"token": token, "token_type_hint": hint}
    response = httpx.post(f"{live_server.url}/introspect", data=form, auth=auth)
    assert response.status_code == 200
    assert response.json()["active"] is True
    assert httpx.post(f"{live_server.url}/revoke", data=form, auth=auth).status_code == 200
    assert introspect(live_server, machine, token) == {"active": False}


def test_a_request_cut_off_mid_body_is_not_acted_on(
    live_server: LiveServer, machine: RegisteredClient
) -> None:
    app = create_app(services=live_server.services)
    basic = base64.b64encode(f"{machine.client_id}:{machine.client_secret}".encode())
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/token",
        "query_string": b"",
        "headers": [
            (b"content-type", b"application/x-www-form-urlencoded"),
            (b"authorization", b"Basic " + basic),
        ],
    }
    incoming = [
        {"type": "http.request", "body": b"grant_type=client_credentials", "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    run_on_fresh_loop(app(scope, receive, send))
    assert sent == []  # no token issued for a request that never arrived whole
