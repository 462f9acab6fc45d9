"""The CLI's error boundary: whatever a command raises, one line on stderr and a status."""

from __future__ import annotations

import pytest
import typer
from pydantic import BaseModel, ValidationError

from idp.cli.errors import EXIT_CONFIG, EXIT_DATABASE, EXIT_ERROR, EXIT_USAGE, CliError, run
from idp.settings import Settings


class Payload(BaseModel):
    count: int


def app_raising(exc: BaseException) -> typer.Typer:
    app = typer.Typer(pretty_exceptions_enable=False, rich_markup_mode=None)

    @app.command()
    def boom(flag: bool = False) -> None:
        raise exc

    @app.command()
    def fine() -> None:
        typer.echo("ok")

    return app


def settings_error() -> ValidationError:
    try:
        Settings(session_idle_seconds=5)
    except ValidationError as exc:
        return exc
    raise AssertionError("Settings accepted an idle limit of 5 s")


def other_validation_error() -> ValidationError:
    try:
        Payload(count="many")  # type: ignore[arg-type]
    except ValidationError as exc:
        return exc
    raise AssertionError("unreachable")


@pytest.mark.parametrize(
    ("exc", "status", "expected"),
    [
        (CliError("fix it\nnow", status=EXIT_DATABASE), EXIT_DATABASE, "idp: fix it now"),
        (settings_error(), EXIT_CONFIG, "idp: configuration error: IDP_SESSION_IDLE_SECONDS: "),
        (other_validation_error(), EXIT_ERROR, "idp: unexpected error (ValidationError)"),
        (ValueError("Redirect URIs must not\ncarry a fragment."), EXIT_ERROR, "idp: Redirect"),
        (LookupError("no client has the id 'x'"), EXIT_ERROR, "idp: no client has the id"),
        (KeyError("bug"), EXIT_ERROR, "idp: unexpected error (KeyError)"),
        (RuntimeError("line one\n  line two"), EXIT_ERROR, "idp: unexpected error (RuntimeError)"),
    ],
)
def test_every_failure_is_one_line(
    exc: BaseException, status: int, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(app_raising(exc), ["boom"]) == status
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1, captured.err
    assert captured.err.startswith(expected), captured.err


def test_usage_errors_name_the_help_to_read(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(app_raising(RuntimeError()), ["boom", "--flga"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "--flga" in err
    assert "--help`" in err


def test_end_of_input_at_a_prompt_aborts(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(app_raising(EOFError()), ["boom"]) == EXIT_ERROR
    # Typer first ends the half-written prompt line; the message itself is one line.
    assert capsys.readouterr().err.lstrip("\n") == "idp: aborted\n"


def test_an_interrupt_exits_130_like_any_program(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(app_raising(KeyboardInterrupt()), ["boom"]) == 130
    assert "Traceback" not in capsys.readouterr().err


def test_an_explicit_exit_status_is_kept() -> None:
    assert run(app_raising(typer.Exit(code=7)), ["boom"]) == 7


def test_success_and_help_exit_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(app_raising(RuntimeError()), ["fine"]) == 0
    assert capsys.readouterr().out == "ok\n"
    assert run(app_raising(RuntimeError()), ["boom", "--help"]) == 0
    assert "Usage:" in capsys.readouterr().out
