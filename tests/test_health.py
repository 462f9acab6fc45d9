"""Liveness and readiness over real HTTP."""

from __future__ import annotations

import httpx

from tests.conftest import LiveServer


def test_healthz_and_readyz_on_a_migrated_database(live_server: LiveServer) -> None:
    assert httpx.get(f"{live_server.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{live_server.url}/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok"}
