"""A fresh database migrated to head matches the models exactly, on every backend."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect, text

from idp import migrations
from idp.db import make_engine
from idp.models import Base


def schema_diff(engine: Engine) -> list[Any]:
    """Alembic's autogenerate diff between the database and the models (empty = same).
    SQLite's expression indexes cannot be reflected, so are not compared there (the
    legacy address's index is checked on its own, below)."""
    with engine.connect() as connection, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*expression-based index")
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "compare_server_default": True}
        )
        return list(compare_metadata(context, Base.metadata))


def test_the_legacy_address_search_is_served_by_its_index(database_url: str) -> None:
    from idp.web.pages import password_check

    engine = make_engine(database_url)
    try:
        with engine.begin() as connection:
            if engine.dialect.name == "sqlite":
                (sql,) = connection.execute(
                    text("SELECT sql FROM sqlite_master WHERE name = 'ix_accounts_legacy_email'")
                ).one()
                assert "lower(legacy_email)" in sql
                assert "WHERE email_key IS NULL" in sql
                plan_sql = "EXPLAIN QUERY PLAN "
            else:
                connection.execute(text("SET LOCAL enable_seqscan = off"))  # a tiny table
                plan_sql = "EXPLAIN "
            query = password_check._LEGACY_HASHES.params(email="a@b.example", limit=5).compile(
                dialect=engine.dialect, compile_kwargs={"literal_binds": True}
            )
            plan = connection.exec_driver_sql(plan_sql + str(query)).all()
    finally:
        engine.dispose()
    shown = " ".join(str(row) for row in plan)
    if engine.dialect.name == "sqlite":  # its planner, with no statistics, may take either
        assert "SEARCH accounts USING INDEX" in shown, shown
    else:
        assert "ix_accounts_legacy_email" in shown, shown


def test_migrated_schema_matches_the_models(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        assert migrations.is_at_head(engine)
        diff = schema_diff(engine)
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert diff == [], f"models and migrations differ: {diff}"
    assert set(Base.metadata.tables) <= tables
    assert "alembic_version" in tables


def test_the_comparison_notices_a_missing_unique_index(tmp_path: Path) -> None:
    # Proves the check above can fail: the email uniqueness index is what issue 2 relies on.
    engine = make_engine(f"sqlite:///{tmp_path}/drift.sqlite3")
    try:
        migrations.upgrade(engine)
        with engine.begin() as connection:
            connection.execute(text("DROP INDEX uq_accounts_email_key"))
        diff = schema_diff(engine)
    finally:
        engine.dispose()
    assert any(change[0] == "add_index" for change in diff), diff


def test_an_empty_database_is_reported_as_not_migrated(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/empty.sqlite3")
    try:
        assert migrations.current_revision(engine) is None
        assert not migrations.is_at_head(engine)
        migrations.upgrade(engine)
        assert migrations.current_revision(engine) == migrations.head_revision()
    finally:
        engine.dispose()


def test_the_head_read_without_alembic_is_alembics() -> None:
    assert migrations.chain_head() is not None
    assert migrations.chain_head() == migrations.head_revision()


def test_is_at_head_without_alembic_notices_an_old_or_missing_revision(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/old.sqlite3")
    try:
        assert not migrations.is_at_head(engine)  # never migrated: no alembic_version
        migrations.upgrade(engine)
        assert migrations.is_at_head(engine)
        with engine.begin() as connection:
            connection.execute(text("UPDATE alembic_version SET version_num = 'older'"))
        assert not migrations.is_at_head(engine)
    finally:
        engine.dispose()


def test_an_unusual_history_is_left_to_alembic(tmp_path: Path, monkeypatch: Any) -> None:
    (tmp_path / "0001_a.py").write_text('revision = "a"\ndown_revision = None\n')
    (tmp_path / "0002_b.py").write_text('revision = "b"\ndown_revision = "a"\n')
    monkeypatch.setattr(migrations, "VERSIONS", tmp_path)
    assert migrations.chain_head() == "b"
    (tmp_path / "0003_c.py").write_text('revision = "c"\ndown_revision = "a"\n')  # a branch
    assert migrations.chain_head() is None
    (tmp_path / "0003_c.py").write_text('revision = "c"\ndown_revision = ("a", "b")\n')
    assert migrations.chain_head() is None  # a merge
