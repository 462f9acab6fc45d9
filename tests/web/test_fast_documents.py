"""The discovery and JWKS short-cut in front of the app (idp.web.fast_documents): same
bytes and headers as the routes behind it, the keyring re-check off the event loop."""

from __future__ import annotations

import asyncio
import datetime as dt

import httpx
import pytest
from fastapi.testclient import TestClient

from idp.app import Services, create_app
from idp.oauth.keyring import KeyRing, get_keyring
from idp.oauth.keys import rotate_keys
from idp.oauth.metadata import discovery_bytes
from idp.web.security import content_security_policy
from tests.clock import Clock

ROUTE_HEADERS = {
    "content-type": "application/json",
    "access-control-allow-origin": "*",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
    "content-security-policy": content_security_policy(),
}


def _headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k not in {"date", "server"}}


@pytest.mark.parametrize(
    "path", ["/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"]
)
def test_discovery_is_answered_with_the_route_headers(services: Services, path: str) -> None:
    with TestClient(create_app(services=services)) as client:
        response = client.get(path + "?ignored=1")
    assert response.status_code == 200
    assert response.content == discovery_bytes(services.settings)
    assert _headers(response) == {
        **ROUTE_HEADERS,
        "cache-control": "public, max-age=3600",
        "content-length": str(len(response.content)),
    }


def test_jwks_is_answered_from_the_keyring_with_the_route_headers(services: Services) -> None:
    with TestClient(create_app(services=services)) as client:
        response = client.get("/jwks.json")
    assert response.status_code == 200
    assert response.content == get_keyring(services).jwks_bytes()
    assert _headers(response) == {
        **ROUTE_HEADERS,
        "cache-control": "public, max-age=300",
        "content-length": str(len(response.content)),
    }


def test_other_methods_and_paths_reach_the_app(services: Services) -> None:
    with TestClient(create_app(services=services)) as client:
        assert client.post("/jwks.json").status_code == 405
        assert client.post("/.well-known/openid-configuration").status_code == 405
        assert client.get("/jwks.json/x").status_code == 404


def test_hsts_is_sent_when_the_issuer_is_https(services: Services) -> None:
    settings = services.settings.model_copy(update={"issuer": "https://idp.example"})
    with TestClient(create_app(services=Services(**{**vars(services), "settings": settings}))) as c:
        response = c.get("/.well-known/openid-configuration")
    assert response.headers["strict-transport-security"] == "max-age=31536000"
    assert response.json()["issuer"] == "https://idp.example"


def test_without_a_loaded_keyring_the_jwks_route_loads_it(services: Services) -> None:
    app = create_app(services=services)
    client = TestClient(app)  # no lifespan: nothing warmed up
    assert "keyring" not in services.extras
    response = client.get("/jwks.json")
    assert response.status_code == 200
    assert response.content == get_keyring(services).jwks_bytes()


def test_the_due_recheck_runs_in_a_worker_thread_and_is_served(services: Services) -> None:
    clock = Clock()
    ring = KeyRing(services.sessions, services.encryptor, now=clock)
    ring.ensure_keys()
    services.extras["keyring"] = ring
    on_loop: list[bool] = []
    original = ring.maybe_refresh

    def spy() -> None:
        try:
            asyncio.get_running_loop()
            on_loop.append(True)
        except RuntimeError:  # no loop here: a worker thread
            on_loop.append(False)
        original()

    ring.maybe_refresh = spy  # type: ignore[method-assign]
    with TestClient(create_app(services=services)) as client:
        before = {k["kid"] for k in client.get("/jwks.json").json()["keys"]}
        assert on_loop == []  # not due: no re-check at all
        with services.sessions() as db, db.begin():
            created = rotate_keys(
                db,
                encryptor=services.encryptor,
                now=clock.now,
                activation_delay=dt.timedelta(minutes=15),
                retire_after=dt.timedelta(minutes=11),
            )
        clock.now += dt.timedelta(seconds=6)
        after = {k["kid"] for k in client.get("/jwks.json").json()["keys"]}
    assert after == before | {row.kid for row in created}
    assert on_loop == [False]
