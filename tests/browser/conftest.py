"""Browser fixtures: Debian's Chromium through Playwright, pages, failure screenshots.

`browser` is launched once per session from /usr/bin/chromium (never `playwright
install`). Without it the browser tests skip with a reason, unless
`IDP_TEST_REQUIRE_BROWSER=1` (CI), which turns the skip into a failure.

Fixtures: `page` (desktop, JavaScript on), `nojs_page` (JavaScript off), `mobile_page`
(320 x 640), and `new_page(**context_options)` for anything else (several people at once,
a second browser). Each page gets its own context, so no cookies leak between tests, and
a screenshot of every page still open is saved under `test-artifacts/` when a test fails.
Checks live in `tests.browser.toolkit` (`axe_check`, `assert_fits_320`, `serve_app`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.toolkit import forget_console, watch_console

CHROMIUM = Path("/usr/bin/chromium")
REQUIRE_BROWSER_ENV = "IDP_TEST_REQUIRE_BROWSER"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
DEFAULT_TIMEOUT_MS = 10_000

_failed_key = pytest.StashKey[bool]()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test under tests/browser with `browser`, so `-m "not browser"` works."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.path).parents:
            item.add_marker(pytest.mark.browser)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Remember whether the test failed, so page fixtures know to take screenshots."""
    report = yield
    if report.failed and report.when in ("setup", "call"):
        item.stash[_failed_key] = True
    return report


def _unavailable(reason: str) -> None:
    if os.environ.get(REQUIRE_BROWSER_ENV) == "1":
        pytest.fail(f"{reason}, but {REQUIRE_BROWSER_ENV}=1 requires the browser tests")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Debian's Chromium, launched once per test session."""
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} is missing: apt-get install -y chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed (pip install -e '.[dev]')")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def _artifact_name(nodeid: str, index: int) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid).strip("_") + f"-{index}.png"


@pytest.fixture
def new_page(browser: Any, request: pytest.FixtureRequest) -> Generator[Callable[..., Any]]:
    """A factory: `new_page(**context_options)` opens a page in a fresh browser context."""
    contexts: list[Any] = []
    pages: list[Any] = []

    def make(**context_options: Any) -> Any:
        context = browser.new_context(**context_options)
        context.set_default_timeout(DEFAULT_TIMEOUT_MS)
        contexts.append(context)
        opened = context.new_page()
        watch_console(opened)
        pages.append(opened)
        return opened

    yield make
    if request.node.stash.get(_failed_key, False):
        ARTIFACTS.mkdir(exist_ok=True)
        for index, opened in enumerate(pages):
            if not opened.is_closed():
                path = ARTIFACTS / _artifact_name(request.node.nodeid, index)
                opened.screenshot(path=str(path), full_page=True)
    for opened in pages:
        forget_console(opened)
    for context in contexts:
        context.close()


@pytest.fixture
def page(new_page: Callable[..., Any]) -> Any:
    """A desktop page with JavaScript enabled (axe checks run here)."""
    return new_page(viewport={"width": 1280, "height": 900})


@pytest.fixture
def nojs_page(new_page: Callable[..., Any]) -> Any:
    """A page with JavaScript disabled: the journeys must work without scripts."""
    return new_page(java_script_enabled=False, viewport={"width": 1280, "height": 900})


@pytest.fixture
def mobile_page(new_page: Callable[..., Any]) -> Any:
    """A 320 x 640 page, the narrowest screen the pages must fit (WCAG 1.4.10)."""
    return new_page(viewport={"width": 320, "height": 640}, is_mobile=True, has_touch=True)
