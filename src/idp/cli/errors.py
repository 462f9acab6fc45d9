"""One error boundary for the command line: every failure becomes one line on stderr.

Issue 2 ("Bad input"): unknown options, unreadable configuration, a database that is down
or not migrated each give a one-line message that says what to do, and a non-zero exit,
never a traceback. Commands raise; only `run` decides what the person sees.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence

import typer
from pydantic import ValidationError
from pydantic_settings import SettingsError
from sqlalchemy.exc import SQLAlchemyError
from typer._click.exceptions import NoArgsIsHelpError  # Typer embeds Click since 0.26

from idp.settings import Settings

#: Exit statuses, documented in the README's CLI reference.
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_CONFIG = 3
EXIT_DATABASE = 4


class CliError(Exception):
    """A failure the person can fix; `message` says what to do."""

    def __init__(self, message: str, *, status: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def one_line(text: str) -> str:
    """Collapse whitespace so a message never spans lines."""
    return re.sub(r"\s+", " ", text).strip()


def describe_validation_error(exc: ValidationError) -> str:
    """`configuration error: IDP_X: message` for each invalid setting."""
    parts = []
    for error in exc.errors():
        message = str(error["msg"]).removeprefix("Value error, ")
        loc = [str(item) for item in error["loc"]]
        if loc:
            parts.append(f"IDP_{loc[0].upper()}: {message}")
        else:
            # Cross-field checks (model validators) already name the setting.
            parts.append(message)
    return one_line("configuration error: " + "; ".join(parts))


def _domain_error_message(exc: Exception) -> str | None:
    """Messages for the account and client services' refusals (all say what was wrong)."""
    from idp.accounts.emails import InvalidEmail
    from idp.accounts.passwords import PasswordRejected
    from idp.admin.users import AccountNotFound, EmailTaken

    if isinstance(exc, PasswordRejected):
        return f"password refused: {exc.reason}"
    if isinstance(exc, EmailTaken):
        return f"{exc}; every account needs its own email address, choose another one"
    if isinstance(exc, InvalidEmail):
        return f"invalid email address: {exc}"
    if isinstance(exc, AccountNotFound):
        return f"{exc}; check the address or id with `idp users list`"
    if isinstance(exc, ValueError) and not isinstance(exc, ValidationError):
        # By convention the services' refusals are ValueErrors whose message says what is
        # wrong (the client registry's bad redirect URI, grant type, ...).
        return str(exc)
    if isinstance(exc, LookupError) and not isinstance(exc, KeyError | IndexError):
        return str(exc)  # the services' "not found" errors (ClientNotFound, ...)
    return None


def _message_and_status(exc: BaseException) -> tuple[str, int]:
    if isinstance(exc, CliError):
        return exc.message, exc.status
    if isinstance(exc, typer.TyperException):
        # Usage errors (unknown option, missing value) from Typer's embedded Click.
        ctx = getattr(exc, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        return f"{exc.format_message()}{hint}", exc.exit_code or EXIT_USAGE
    if isinstance(exc, typer.Abort | KeyboardInterrupt):
        return "aborted", EXIT_ERROR
    if isinstance(exc, ValidationError) and exc.title == Settings.__name__:
        return describe_validation_error(exc), EXIT_CONFIG
    if isinstance(exc, SettingsError):
        return f"configuration error: {exc}", EXIT_CONFIG
    if isinstance(exc, SQLAlchemyError):
        detail = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        return f"database error: {detail}; check the database and try again", EXIT_DATABASE
    if isinstance(exc, Exception):
        domain = _domain_error_message(exc)
        if domain is not None:
            return domain, EXIT_ERROR
    return f"unexpected error ({type(exc).__name__}): {exc}; please report it", EXIT_ERROR


def run(app: typer.Typer, args: Sequence[str] | None = None) -> int:
    """Run the command tree and turn any failure into one line and a status."""
    try:
        # Without standalone mode Typer returns, rather than raises, the status of an
        # `Exit` (--help: 0, Ctrl-C: 130); commands themselves return None.
        result = typer.main.get_command(app).main(
            args=list(sys.argv[1:] if args is None else args),
            prog_name="idp",
            standalone_mode=False,
        )
    except typer.Exit as exc:
        return exc.exit_code
    except NoArgsIsHelpError as exc:  # `idp` or `idp users` alone: the help is the answer
        exc.show()
        return EXIT_USAGE
    except (Exception, KeyboardInterrupt) as exc:
        message, status = _message_and_status(exc)
        print(f"idp: {one_line(message)}", file=sys.stderr)
        return status
    return result if isinstance(result, int) else 0
