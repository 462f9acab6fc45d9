"""`idp keys list` and `idp keys rotate`, run as the installed command in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import httpx

from idp.app import Services
from idp.oauth.keyring import get_keyring
from tests.conftest import LiveServer


def idp(database_url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "IDP_DATABASE_URL": database_url, **env}
    return subprocess.run(
        [sys.executable, "-m", "idp", *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
        check=False,
    )


def as_json(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_rotate_publishes_new_keys_that_sign_after_the_delay(
    database_url: str, services: Services
) -> None:
    ring = get_keyring(services)
    old = {alg: ring.signing_key(alg).kid for alg in ("RS256", "ES256")}

    listed = as_json(idp(database_url, "keys", "list", "--json"))["keys"]
    assert {(k["alg"], k["kid"], k["state"], k["signing"]) for k in listed} == {
        ("RS256", old["RS256"], "active", True),
        ("ES256", old["ES256"], "active", True),
    }
    assert not any("private" in key or "d" in key for key in listed)

    rotated = as_json(idp(database_url, "keys", "rotate", "--json"))
    created = {key["alg"]: key for key in rotated["created"]}
    assert set(created) == {"RS256", "ES256"}
    for key in created.values():
        assert key["state"] == "pending"
        assert key["signing"] is False
    states = {key["kid"]: key for key in rotated["keys"]}
    for kid in old.values():
        assert states[kid]["state"] == "retiring"
        assert states[kid]["signing"] is True
        assert states[kid]["retired_at"] is not None

    # The running process's keyring publishes the new keys without a restart, and still
    # signs with the old ones until the activation delay passes.
    assert ring.refresh() is True
    assert {key["kid"] for key in ring.jwks()["keys"]} == set(old.values()) | {
        key["kid"] for key in created.values()
    }
    assert ring.signing_key().kid == old["RS256"]


def test_rotate_warns_when_the_delay_is_shorter_than_the_jwks_cache(database_url: str) -> None:
    result = idp(database_url, "keys", "rotate", IDP_KEY_ACTIVATION_DELAY_SECONDS="60")
    assert result.returncode == 0, result.stderr
    assert "shorter than the JWKS cache lifetime" in result.stderr
    assert "published new keys" in result.stdout


def test_keys_rotated_by_the_cli_reach_a_running_server(live_server: LiveServer) -> None:
    url = live_server.services.settings.database_url
    before = {k["kid"] for k in httpx.get(f"{live_server.url}/jwks.json").json()["keys"]}
    created = as_json(idp(url, "keys", "rotate", "--json"))["created"]
    get_keyring(live_server.services).refresh()  # what the 5 s re-check would do
    after = {k["kid"] for k in httpx.get(f"{live_server.url}/jwks.json").json()["keys"]}
    assert after == before | {key["kid"] for key in created}


def test_retire_withdraws_a_key_and_its_successor_takes_over(
    database_url: str, services: Services
) -> None:
    ring = get_keyring(services)
    leaked = ring.signing_key().kid
    created = as_json(idp(database_url, "keys", "rotate", "--json"))["created"]
    successor = next(key["kid"] for key in created if key["alg"] == "RS256")

    result = idp(database_url, "keys", "retire", "--kid", leaked, "--json")
    data = as_json(result)
    assert data["retired"]["kid"] == leaked
    assert data["retired"]["state"] == "retired"
    assert "warning" not in result.stderr  # a successor is published

    ring.refresh()
    assert leaked not in {key["kid"] for key in ring.jwks()["keys"]}
    assert ring.signing_key().kid == successor


def test_retire_of_an_unknown_kid_fails_with_one_line(database_url: str) -> None:
    result = idp(database_url, "keys", "retire", "--kid", "no-such-kid")
    assert result.returncode != 0
    assert "no signing key has kid 'no-such-kid'" in result.stderr
    assert "Traceback" not in result.stderr


def test_retiring_the_last_key_of_an_alg_warns(database_url: str, services: Services) -> None:
    es256 = get_keyring(services).signing_key("ES256").kid
    result = idp(database_url, "keys", "retire", "--kid", es256)
    assert result.returncode == 0, result.stderr
    assert "no other ES256 key is published" in result.stderr
