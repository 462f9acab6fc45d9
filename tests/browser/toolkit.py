"""Checks and helpers for browser tests: axe-core, 320 px fit, CSP violations, servers.

Use from any browser test:
    from tests.browser.toolkit import axe_check, assert_fits_320, serve_app
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.servers import serve_app

if TYPE_CHECKING:
    from playwright.sync_api import ConsoleMessage, Page

__all__ = ["assert_fits_320", "axe_check", "csp_violations", "serve_app", "watch_console"]

AXE_SOURCE = (Path(__file__).parent / "vendor" / "axe.min.js").read_text(encoding="utf-8")

#: WCAG 2.2 AA as axe-core tags it: 2.0, 2.1 and 2.2 rules at levels A and AA.
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]

_RUN_AXE = """async (tags) => {
  const results = await axe.run(document, {
    runOnly: {type: "tag", values: tags},
    resultTypes: ["violations"],
  });
  return results.violations.map((v) => ({
    id: v.id,
    impact: v.impact,
    help: v.help,
    nodes: v.nodes.map((n) => n.target.join(" ") + " -> " + n.failureSummary),
  }));
}"""

# Console messages per page, recorded from creation by `watch_console` (the fixtures call it).
_CONSOLE: dict[int, list[str]] = {}


def watch_console(page: Page) -> list[str]:
    """Start recording `page`'s console errors and warnings; returns the live list."""
    messages = _CONSOLE.setdefault(id(page), [])

    def record(message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            messages.append(message.text)

    page.on("console", record)
    return messages


def csp_violations(page: Page) -> list[str]:
    """The Content-Security-Policy refusals Chromium logged for `page` so far."""
    return [m for m in _CONSOLE.get(id(page), []) if "Content Security Policy" in m]


def forget_console(page: Page) -> None:
    """Drop what was recorded for `page` (fixtures call this when the page closes)."""
    _CONSOLE.pop(id(page), None)


def axe_check(page: Page) -> None:
    """Fail if axe-core finds WCAG 2.2 A/AA violations, or the page broke its CSP.

    Needs JavaScript enabled (axe is a script): scan `nojs_page` journeys' pages again
    in `page`. The source is evaluated, not added as a tag, because the CSP forbids that.
    """
    refused = csp_violations(page)
    assert not refused, f"{page.url} broke its Content-Security-Policy:\n" + "\n".join(refused)
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(AXE_SOURCE)
    violations: list[dict[str, Any]] = page.evaluate(_RUN_AXE, AXE_TAGS)
    assert not violations, f"axe-core found accessibility violations on {page.url}:\n" + "\n".join(
        f"- {v['id']} ({v['impact']}): {v['help']}\n    " + "\n    ".join(v["nodes"])
        for v in violations
    )


def assert_fits_320(page: Page) -> None:
    """Fail if the page scrolls sideways at 320 CSS px wide (WCAG 1.4.10 Reflow)."""
    original = page.viewport_size
    page.set_viewport_size({"width": 320, "height": 640})
    try:
        width: int = page.evaluate("() => document.documentElement.scrollWidth")
    finally:
        if original is not None and original["width"] != 320:
            page.set_viewport_size(original)
    assert width <= 320, f"{page.url} is {width} px wide at a 320 px viewport"
