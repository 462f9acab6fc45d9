"""`response_mode=form_post` in Chromium: the same-origin script submits the form under
the strict CSP (no inline script), and without JavaScript the person presses Continue.
The app is a loopback HTTP server that records the POSTed authorization response."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import pytest

from idp.accounts.sessions import session_cookie_name
from tests.browser.toolkit import axe_check, csp_violations
from tests.conftest import LiveServer, free_port
from tests.flows.oidc import (
    RegisteredClient,
    oauth_client,
    register_client,
    register_person,
    signed_in_browser,
)


class _Callback(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", "0"))
        form = parse_qs(self.rfile.read(length).decode())
        self.server.posts.append({k: v[0] for k, v in form.items()})  # type: ignore[attr-defined]
        body = b"<!doctype html><title>App</title><h1>Signed in to the app</h1>"
        self.send_response(200)
        self.send_header("content-type", "text/html; charset=utf-8")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def relying_party() -> Iterator[tuple[str, list[dict[str, str]]]]:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Callback)
    server.posts = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/callback", server.posts  # type: ignore[attr-defined]
    server.shutdown()
    server.server_close()


def signed_in(page: Any, server: LiveServer) -> None:
    """Give the page's browser a session, as the sign-in pages would have."""
    person = register_person(server)
    cookie = signed_in_browser(server, person).cookies[
        session_cookie_name(server.services.settings)
    ]
    page.context.add_cookies(
        [
            {
                "name": session_cookie_name(server.services.settings),
                "value": cookie,
                "url": server.url,
            }
        ]
    )


def form_post_url(server: LiveServer, app: RegisteredClient) -> str:
    url, _ = oauth_client(server, app, code_challenge_method="S256").create_authorization_url(
        f"{server.url}/authorize",
        code_verifier="f" * 50,
        state="st-1",
        response_mode="form_post",
    )
    return str(url)


@pytest.mark.parametrize("javascript", [True, False])
def test_form_post_reaches_the_app(
    new_page: Any, live_server: LiveServer, relying_party: Any, javascript: bool
) -> None:
    redirect_uri, posts = relying_party
    app = register_client(live_server, client_id="fp-app", redirect_uris=[redirect_uri])
    page = new_page(java_script_enabled=javascript)
    signed_in(page, live_server)
    page.goto(form_post_url(live_server, app))
    if javascript:
        page.wait_for_url(redirect_uri)
    else:
        assert page.get_by_role("heading", level=1).inner_text() == "Continue to the service"
        page.get_by_role("button", name="Continue").click()
        page.wait_for_url(redirect_uri)
    assert page.get_by_role("heading", level=1).inner_text() == "Signed in to the app"
    assert len(posts) == 1
    assert posts[0]["state"] == "st-1"
    assert posts[0]["iss"] == live_server.url
    assert posts[0]["code"]
    assert not csp_violations(page)


def test_form_post_page_is_accessible(new_page: Any, live_server: LiveServer) -> None:
    app = register_client(live_server, client_id="fp-app", redirect_uris=["https://app.example/cb"])
    page = new_page(java_script_enabled=True)
    signed_in(page, live_server)
    # Hold the page still for the scan: the submit script is replaced by an empty one.
    page.route("**/authorize/form_post.js", lambda route: route.fulfill(body="", status=200))
    page.goto(form_post_url(live_server, app))
    assert page.get_by_role("heading", level=1).inner_text() == "Continue to the service"
    axe_check(page)
