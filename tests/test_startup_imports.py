"""Start-up cost of `idp serve` (issue 5: ready within 1.5 s): what each process imports,
and the garbage collector paused while a serving process starts.

Each check runs in a fresh interpreter, where imports and the collector start clean.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path


def python(code: str, **env: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**env, "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_the_idp_script_imports_no_command_until_it_runs() -> None:
    """Where `idp serve --workers N` cannot fork its workers from the built application
    (idp.cli.worker), each is spawned and re-imports the `idp` script's module, so it
    must cost nothing."""
    loaded = python(
        """
        import sys
        import idp.cli
        print(sorted(m for m in ("typer", "sqlalchemy", "pydantic", "fastapi")
                     if m in sys.modules))
        """
    )
    assert loaded == "[]"


def test_serving_commands_import_neither_the_orm_nor_the_web_application() -> None:
    """`idp serve` with several workers only checks the schema in its own process."""
    loaded = python(
        """
        import sys
        from idp.cli import build_app, groups_for
        build_app(groups_for(["serve", "--workers", "2"]))
        print(sorted(m for m in ("sqlalchemy.orm", "fastapi", "idp.models", "idp.app",
                                 "idp.admin.clients", "uvicorn") if m in sys.modules))
        """
    )
    assert loaded == "[]"


def test_only_the_named_group_is_imported() -> None:
    loaded = python(
        """
        import sys
        from idp.cli import build_app, groups_for
        root = build_app(groups_for(["users", "list"]))
        print(sorted(m for m in ("idp.cli.users", "idp.cli.clients", "idp.cli.keys",
                                 "idp.cli.mfa") if m in sys.modules))
        """
    )
    assert loaded == "['idp.cli.users']"


def test_the_whole_tree_is_there_for_help_and_unknown_names() -> None:
    from idp.cli import GROUPS, groups_for

    assert groups_for([]) == GROUPS
    assert groups_for(["--help"]) == GROUPS
    assert groups_for(["user"]) == GROUPS
    assert groups_for(["serve"]) == ()
    assert groups_for(["keys", "list"]) == ("keys",)


def test_a_worker_starts_with_the_collector_paused_and_serves_with_it_on(
    tmp_path: Path,
) -> None:
    out = python(
        """
        import gc
        from starlette.testclient import TestClient
        from idp.cli.worker import create_app
        app = create_app()
        during = gc.isenabled()
        with TestClient(app):
            after = gc.isenabled()
            frozen = gc.get_freeze_count() > 0
        print(during, after, frozen)
        """,
        IDP_DATABASE_URL=f"sqlite:///{tmp_path / 'idp.db'}",
        IDP_ISSUER="http://127.0.0.1:8000",
        IDP_LOG_LEVEL="error",
    )
    assert out.splitlines()[-1] == "False True True"


def test_resume_changes_nothing_without_a_pause() -> None:
    out = python(
        """
        import gc
        from idp.memory import pause_gc, resume_gc
        first = resume_gc()
        gc.disable()
        pause_gc()  # the collector was already off: not ours to turn on
        second = resume_gc()
        print(first, second, gc.isenabled(), gc.get_freeze_count())
        """
    )
    assert out == "False False False 0"


def test_fastapi_is_imported_with_its_openapi_models_left_to_first_use(tmp_path: Path) -> None:
    """No OpenAPI document is served, so its models are not built at start-up; one that
    is used after all builds then, and pydantic's defaults are left as they were."""
    out = python(
        """
        import pydantic
        from idp.cli.worker import create_app
        create_app()
        from fastapi.openapi import models
        built_at_start = models.OpenAPI.__pydantic_complete__
        document = models.OpenAPI.model_validate(
            {"openapi": "3.1.0", "info": {"title": "t", "version": "1"}, "paths": {}}
        )
        print(built_at_start, models.OpenAPI.__pydantic_complete__, document.info.title,
              "defer_build" in pydantic.BaseModel.model_config)
        """,
        IDP_DATABASE_URL=f"sqlite:///{tmp_path / 'idp.db'}",
        IDP_ISSUER="http://127.0.0.1:8000",
        IDP_LOG_LEVEL="error",
    )
    assert out.splitlines()[-1] == "False True t False"
