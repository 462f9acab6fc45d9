"""Security headers on every kind of response, over real HTTP (issue 4 point 6).

The app comes from the real `create_app` with a few extra routes, one per response type,
served by uvicorn on loopback and read with httpx.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse

from idp.app import build_services, create_app
from idp.settings import Settings
from idp.web.security import allow_form_action, content_security_policy
from idp.web.static_files import static_url
from tests.servers import serve_app

PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
ALWAYS = {
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
}


def _app(database: Path, issuer: str) -> FastAPI:
    settings = Settings(database_url=f"sqlite:///{database}", issuer=issuer)
    app = create_app(services=build_services(settings))

    @app.get("/t/html")
    def html() -> HTMLResponse:
        return HTMLResponse(
            "<!DOCTYPE html><title>t</title>", headers={"Cache-Control": "max-age=60"}
        )

    @app.get("/t/form-post")
    def form_post(request: Request) -> HTMLResponse:
        allow_form_action(request, "https://RP.example:8443/cb?x=1", "com.example.app:/cb")
        allow_form_action(request, "https://rp.example:8443/other")
        return HTMLResponse("<!DOCTYPE html><title>t</title>")

    @app.get("/t/framed")
    def framed() -> HTMLResponse:
        # A route that sets one of the middleware's headers itself (it loses).
        return HTMLResponse(
            "<!DOCTYPE html><title>t</title>",
            headers={"X-Frame-Options": "SAMEORIGIN", "Content-Security-Policy": "default-src *"},
        )

    @app.get("/t/json")
    def json() -> JSONResponse:
        return JSONResponse({"ok": True}, headers={"Cache-Control": "max-age=60"})

    @app.get("/t/text")
    def text() -> PlainTextResponse:
        return PlainTextResponse("ok")

    @app.post("/t/redirect")
    def redirect() -> RedirectResponse:
        return RedirectResponse("/t/html", status_code=303)

    @app.get("/t/error")
    def error() -> None:
        raise RuntimeError("boom")

    return app


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The app with an http issuer on loopback."""
    database = tmp_path_factory.mktemp("headers") / "idp.sqlite3"
    with serve_app(_app(database, "http://127.0.0.1:8000")) as url:
        yield url


def _assert_common(response: httpx.Response) -> None:
    for name, value in ALWAYS.items():
        assert response.headers.get(name) == value, name
    assert response.headers["content-security-policy"] == PAGE_CSP
    assert "strict-transport-security" not in response.headers


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/t/html", 200),
        ("GET", "/t/json", 200),
        ("GET", "/t/text", 200),
        ("POST", "/t/redirect", 303),
        ("GET", "/healthz", 200),
        ("GET", "/no-such-page", 404),
        ("POST", "/t/html", 405),
        ("GET", "/static/idp.css", 200),
        ("GET", "/static/missing.css", 404),
    ],
)
def test_every_response_has_the_security_headers(
    base_url: str, method: str, path: str, status: int
) -> None:
    response = httpx.request(method, base_url + path, follow_redirects=False)
    assert response.status_code == status
    _assert_common(response)


def test_unhandled_error_still_has_the_headers(base_url: str) -> None:
    response = httpx.get(f"{base_url}/t/error")
    assert response.status_code == 500
    _assert_common(response)


def test_html_is_never_cached_but_json_keeps_its_own_policy(base_url: str) -> None:
    assert httpx.get(f"{base_url}/t/html").headers["cache-control"] == "no-store"
    assert httpx.get(f"{base_url}/t/json").headers["cache-control"] == "max-age=60"


@pytest.mark.parametrize("path", ["/t/html", "/t/framed", "/t/text", "/t/form-post"])
def test_each_header_is_sent_once_and_ours_wins(base_url: str, path: str) -> None:
    response = httpx.get(base_url + path)
    for name in [*ALWAYS, "content-security-policy"]:
        assert len(response.headers.get_list(name)) == 1, name
    if response.headers["content-type"].startswith("text/html"):
        assert response.headers.get_list("cache-control") == ["no-store"]
    if path == "/t/framed":
        _assert_common(response)


def test_a_route_can_allow_form_targets_for_its_own_response_only(base_url: str) -> None:
    allowed = httpx.get(f"{base_url}/t/form-post").headers["content-security-policy"]
    assert allowed.endswith("form-action 'self' https://rp.example:8443 com.example.app:")
    assert allowed == content_security_policy(["https://rp.example:8443", "com.example.app:"])
    following = httpx.get(f"{base_url}/t/html").headers["content-security-policy"]
    assert following == PAGE_CSP


def test_static_files_are_cached_by_version(base_url: str) -> None:
    versioned = httpx.get(base_url + static_url("nhsuk/nhsuk.min.css"))
    assert versioned.status_code == 200
    assert versioned.headers["content-type"].startswith("text/css")
    assert versioned.headers["cache-control"] == "public, max-age=31536000, immutable"
    plain = httpx.get(f"{base_url}/static/nhsuk/nhsuk.min.css")
    assert plain.headers["cache-control"] == "public, max-age=300"
    assert plain.content == versioned.content


def test_static_url_hashes_content_and_refuses_missing_or_outside_files() -> None:
    url = static_url("idp.css")
    assert url.startswith("/static/idp.css?v=")
    assert len(url.rsplit("=", 1)[1]) == 12
    with pytest.raises(FileNotFoundError):
        static_url("nope.css")
    with pytest.raises(FileNotFoundError):
        static_url("../security.py")


def test_hsts_only_when_the_issuer_is_https(tmp_path: Path) -> None:
    app = _app(tmp_path / "idp.sqlite3", "https://idp.example")
    with serve_app(app) as url:
        response = httpx.get(f"{url}/healthz")
    assert response.headers["strict-transport-security"] == "max-age=31536000"
