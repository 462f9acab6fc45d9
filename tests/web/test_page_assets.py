"""The committed page assets and templates stay within the CSP and use no third party.

Issue 4 points 6 and 7: no third-party resources, no inline script or style (the CSP
refuses them, so they would silently not work), and the built styles carry their licence.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from idp.web.static_files import STATIC_DIR
from idp.web.templating import TEMPLATES_DIR

CSS_FILES = sorted(STATIC_DIR.rglob("*.css"))
TEMPLATES = sorted(TEMPLATES_DIR.rglob("*.html"))

INLINE_PATTERNS = {
    "style attribute": re.compile(r"\sstyle\s*=", re.IGNORECASE),
    "<style> element": re.compile(r"<style[\s>]", re.IGNORECASE),
    "inline <script>": re.compile(r"<script(?![^>]*\ssrc=)[^>]*>", re.IGNORECASE),
    "event handler attribute": re.compile(r"\son[a-z]+\s*=", re.IGNORECASE),
    "javascript: URL": re.compile(r"javascript:", re.IGNORECASE),
}


def test_there_are_styles_and_templates_to_check() -> None:
    assert STATIC_DIR / "nhsuk" / "nhsuk.min.css" in CSS_FILES
    assert STATIC_DIR / "idp.css" in CSS_FILES
    assert TEMPLATES_DIR / "base.html" in TEMPLATES


@pytest.mark.parametrize("css", CSS_FILES, ids=lambda p: str(p.relative_to(STATIC_DIR)))
def test_styles_load_nothing_from_elsewhere(css: Path) -> None:
    text = css.read_text(encoding="utf-8-sig")
    assert "@import" not in text
    for target in re.findall(r"url\(\s*['\"]?([^'\")]+)", text):
        assert not re.match(r"^([a-z]+:|//)", target, re.IGNORECASE) or target.startswith(
            "data:"
        ), f"{css.name} loads {target}"
        if not target.startswith("data:"):
            assert (css.parent / target).is_file(), f"{css.name} refers to missing {target}"


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: str(p.relative_to(TEMPLATES_DIR)))
def test_templates_have_nothing_the_csp_refuses(template: Path) -> None:
    text = template.read_text(encoding="utf-8")
    for what, pattern in INLINE_PATTERNS.items():
        match = pattern.search(text)
        assert match is None, f"{template.name} has an {what}: {match.group(0) if match else ''}"
    # Links to other sites are fine; loading a resource from one is not.
    off_site = re.search(r"(\ssrc=|<link[^>]*\shref=)\"(https?:)?//", text)
    assert off_site is None, f"{template.name} loads a resource from another site"


def test_built_styles_carry_the_nhsuk_frontend_licence() -> None:
    licence = (STATIC_DIR / "nhsuk" / "LICENCE.txt").read_text(encoding="utf-8")
    assert licence.startswith("nhsuk-frontend ")
    assert "MIT License" in licence
    assert "Permission is hereby granted" in licence
