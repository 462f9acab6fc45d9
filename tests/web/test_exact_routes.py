"""idp.web.exact_routes: the sign-in journey's routes are dispatched by exact method and
path, to the endpoint FastAPI's router would have chosen, inside the same middleware
(security headers, the 500 page); anything else still goes through the router."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match

from idp.app import Services, create_app
from idp.web import exact_routes


def flattened(routes: list[BaseRoute], prefix: str = "") -> Iterator[tuple[str, BaseRoute]]:
    """The application's routes in the order the router tries them, with their prefix."""
    for route in routes:
        inner = getattr(route, "original_router", None)  # an included router
        if inner is not None:
            yield from flattened(inner.routes, prefix + route.include_context.prefix)  # type: ignore[attr-defined]
        else:
            yield prefix, route


def scope_for(method: str, path: str) -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "root_path": "", "headers": []}


@pytest.fixture
def app(services: Services) -> FastAPI:
    return create_app(services=services)


@pytest.mark.parametrize(("method", "path"), sorted(exact_routes.journey_routes()))
def test_each_exact_route_is_the_one_the_router_would_choose(
    app: FastAPI, method: str, path: str
) -> None:
    endpoint = exact_routes.journey_routes()[(method, path)]
    chosen: BaseRoute | None = None
    for prefix, route in flattened(app.router.routes):
        if isinstance(route, APIRoute):
            if prefix + route.path == path and method in route.methods:
                chosen = route
                break
        else:  # a mount (static files): it must not claim the path first
            match, _ = route.matches(scope_for(method, path))
            assert match is Match.NONE, (route, path)
    assert isinstance(chosen, APIRoute), (method, path)
    assert chosen.endpoint is endpoint
    # Nothing for FastAPI to solve: the request is all the endpoint takes.
    dependant = chosen.dependant
    assert dependant.request_param_name == "request"
    for kind in ("path_params", "query_params", "header_params", "cookie_params", "body_params"):
        assert getattr(dependant, kind) == [], kind
    assert dependant.dependencies == []


def test_an_error_in_an_exact_route_is_the_usual_500_page_with_the_headers(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(request: Request) -> Response:
        raise RuntimeError("boom")

    routes = {**exact_routes.journey_routes(), ("GET", "/signin"): broken}
    monkeypatch.setattr(exact_routes, "journey_routes", lambda: routes)
    app = create_app(services=services)
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/signin?tx=x")
    assert response.status_code == 500
    assert "boom" not in response.text
    assert "content-security-policy" in response.headers
    assert response.headers["x-frame-options"] == "DENY"


def test_other_methods_and_paths_still_go_through_the_router(services: Services) -> None:
    with TestClient(create_app(services=services)) as client:
        assert client.get("/healthz").status_code == 200
        assert client.put("/signin").status_code == 405  # the router's answer
        slash = client.get("/signin/", follow_redirects=False)
        assert slash.status_code in {307, 404}  # not the page
        head = client.head("/signin?tx=unknown")
    assert head.status_code == 405  # the router's answer: the page routes are GET only
    assert "content-security-policy" in head.headers
