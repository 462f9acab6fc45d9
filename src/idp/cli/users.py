"""`idp users ...`: create, inspect, list, disable accounts and change their email address."""

from __future__ import annotations

import getpass
import sys
from typing import Annotated

import typer
from sqlalchemy.orm import Session

from idp.admin import users as accounts
from idp.cli.context import database
from idp.cli.errors import CliError
from idp.cli.output import JSON_HELP, account_data, account_text, emit
from idp.models import Account, GlobalRole, OrgRole

app = typer.Typer(help="Manage accounts.", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help=JSON_HELP)]
EmailOpt = Annotated[
    str, typer.Option("--email", metavar="EMAIL", help="The account's email address.")
]

#: More than any allowed password (the policy's input bound); stops a runaway pipe.
STDIN_LIMIT = 4096


def read_password() -> str:
    """The password from standard input: never from argv, where `ps` and history see it."""
    if sys.stdin.isatty():
        return getpass.getpass("Password: ")
    data = sys.stdin.read(STDIN_LIMIT + 1)
    if len(data) > STDIN_LIMIT:
        raise CliError(f"the password on standard input is longer than {STDIN_LIMIT} characters")
    # `echo pw | idp ...` adds one newline; it is not part of the password.
    return data.removesuffix("\n").removesuffix("\r")


def _find(db: Session, *, email: str | None, account_id: str | None) -> Account:
    if (email is None) == (account_id is None):
        raise CliError("give exactly one of --email or --id")
    if account_id is not None:
        return accounts.require_account(db, account_id=account_id)
    assert email is not None
    account = accounts.find_by_email(db, email=email)
    if account is None:
        raise CliError(f"no account has the email address {email!r}; see `idp users list`")
    return account


@app.command("create")
def create(
    email: EmailOpt,
    password_stdin: Annotated[
        bool,
        typer.Option(
            "--password-stdin",
            help="Read the password from standard input (a terminal prompts without echo).",
        ),
    ] = False,
    name: Annotated[str | None, typer.Option(metavar="NAME", help="Display name.")] = None,
    org: Annotated[
        str | None, typer.Option(metavar="ORG", help="Organisation to join (created if new).")
    ] = None,
    org_role: Annotated[OrgRole, typer.Option(help="Role in --org.")] = OrgRole.MEMBER,
    global_role: Annotated[
        GlobalRole | None, typer.Option(help="Role across every organisation.")
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """Create an account; the password is read from standard input."""
    if not password_stdin:
        raise CliError("pass --password-stdin and pipe the password on standard input")
    password = read_password()
    with database() as db:
        account = accounts.create_account(
            db,
            email=email,
            password=password,
            name=name,
            org=org,
            org_role=org_role,
            global_role=global_role,
        )
        data = account_data(account)
    emit(data, as_json=json_, text=f"created account {data['id']} for {data['email']}")


@app.command("show")
def show(
    email: Annotated[
        str | None, typer.Option(metavar="EMAIL", help="The account's email address.")
    ] = None,
    account_id: Annotated[
        str | None, typer.Option("--id", metavar="ID", help="The account's id (sub).")
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """Show one account, found by email address or id."""
    with database() as db:
        account = _find(db, email=email, account_id=account_id)
        data, text = account_data(account), account_text(account)
    emit(data, as_json=json_, text=text)


@app.command("list")
def list_(
    org: Annotated[
        str | None, typer.Option(metavar="ORG", help="Only members of this organisation.")
    ] = None,
    limit: Annotated[
        int, typer.Option(min=1, max=1000, metavar="N", help="At most this many.")
    ] = 100,
    offset: Annotated[int, typer.Option(min=0, metavar="N", help="Skip this many first.")] = 0,
    json_: JsonOpt = False,
) -> None:
    """List accounts, oldest first."""
    with database() as db:
        rows = [
            account_data(a) for a in accounts.list_accounts(db, org=org, limit=limit, offset=offset)
        ]
    lines = [
        f"{r['id']}  {r['email'] or '(' + str(r['legacy_email']) + ', shared)'}"
        f"{'  disabled' if r['disabled'] else ''}"
        for r in rows
    ]
    emit({"users": rows}, as_json=json_, text="\n".join(lines) or "no accounts")


@app.command("disable")
def disable(email: EmailOpt, json_: JsonOpt = False) -> None:
    """Disable an account: it can no longer sign in, and its sessions end."""
    with database() as db:
        account = _find(db, email=email, account_id=None)
        accounts.disable_account(db, account=account)
        data = account_data(account)
    emit(data, as_json=json_, text=f"disabled account {data['id']} ({data['email']})")


@app.command("set-email")
def set_email(
    email: EmailOpt,
    new_email: Annotated[
        str, typer.Option("--new-email", metavar="EMAIL", help="The new email address.")
    ],
    json_: JsonOpt = False,
) -> None:
    """Change an account's email address (it must not belong to another account)."""
    with database() as db:
        account = _find(db, email=email, account_id=None)
        accounts.change_email(db, account=account, new_email=new_email)
        data = account_data(account)
    emit(data, as_json=json_, text=f"account {data['id']} now uses {data['email']}")
