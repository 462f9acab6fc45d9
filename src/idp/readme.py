"""Generates the README's configuration table and CLI reference from the code.

`tests/test_docs.py` fails when the README differs from what this module generates;
`scripts/update-readme` rewrites the marked sections in place.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import Literal, get_args, get_origin

import typer
from annotated_types import Ge, Le
from pydantic.fields import FieldInfo
from typer.core import TyperCommand, TyperGroup

from idp.settings import Settings

SECTIONS = ("settings-table", "cli-reference")


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _default(field: FieldInfo) -> str:
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "(unset)"
    if isinstance(value, dt.date):
        return f"`{value.isoformat()}`"
    return f"`{value}`"


def _constraints(field: FieldInfo) -> str:
    """Allowed values and ranges, read from the field's type and metadata."""
    notes = []
    if get_origin(field.annotation) is Literal:
        notes.append("One of: " + ", ".join(f"`{v}`" for v in get_args(field.annotation)) + ".")
    low = next((m.ge for m in field.metadata if isinstance(m, Ge)), None)
    high = next((m.le for m in field.metadata if isinstance(m, Le)), None)
    if low is not None and high is not None:
        notes.append(f"Range {low} to {high}.")
    elif low is not None:
        notes.append(f"At least {low}.")
    return " ".join(notes)


def settings_table() -> str:
    """One row per `Settings` field: environment variable, default, description."""
    rows = ["| Variable | Default | Description |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        description = _cell(f"{field.description or ''} {_constraints(field)}")
        rows.append(f"| `IDP_{name.upper()}` | {_cell(_default(field))} | {description} |")
    return "\n".join(rows)


def _commands(command: TyperCommand | TyperGroup, path: str) -> list[str]:
    ctx = typer.Context(command, info_name=path.rsplit(" ", 1)[-1])
    if isinstance(command, TyperGroup):
        blocks: list[str] = []
        for name in command.commands:  # registration order: serve, migrate, groups
            sub = command.commands[name]
            assert isinstance(sub, TyperCommand | TyperGroup)
            blocks += _commands(sub, f"{path} {name}")
        return blocks
    summary = _cell((command.help or "").strip().split("\n\n")[0])
    lines = [f"### `{path}`", "", summary, ""]
    options = [
        record
        for param in command.params
        if (record := param.get_help_record(ctx)) is not None and "--help" not in record[0]
    ]
    if options:
        lines += ["| Option | Description |", "| --- | --- |"]
        lines += [f"| `{_cell(opts)}` | {_cell(text)} |" for opts, text in options]
    else:
        lines.append("No options.")
    return ["\n".join(lines)]


def cli_reference() -> str:
    """One section per `idp` command with its options, from the Typer command tree."""
    from idp.cli import app

    root = typer.main.get_command(app)
    assert isinstance(root, TyperGroup)
    return "\n\n".join(_commands(root, "idp"))


def generated() -> dict[str, str]:
    """Each marked README section's expected body."""
    return {"settings-table": settings_table(), "cli-reference": cli_reference()}


def section_bounds(text: str, name: str) -> tuple[int, int]:
    """Start and end offsets of the body between `name`'s start and end markers."""
    start, end = f"<!-- {name}:start -->\n", f"\n<!-- {name}:end -->"
    begin = text.find(start)
    finish = text.find(end, begin)
    if begin < 0 or finish < 0:
        raise ValueError(f"README has no {start.strip()} ... {end.strip()} section")
    return begin + len(start), finish


def rewrite(text: str) -> str:
    """`text` with every marked section replaced by what the code says."""
    for name, body in generated().items():
        begin, finish = section_bounds(text, name)
        text = text[:begin] + body + text[finish:]
    return text


def main() -> None:
    """`python -m idp.readme [README.md]`: rewrite the sections in place."""
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "README.md")
    path.write_text(rewrite(path.read_text(encoding="utf-8")), encoding="utf-8")
    print(f"updated {path}")


if __name__ == "__main__":
    main()
