"""The `idp` command line: serve, migrate, and manage accounts and clients.

To add a command group, write `src/idp/cli/<group>.py` with a `typer.Typer` named `app`
and add its name to `GROUPS` below; then run `scripts/update-readme`.

`main` imports only the group a command line names (`idp users ...` imports no client
or key code, `idp serve` none of the groups): each group brings its part of the admin
services, and `idp serve`'s start-up is the time to ready.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import typer

    #: The whole command tree (built on first use: see `build_app`).
    app: typer.Typer

#: Commands at the top, `idp <name>`: their module and function in this package.
COMMANDS = {
    "serve": ("serve", "serve"),
    "migrate": ("serve", "migrate"),
    "purge": ("maintenance", "purge"),
}
#: Sub-command groups, `idp <name> ...`: each is the `typer.Typer` named `app` in
#: `idp.cli.<name>`.
GROUPS = ("users", "clients", "keys", "mfa")


def build_app(groups: Sequence[str] = GROUPS) -> typer.Typer:
    """The command tree with the top-level commands and `groups` (all by default)."""
    import typer

    root = typer.Typer(
        name="idp",
        help="OpenID Connect identity provider.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
    )
    for name, (module, function) in COMMANDS.items():
        root.command(name)(getattr(importlib.import_module(f"idp.cli.{module}"), function))
    for name in groups:
        root.add_typer(importlib.import_module(f"idp.cli.{name}").app, name=name)
    return root


def groups_for(args: Sequence[str]) -> tuple[str, ...]:
    """The groups a command line needs: none for a top-level command, the one it names,
    or all of them (for help, and for a name that is wrong, so that the error can
    suggest the right one)."""
    first = args[0] if args else None
    if first in COMMANDS:
        return ()
    if first in GROUPS:
        return (first,)
    return GROUPS


def __getattr__(name: str) -> object:
    if name == "app":
        globals()["app"] = tree = build_app()
        return tree
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    """Entry point of the `idp` script: run a command, exit with its status."""
    args = sys.argv[1:]
    if args[:1] == ["serve"]:
        from idp.memory import pause_gc

        pause_gc()  # resumed when the server has started, or before workers (idp.cli.serve)
    from idp.cli.errors import run

    sys.exit(run(build_app(groups_for(args)), args))
