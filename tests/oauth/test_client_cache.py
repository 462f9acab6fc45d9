"""The in-process client cache (idp.oauth.client_cache): a fresh entry saves the read,
an expired one is read again, and this process's own changes are seen at once."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import delete, update

from idp.admin.clients import create_client, delete_client
from idp.app import Services
from idp.crypto import token_digest
from idp.models import Client
from idp.oauth.client_cache import ClientCache, ClientSnapshot
from idp.oauth.server import IdpAuthorizationServer
from tests.conftest import LiveServer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _machine(services: Services) -> tuple[str, str]:
    with services.sessions() as db, db.begin():
        client, secret = create_client(
            db,
            name="Machine",
            redirect_uris=["https://rp.example/cb"],
            grant_types=["client_credentials"],
            scope="reports:read",
        )
        assert secret is not None
        return client.client_id, secret


def _elsewhere(services: Services, statement: object) -> None:
    """A change as another process makes it: SQL this process's ORM does not see."""
    with services.sessions() as db, db.begin():
        db.execute(statement.execution_options(synchronize_session=False))  # type: ignore[attr-defined]


def _get(services: Services, cache: ClientCache, client_id: str) -> ClientSnapshot | None:
    with services.read_sessions() as db:
        return cache.get(db, client_id)


def test_other_processes_changes_are_seen_after_the_ttl(services: Services) -> None:
    client_id, _ = _machine(services)
    clock = Clock()
    cache = ClientCache(ttl_seconds=5, clock=clock)
    first = _get(services, cache, client_id)
    assert first is not None
    assert first.grant_types == ("client_credentials",)
    _elsewhere(services, delete(Client).where(Client.client_id == client_id))
    clock.now += 4.9
    assert _get(services, cache, client_id) is first  # bounded staleness
    clock.now += 0.2
    assert _get(services, cache, client_id) is None
    assert _get(services, cache, client_id) is None  # unknown ids are not cached


def test_this_processes_changes_are_seen_at_once(services: Services) -> None:
    client_id, _ = _machine(services)
    cache = ClientCache(ttl_seconds=3600, clock=Clock())
    assert _get(services, cache, client_id) is not None
    with services.sessions() as db, db.begin():
        row = db.get(Client, client_id)
        assert row is not None
        row.client_secret_hash = token_digest("a new secret")
    cached = _get(services, cache, client_id)
    assert cached is not None
    assert cached.client_secret_hash == token_digest("a new secret")
    with services.sessions() as db, db.begin():
        delete_client(db, client_id=client_id)
    assert _get(services, cache, client_id) is None


def test_a_rolled_back_change_keeps_the_cache_valid(services: Services) -> None:
    client_id, _ = _machine(services)
    cache = ClientCache(ttl_seconds=3600, clock=Clock())
    before = _get(services, cache, client_id)
    with services.sessions() as db, db.begin():
        row = db.get(Client, client_id)
        assert row is not None
        row.scope = "reports:write"
        db.flush()
        db.rollback()
    # The flush made the entry stale: it is read again, and the row is unchanged.
    after = _get(services, cache, client_id)
    assert after == before
    assert after is not before


def test_snapshots_are_immutable(services: Services) -> None:
    client_id, _ = _machine(services)
    snapshot = _get(services, ClientCache(), client_id)
    assert snapshot is not None
    with pytest.raises(AttributeError):
        snapshot.scope = "everything"  # type: ignore[misc]
    assert isinstance(snapshot.redirect_uris, tuple)


def _token(server: LiveServer, client_id: str, secret: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}/token",
        data={"grant_type": "client_credentials"},
        auth=(client_id, secret),
    )


def _cache_for_5_seconds(services: Services) -> Clock:
    """Serve with a client cache of a 5 s TTL on a clock the test moves."""
    clock = Clock()
    services.extras["oauth_server"] = IdpAuthorizationServer(
        services, clients=ClientCache(ttl_seconds=5, clock=clock)
    )
    return clock


def test_a_client_deleted_elsewhere_stops_working_after_the_ttl(live_server: LiveServer) -> None:
    services = live_server.services
    clock = _cache_for_5_seconds(services)
    client_id, secret = _machine(services)
    assert _token(live_server, client_id, secret).status_code == 200
    _elsewhere(services, delete(Client).where(Client.client_id == client_id))
    assert _token(live_server, client_id, secret).status_code == 200  # within the TTL
    clock.now += 5
    response = _token(live_server, client_id, secret)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


def test_a_secret_changed_elsewhere_is_honoured_after_the_ttl(live_server: LiveServer) -> None:
    services = live_server.services
    clock = _cache_for_5_seconds(services)
    client_id, secret = _machine(services)
    assert _token(live_server, client_id, secret).status_code == 200
    _elsewhere(
        services,
        update(Client)
        .where(Client.client_id == client_id)
        .values(client_secret_hash=token_digest("replaced")),
    )
    clock.now += 5
    assert _token(live_server, client_id, secret).status_code == 401
    assert _token(live_server, client_id, "replaced").status_code == 200


def test_introspection_and_userinfo_do_not_wait_for_sqlites_write_lock(
    live_server: LiveServer,
) -> None:
    """Read-only endpoints run in deferred transactions: a writer holding SQLite's lock
    (for up to the 30 s busy timeout) does not hold them up."""
    import sqlite3

    services = live_server.services
    if services.engine.dialect.name != "sqlite":
        pytest.skip("SQLite's write lock")
    client_id, secret = _machine(services)
    access_token = _token(live_server, client_id, secret).json()["access_token"]
    writer = sqlite3.connect(services.engine.url.database or "", isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        response = httpx.post(
            f"{live_server.url}/introspect",
            data={"token": access_token},
            auth=(client_id, secret),
            timeout=5,
        )
        assert response.status_code == 200
        assert response.json()["active"] is True
        response = httpx.get(
            f"{live_server.url}/userinfo",
            headers={"Authorization": f"Bearer {access_token}"},
            timeout=5,
        )
        assert response.status_code == 403  # no person behind it: insufficient_scope
    finally:
        writer.rollback()
        writer.close()
