"""Run Alembic migrations from code and tell whether a database is at head.

Alembic is imported only to migrate or when the history is not a simple chain: importing
it (with Mako and every dialect's DDL) was a good part of `idp serve`'s start-up, which
only needs to know whether the database is at head (`is_at_head`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, inspect, text

if TYPE_CHECKING:
    from alembic.config import Config

ROOT = Path(__file__).resolve().parents[2]
VERSIONS = ROOT / "migrations" / "versions"

_REVISION = re.compile(r"""^revision(?::[^=\n]*)?\s*=\s*["']([^"'\n]+)["']\s*$""", re.M)
_DOWN_REVISION = re.compile(
    r"""^down_revision(?::[^=\n]*)?\s*=\s*(?:None|["']([^"'\n]+)["'])\s*$""", re.M
)


def alembic_config() -> Config:
    """The project's Alembic configuration (`alembic.ini`, `migrations/`)."""
    from alembic.config import Config

    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    return config


def head_revision() -> str | None:
    """The newest revision in `migrations/versions`."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def chain_head() -> str | None:
    """The head read straight from the revision files, without Alembic, when every file
    names one revision and at most one parent and exactly one revision has no child;
    None when unsure (a merge, a branch, an unusual file), and Alembic decides."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in VERSIONS.glob("*.py"):
        source = path.read_text(encoding="utf-8")
        revision, down = _REVISION.findall(source), _DOWN_REVISION.findall(source)
        if len(revision) != 1 or len(down) != 1:
            return None
        revisions.add(revision[0])
        if down[0]:
            parents.add(down[0])
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 and parents <= revisions else None


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None when it was never migrated."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def is_at_head(engine: Engine) -> bool:
    """True when the database is migrated to the newest revision."""
    head = chain_head()
    if head is None:
        return current_revision(engine) == head_revision()
    with engine.connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return False
        versions = connection.execute(text("SELECT version_num FROM alembic_version")).all()
    return [row[0] for row in versions] == [head]


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the database to `revision` (default: head)."""
    from alembic import command

    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
