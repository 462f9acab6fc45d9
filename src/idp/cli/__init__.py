"""The `idp` command line: serve, migrate, and manage accounts and clients.

To add a command group, write `src/idp/cli/<group>.py` with a `typer.Typer` named `app`
and add one line to `GROUPS` below; then run `scripts/update-readme`.
"""

from __future__ import annotations

import sys

import typer

from idp.cli import clients, keys, maintenance, mfa, serve, users
from idp.cli.errors import run

app = typer.Typer(
    name="idp",
    help="OpenID Connect identity provider.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
app.command("serve")(serve.serve)
app.command("migrate")(serve.migrate)
app.command("purge")(maintenance.purge)

#: Sub-command groups, `idp <name> ...`.
GROUPS: dict[str, typer.Typer] = {
    "users": users.app,
    "clients": clients.app,
    "keys": keys.app,
    "mfa": mfa.app,
}
for _name, _group in GROUPS.items():
    app.add_typer(_group, name=_name)


def main() -> None:
    """Entry point of the `idp` script: run a command, exit with its status."""
    sys.exit(run(app))
