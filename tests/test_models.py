"""`idp.models.from_columns`: objects made from rows without the constructor behave as
read ones: their values are there, in a process where nothing has configured the mappers
yet too (this module alone), they are in no session, and put in one as read
(`make_transient_to_detached`) a change to them is written and nothing else is."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import event, inspect, select
from sqlalchemy.orm import make_transient_to_detached

from idp.app import Services
from idp.models import LoginTransaction, column_attributes, from_columns
from idp.oauth import transactions

NOW = dt.datetime(2026, 12, 4, 9, 30, tzinfo=dt.UTC)


def test_an_object_from_columns_is_a_read_row_in_no_session(services: Services) -> None:
    _, row = transactions.new_transaction(
        client_id="app",
        params={"redirect_uri": "https://app.example/cb"},
        stage="password",
        account_id=None,
        now=NOW,
        lifetime_seconds=600,
    )
    with services.sessions.begin() as db:
        transactions.insert_transaction(db, row)
    keys = column_attributes(LoginTransaction)
    with services.sessions() as db:
        found = db.execute(select(*LoginTransaction.__table__.c)).one()
    made = from_columns(LoginTransaction, dict(zip(keys, found, strict=True)))
    assert inspect(made).transient
    assert made.params == {"redirect_uri": "https://app.example/cb"}
    assert made.expires_at == NOW + dt.timedelta(seconds=600)
    assert made.error is None

    sent: list[str] = []
    with services.sessions.begin() as db:
        event.listen(db.bind, "before_cursor_execute", lambda *a: sent.append(a[2]))
        make_transient_to_detached(made)
        db.add(made)
        made.error = "credentials"
    written = [statement for statement in sent if not statement.startswith("BEGIN")]
    assert len(written) == 1  # no INSERT: it was put in the session as read
    assert written[0].startswith("UPDATE login_transactions SET error=")
    with services.sessions() as db:
        stored = db.get(LoginTransaction, made.id_hash)
        assert stored is not None
        assert stored.error == "credentials"
        assert stored.stage == "password"  # the rest as it was
        assert stored.csrf_token == row["csrf_token"]


def test_the_first_object_of_a_fresh_process_is_whole() -> None:
    """The constructor configures the mappers on first use; `from_columns` must too, or
    the first page a new worker serves from the event loop would fail."""
    import subprocess
    import sys

    script = (
        "from idp.models import LoginTransaction, from_columns\n"
        "row = from_columns(LoginTransaction, {'id_hash': 'h', 'stage': 'password'})\n"
        "print(row.stage, LoginTransaction.__mapper__.configured)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["password", "True"]
