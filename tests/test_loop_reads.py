"""idp.loop_reads: Core SELECTs on the event loop return the rows a session returns, on
both backends; a read that cannot be made at once says so instead of waiting; and the
hosted pages that read this way answer exactly as their threaded path would."""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
import time
from collections.abc import Iterator
from typing import Any, cast

import httpx
import pytest
from sqlalchemy import Table, TypeDecorator, bindparam, select
from sqlalchemy.engine import Dialect
from sqlalchemy.types import String

from idp.app import Services
from idp.crypto import token_digest
from idp.loop_reads import LoopQuery, NotReadAtOnce, loop_reads
from idp.models import Client, LoginTransaction
from idp.web.pages import transactions
from tests.conftest import LiveServer
from tests.flows.oidc import register_client, register_person
from tests.flows.signin import parse_page, start_sign_in
from tests.loops import run_on_fresh_loop

NOW = dt.datetime(2026, 12, 3, 9, 30, 15, 123456, tzinfo=dt.UTC)


def run(services: Services, coroutine: Any) -> Any:
    """Run `coroutine` on a fresh event loop of its own, closing the loop's PostgreSQL connections
    (they belong to that loop) before it ends."""
    from idp.async_db import AsyncDatabase

    async def main() -> Any:
        try:
            return await coroutine
        finally:
            db = services.extras.pop("async_db", None)
            if isinstance(db, AsyncDatabase):
                await db.close()

    return run_on_fresh_loop(main())


@pytest.fixture
def loop_services(services: Services) -> Iterator[Services]:
    yield services
    reads = services.extras.pop("loop_reads", None)
    if reads is not None:
        reads.close()


def add_transaction(services: Services, tx: str, **values: Any) -> None:
    with services.sessions.begin() as db:
        if db.get(Client, "loop-client") is None:
            db.add(
                Client(
                    client_id="loop-client",
                    name="Loop app",
                    service_name="OcularOutcomes",
                    first_party=True,
                    redirect_uris=["https://app.example/cb"],
                )
            )
        fields: dict[str, Any] = {
            "id_hash": token_digest(tx),
            "client_id": "loop-client",
            "params": {"redirect_uri": "https://app.example/cb", "acr_values": "mfa"},
            "csrf_token": "c" * 43,
            "amr": ["pwd"],
            "auth_time": NOW,
            "created_at": NOW,
            "expires_at": NOW + dt.timedelta(minutes=30),
            "stage": "password",
            **values,
        }
        db.add(LoginTransaction(**fields))


def test_a_row_read_on_the_loop_is_the_row_a_session_reads(loop_services: Services) -> None:
    add_transaction(loop_services, "tx-a", entered_email="pat@example.org")
    statement = transactions._LOOP_LOADS[True]
    values = {"id_hash": token_digest("tx-a")}
    with loop_services.read_sessions() as db:
        expected = tuple(db.execute(statement, values).one())
    found = run(loop_services, loop_reads(loop_services).fetch_one(statement, values))
    assert found == expected
    # The types a session gives: aware UTC datetimes, JSON as Python, booleans.
    row = dict(zip(transactions.TRANSACTION_KEYS, found, strict=False))
    assert row["expires_at"] == NOW + dt.timedelta(minutes=30)
    assert row["expires_at"].tzinfo is not None
    assert row["params"]["acr_values"] == "mfa"
    assert row["amr"] == ["pwd"]
    assert found[-2] is True  # first_party
    assert found[-1] is False  # no authenticator


def test_an_unknown_row_is_none(loop_services: Services) -> None:
    statement = transactions._LOOP_LOADS[False]
    assert (
        run(loop_services, loop_reads(loop_services).fetch_one(statement, {"id_hash": "0" * 64}))
        is None
    )


def test_only_a_usable_transaction_at_the_page_s_stage_is_shown_from_the_loop(
    loop_services: Services,
) -> None:
    """Everything else goes to the threaded path, which explains or moves it on."""
    add_transaction(loop_services, "usable")
    add_transaction(loop_services, "expired", expires_at=NOW - dt.timedelta(seconds=1))
    add_transaction(loop_services, "used", consumed_at=NOW)
    add_transaction(loop_services, "done", completed_at=NOW)
    add_transaction(loop_services, "at-code", stage="mfa")
    add_transaction(loop_services, "message", error="credentials")

    def usable(tx: str) -> transactions.Opened | None:
        found = transactions.usable_on_loop(
            loop_services, tx=tx, here={"password"}, now=NOW, enrolment=False
        )
        return cast("transactions.Opened | None", run(loop_services, found))

    opened = usable("usable")
    assert opened is not None
    assert opened.row.csrf_token == "c" * 43
    assert opened.client == transactions.ClientInfo("Loop app", "OcularOutcomes", True)
    assert opened.enrolled is None
    for tx in ("expired", "used", "done", "at-code", "message", "unknown", "x" * 200, ""):
        assert usable(tx) is None, tx


