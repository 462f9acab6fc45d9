"""Fixtures of the journeys' tests: a relying party, a person, the pages' clock, and
browsers closed after each test."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import LiveServer
from tests.flows.oidc import Person, RegisteredClient, register_client, register_person
from tests.flows.pages import NOW


@pytest.fixture
def app(live_server: LiveServer) -> RegisteredClient:
    """A first-party web app."""
    return register_client(live_server, client_id="web-app")


@pytest.fixture
def person(live_server: LiveServer) -> Person:
    """An account with a password and an authenticator."""
    return register_person(live_server)


@pytest.fixture
def clock(live_server: LiveServer) -> Iterator[list[dt.datetime]]:
    """The pages' clock, frozen at `NOW` (tests move it by setting `clock[0]`)."""
    now = [NOW]
    live_server.services.extras["clock"] = lambda: now[0]
    yield now
    live_server.services.extras.pop("clock", None)


@pytest.fixture
def browsers() -> Iterator[list[httpx.Client]]:
    """Browsers (cookie jars) a test opens, closed when it ends."""
    opened: list[httpx.Client] = []
    yield opened
    for browser in opened:
        browser.close()
