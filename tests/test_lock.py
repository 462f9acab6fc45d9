"""requirements.lock pins, with hashes, every dependency pyproject.toml declares."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def locked_versions(text: str) -> dict[str, str]:
    """`name==version` entries of a pip-compile lock file, by canonical name."""
    return {
        canonicalize_name(m["name"]): m["version"]
        for m in re.finditer(r"^(?P<name>[A-Za-z0-9._-]+)==(?P<version>\S+) \\$", text, re.M)
    }


def declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    names = project["dependencies"] + project["optional-dependencies"]["dev"]
    return [Requirement(name) for name in names]


def test_every_declared_dependency_is_locked_at_an_allowed_version() -> None:
    locked = locked_versions((ROOT / "requirements.lock").read_text(encoding="utf-8"))
    for requirement in declared():
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{name} is not in requirements.lock: run scripts/lock"
        assert requirement.specifier.contains(locked[name], prereleases=True), (
            f"requirements.lock pins {name}=={locked[name]}, outside {requirement.specifier}: "
            "run scripts/lock"
        )


def test_every_pin_carries_a_hash() -> None:
    entries = re.split(r"\n(?=\S)", (ROOT / "requirements.lock").read_text(encoding="utf-8"))
    pins = [entry for entry in entries if "==" in entry.split("\n", 1)[0]]
    assert len(pins) >= len(declared())
    for entry in pins:
        assert "--hash=sha256:" in entry, entry.split("\n", 1)[0]


def test_the_parser_sees_a_missing_pin() -> None:
    assert locked_versions("fastapi==0.1 \\\n    --hash=sha256:00\n") == {"fastapi": "0.1"}
    assert "fastapi" not in locked_versions("# fastapi==0.1 \\\n")