def test_a_sqlite_database_held_by_another_connection_is_not_waited_for(
    loop_services: Services,
) -> None:
    if loop_services.engine.dialect.name != "sqlite":
        pytest.skip("SQLite's locking")
    add_transaction(loop_services, "held")
    loop_services.engine.dispose()  # no pooled connection keeps a shared lock
    database = loop_services.engine.url.database
    assert database is not None
    holder = sqlite3.connect(database, isolation_level=None)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("UPDATE login_transactions SET stage = 'mfa'")
    statement = transactions._LOOP_LOADS[False]
    values = {"id_hash": token_digest("held")}
    try:
        started = time.monotonic()
        with pytest.raises(NotReadAtOnce):
            run(loop_services, loop_reads(loop_services).fetch_one(statement, values))
        assert time.monotonic() - started < 1.0  # the engine's busy timeout is 30 s
    finally:
        holder.execute("COMMIT")
        holder.close()
    found = run(loop_services, loop_reads(loop_services).fetch_one(statement, values))
    assert dict(zip(transactions.TRANSACTION_KEYS, found, strict=False))["stage"] == "mfa"


def test_a_postgresql_read_that_fails_sends_the_caller_to_its_threaded_path(
    loop_services: Services,
) -> None:
    """A connection that cannot be made (or breaks) is not the page's error to show: the
    threaded path reads again, through the engine's own pool, and answers or says why."""
    if loop_services.engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL's connections")
    from idp.async_db import AsyncDatabase

    nowhere = AsyncDatabase("postgresql://postgres@127.0.0.1:1/nothing", timeout=5)
    loop_services.extras["async_db"] = nowhere
    read = loop_reads(loop_services).fetch_one(
        transactions._LOOP_LOADS[False], {"id_hash": "0" * 64}
    )
    with pytest.raises(NotReadAtOnce, match="OperationalError"):
        run(loop_services, read)


class _Shouted(TypeDecorator[str]):
    impl = String
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> Any:
        return value.upper() if value else value


def test_a_parameter_that_needs_bind_processing_is_refused(services: Services) -> None:
    table = cast(Table, LoginTransaction.__table__)
    statement = select(table.c.stage).where(table.c.stage == bindparam("s", type_=_Shouted()))
    with pytest.raises(ValueError, match="bind processing"):
        LoopQuery(statement, services.engine)


def test_pages_read_on_the_loop_wait_for_a_held_sqlite_database_in_a_thread(
    live_server: LiveServer,
) -> None:
    """While another process holds the SQLite file, the page is not answered from the
    event loop (which would block every request) but by its threaded path, which waits
    for the database; the event loop keeps answering meanwhile."""
    engine = live_server.services.engine
    if engine.dialect.name != "sqlite":
        pytest.skip("SQLite's locking")
    app = register_client(live_server)
    register_person(live_server)
    with httpx.Client(follow_redirects=False) as browser:
        started = start_sign_in(live_server, app, browser)
        url = live_server.url + started.response.headers["location"]
        assert browser.get(url).status_code == 200  # the loop's reader has read once
        # Another connection can hold the file exclusively only once no open one has
        # read it: the loop's reader (it opens again on its next read) and the pool's.
        live_server.services.extras["loop_reads"].close()
        engine.dispose()
        holder = sqlite3.connect(str(engine.url.database), isolation_level=None)
        holder.execute("PRAGMA locking_mode=EXCLUSIVE")
        holder.execute("BEGIN EXCLUSIVE")
        holder.execute("SELECT count(*) FROM login_transactions")
        answers: list[httpx.Response] = []
        waiting = threading.Thread(target=lambda: answers.append(httpx.get(url)))
        waiting.start()
        try:
            time.sleep(0.5)
            assert not answers  # waiting for the database, in a worker thread
            assert httpx.get(live_server.url + "/healthz").status_code == 200
        finally:
            holder.execute("COMMIT")
            holder.close()
        waiting.join(timeout=30)
    assert answers
    assert answers[0].status_code == 200
    assert parse_page(answers[0].text).form_with("password") is not None
