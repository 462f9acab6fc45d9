"""Discovery and the JWKS answered in front of the application (pure ASGI).

Both documents are precomputed bytes, so routing them through FastAPI (route matching,
dependency injection, `Request` and `Response` objects) cost more than the answer itself
(bench/README.md, "What the profiles say"). This short-cut answers exactly
`GET <well-known path>` and `GET /jwks.json` on the event loop, with the same headers the
routes in `idp.web.discovery` send, the security headers (`idp.web.security`) included;
everything else, other methods too, goes to the application unchanged.

The JWKS is read from the process's keyring without touching the database on the event
loop: the keyring's periodic re-check (another process may have rotated the keys) runs in
a worker thread, only when it is due. Before the keyring is loaded (start-up failed to
reach the database) the request falls through to the regular, threaded route.
"""

from __future__ import annotations

from collections.abc import Callable

from anyio import to_thread
from starlette.applications import Starlette
from starlette.types import ASGIApp, Receive, Scope, Send

from idp.app import Services
from idp.oauth.keyring import KeyRing
from idp.oauth.metadata import (
    JWKS_PATH,
    OAUTH_SERVER_METADATA_PATH,
    OPENID_CONFIGURATION_PATH,
    discovery_bytes,
)
from idp.web.discovery import DISCOVERY_CACHE_CONTROL, JWKS_CACHE_CONTROL, PUBLIC_HEADERS
from idp.web.security import security_headers

Headers = list[tuple[bytes, bytes]]


class FastDocuments:
    """Serves the discovery documents and the JWKS; passes every other request on."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        discovery: bytes,
        discovery_headers: Headers,
        jwks_headers: Headers,
        keyring: Callable[[], KeyRing | None],
    ) -> None:
        self.app = app
        self._discovery = _start(discovery_headers, len(discovery)), _body(discovery)
        self._discovery_paths = frozenset({OPENID_CONFIGURATION_PATH, OAUTH_SERVER_METADATA_PATH})
        self._jwks_headers = jwks_headers
        self._keyring = keyring
        self._jwks: tuple[bytes, dict[str, object]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer the documents directly; anything else goes to the application."""
        if scope["type"] == "http" and scope["method"] == "GET":
            path = scope["path"]
            if path in self._discovery_paths:
                start, body = self._discovery
                await send({**start})
                await send({**body})
                return
            if path == JWKS_PATH and await self._send_jwks(send):
                return
        await self.app(scope, receive, send)

    async def _send_jwks(self, send: Send) -> bool:
        ring = self._keyring()
        if ring is None:
            return False
        if ring.refresh_due():
            # The re-check reads the database: never on the event loop.
            await to_thread.run_sync(ring.maybe_refresh)
        document = ring.jwks_bytes_loaded()
        cached = self._jwks
        if cached is None or cached[0] is not document:
            cached = document, _start(self._jwks_headers, len(document))
            self._jwks = cached
        await send({**cached[1]})
        await send(_body(document))
        return True


def _start(headers: Headers, length: int) -> dict[str, object]:
    return {
        "type": "http.response.start",
        "status": 200,
        "headers": [*headers, (b"content-length", str(length).encode("ascii"))],
    }


def _body(content: bytes) -> dict[str, object]:
    return {"type": "http.response.body", "body": content, "more_body": False}


def _headers(cache_control: str, *, hsts: bool) -> Headers:
    """What the routes in `idp.web.discovery` send, then the security headers."""
    pairs = [
        ("Content-Type", "application/json"),
        ("Cache-Control", cache_control),
        *PUBLIC_HEADERS.items(),
        *security_headers(hsts=hsts),
    ]
    merged: dict[str, tuple[str, str]] = {}
    for name, value in pairs:
        merged[name.lower()] = (name.lower(), value)  # a later header replaces, as there
    return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in merged.values()]


def install(app: Starlette, services: Services) -> None:
    """Put the short-cut in front of `app`'s whole middleware stack."""
    hsts = services.settings.secure_cookies
    build_inner = app.build_middleware_stack

    def keyring() -> KeyRing | None:
        ring = services.extras.get("keyring")
        return ring if isinstance(ring, KeyRing) else None

    def build_middleware_stack() -> ASGIApp:
        return FastDocuments(
            build_inner(),
            discovery=discovery_bytes(services.settings),
            discovery_headers=_headers(DISCOVERY_CACHE_CONTROL, hsts=hsts),
            jwks_headers=_headers(JWKS_CACHE_CONTROL, hsts=hsts),
            keyring=keyring,
        )

    setattr(app, "build_middleware_stack", build_middleware_stack)  # noqa: B010
