"""How many SQL statements the hot token paths send (issue 5: one round trip where one
suffices). A count that grows is a performance regression; these fail on it."""

from __future__ import annotations

import base64
import json
import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from idp import loop_sqlite
from idp.oauth.server import get_oauth_server
from tests.conftest import LiveServer
from tests.flows.oidc import (
    introspect,
    register_client,
    register_person,
    signed_in_browser,
)
from tests.flows.test_tokens import pkce_client, refresh, tokens_for


@contextmanager
def statements(server: LiveServer) -> Iterator[list[str]]:
    """Every statement the server's engine sends while the block runs."""
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        sent.append(statement.split(None, 1)[0].upper())

    engine = server.services.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", record)


@pytest.fixture
def browser(live_server: LiveServer) -> httpx.Client:
    return signed_in_browser(live_server, register_person(live_server))


def _no_begin(sent: list[str]) -> list[str]:
    # SQLite's explicit BEGIN (idp.db) is a statement on the connection, not a round trip
    # to a server: leave it out so both backends count the same.
    return [s for s in sent if s != "BEGIN"]


def test_refresh_rotation_statements(live_server, app, browser) -> None:
    first = tokens_for(live_server, pkce_client(live_server, app), browser)
    refresh(live_server, app, first["refresh_token"])  # the client is cached now
    second = tokens_for(live_server, pkce_client(live_server, app), browser)
    with statements(live_server) as sent:
        assert refresh(live_server, app, second["refresh_token"]).status_code == 200
    # Find-and-rotate in one UPDATE ... RETURNING; insert the new token. SQLite's
    # RETURNING cannot name the grant: it reads it apart (in-process, no round trip).
    # PostgreSQL runs the same two statements on the event loop (idp.async_db), not
    # through the engine (tests/flows/test_tokens.py covers what they do).
    if live_server.services.engine.dialect.name == "sqlite":
        assert _no_begin(sent) == ["UPDATE", "SELECT", "INSERT"]
    else:
        assert sent == []


def test_access_token_introspection_reads_outside_the_engine(live_server, app, browser) -> None:
    """Introspection of an access token verifies it on the event loop and reads its
    revocation with one statement outside the engine (PostgreSQL: `idp.async_db`;
    SQLite: the loop's own connection, `idp.loop_sqlite`): nothing goes through the
    engine, and a revocation still shows at once."""
    token = tokens_for(live_server, pkce_client(live_server, app), browser)
    introspect(live_server, app, token["access_token"])  # the client is cached now
    with statements(live_server) as sent:
        assert introspect(live_server, app, token["access_token"])["active"] is True
    assert sent == []
    revoked = httpx.post(
        f"{live_server.url}/revoke",
        data={"token": token["access_token"]},
        auth=(app.client_id, app.client_secret or ""),
    )
    assert revoked.status_code == 200
    with statements(live_server) as sent:
        assert introspect(live_server, app, token["access_token"]) == {"active": False}
    assert sent == []


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_introspection_waits_in_a_thread_for_a_database_held_by_another(
    live_server, app, browser
) -> None:
    """SQLite: the event loop never waits on the database. While another process holds
    it exclusively, the loop's read fails at once and a worker thread's read waits its
    turn (the engine's busy timeout); the answer reflects what that process committed."""
    token = tokens_for(live_server, pkce_client(live_server, app), browser)
    introspect(live_server, app, token["access_token"])  # the client is cached now
    payload = token["access_token"].split(".")[1]
    jti = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["jti"]
    # Another process takes the database for itself. SQLite allows that only while no
    # other connection has read it (each keeps a shared lock), so the server's pooled
    # connections and the event loop's are closed first; they open again when needed.
    live_server.services.engine.dispose()
    reader = get_oauth_server(live_server.services)._loop_reader
    assert reader is not None
    reader.close()
    loop_sqlite.close_all(live_server.services)  # the sign-in's
    holder = sqlite3.connect(
        str(live_server.services.engine.url.database), isolation_level=None, check_same_thread=False
    )
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute(  # what `POST /revoke` writes, committed only when the holder lets go
        "INSERT INTO revoked_access_tokens (jti, revoked_at, expires_at) VALUES (?, ?, ?)",
        (jti, "2026-01-01 00:00:00.000000", "2999-01-01 00:00:00.000000"),
    )

    with ThreadPoolExecutor(1) as pool:
        try:
            pending = pool.submit(introspect, live_server, app, token["access_token"])
            time.sleep(0.3)  # for it to reach the database
            # Meanwhile the event loop answers others: it is not waiting on the database.
            # (A loop that waited would never answer: the lock is let go only below.)
            discovery = f"{live_server.url}/.well-known/openid-configuration"
            assert httpx.get(discovery, timeout=2).is_success
            assert not pending.done()  # the worker thread still waits its turn
        finally:
            holder.execute("COMMIT")
            holder.close()
        assert pending.result(timeout=30) == {"active": False}


def test_client_credentials_statements(live_server) -> None:
    machine = register_client(live_server, grant_types=["client_credentials"], scope="reports:read")

    def token() -> httpx.Response:
        return httpx.post(
            f"{live_server.url}/token",
            data={"grant_type": "client_credentials"},
            auth=(machine.client_id, machine.client_secret or ""),
        )

    assert token().status_code == 200
    with statements(live_server) as sent:
        assert token().status_code == 200
    assert _no_begin(sent) == []  # the cached client; nothing is stored
