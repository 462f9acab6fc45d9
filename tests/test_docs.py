"""The README's configuration table and CLI reference agree with the code."""

from __future__ import annotations

from pathlib import Path

import typer
from typer.core import TyperGroup

from idp import readme
from idp.cli import app
from idp.settings import Settings

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_sections_are_what_the_code_generates() -> None:
    text = README.read_text(encoding="utf-8")
    for name, expected in readme.generated().items():
        begin, finish = readme.section_bounds(text, name)
        assert text[begin:finish] == expected, (
            f"README.md section {name} is out of date: run scripts/update-readme"
        )


def test_every_setting_has_a_row_and_a_description() -> None:
    table = readme.settings_table()
    for name, field in Settings.model_fields.items():
        assert f"| `IDP_{name.upper()}` |" in table
        assert field.description, f"Settings.{name} needs a description"


def _command_paths(command: object, path: str) -> list[tuple[str, object]]:
    if isinstance(command, TyperGroup):
        found: list[tuple[str, object]] = []
        for name, sub in command.commands.items():
            found += _command_paths(sub, f"{path} {name}")
        return found
    return [(path, command)]


def test_every_command_and_option_is_in_the_readme() -> None:
    text = README.read_text(encoding="utf-8")
    begin, finish = readme.section_bounds(text, "cli-reference")
    reference = text[begin:finish]
    paths = _command_paths(typer.main.get_command(app), "idp")
    assert {p for p, _ in paths} >= {
        "idp serve",
        "idp migrate",
        "idp users create",
        "idp users show",
        "idp users list",
        "idp users disable",
        "idp users set-email",
        "idp clients create",
        "idp clients list",
        "idp clients show",
        "idp clients delete",
    }
    for path, command in paths:
        heading = f"### `{path}`"
        assert heading in reference, f"{path} is missing from the README"
        section = reference.split(heading, 1)[1].split("\n### ", 1)[0]
        for param in getattr(command, "params", []):
            for flag in param.opts:
                if flag != "--help":
                    assert flag in section, f"{path} {flag} is missing from the README"


def test_a_stale_section_is_detected_and_rewritten() -> None:
    text = README.read_text(encoding="utf-8")
    begin, finish = readme.section_bounds(text, "settings-table")
    stale = text[:begin] + "| `IDP_GONE` | `x` | Removed. |" + text[finish:]
    assert stale != text
    assert readme.rewrite(stale) == readme.rewrite(text)
    assert "IDP_GONE" not in readme.rewrite(stale)
