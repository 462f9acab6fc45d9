"""The token, introspection and revocation endpoints, answered in front of the application
(pure ASGI).

They are the busiest endpoints, each a form POST answered with JSON, and FastAPI's part
in them (route matching, dependency injection, `Request`, the form parser, the middleware
chain) cost more CPU than Authlib and our grants together (bench/README.md, "What the
profiles say"). Here the body is read straight from ASGI, parsed with `parse_qsl`, and
handed to the protocol server (`idp.oauth.server`), which answers `client_credentials`
on the event loop when it can and everything else in a worker thread with one database
transaction. The response carries the same security headers as every other response
(`idp.web.security`).

Bad input gets an RFC 6749 5.2 JSON error: a body over `MAX_BODY_BYTES` (413), a form or
query that is not UTF-8 (400), a method other than POST (405). An unexpected exception is
logged and answered with a 500 `server_error`, as the application's error handling would.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import orjson
from starlette.applications import Starlette
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from idp.app import Services
from idp.oauth.metadata import INTROSPECTION_PATH, REVOCATION_PATH, TOKEN_PATH
from idp.oauth.server import IdpAuthorizationServer, RequestData, get_oauth_server
from idp.web.security import security_headers

log = logging.getLogger(__name__)

#: Larger than any legitimate request (a private_key_jwt assertion is a few kB).
MAX_BODY_BYTES = 64 * 1024

#: Path -> the endpoint's name in `IdpAuthorizationServer` ("token" is the token endpoint).
ENDPOINTS = {
    TOKEN_PATH: "token",
    INTROSPECTION_PATH: "introspection",
    REVOCATION_PATH: "revocation",
}

Headers = list[tuple[bytes, bytes]]
#: A whole response: its `http.response.start` and `http.response.body` messages.
Messages = tuple[Message, Message]


class _BodyTooLargeError(Exception):
    pass


class _DisconnectedError(Exception):
    """The client went away before its whole request arrived: nothing is done for it."""


class FastProtocol:
    """Answers the form-POST protocol endpoints; passes every other request on."""

    def __init__(
        self, app: ASGIApp, *, server: Callable[[], IdpAuthorizationServer], hsts: bool
    ) -> None:
        self.app = app
        self._server = server
        self._security_headers: Headers = [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in security_headers(hsts=hsts)
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer the protocol endpoints directly; anything else goes to the application."""
        endpoint = ENDPOINTS.get(scope["path"]) if scope["type"] == "http" else None
        if endpoint is None:
            await self.app(scope, receive, send)
            return
        try:
            messages = await self._answer(endpoint, scope, receive)
        except _DisconnectedError:
            return  # a truncated form is never acted on
        except Exception:
            log.exception("unhandled error at %s", scope["path"])
            messages = self._error(500, "server_error", "Something went wrong.")
        start, body = messages
        await send(start)
        await send(body)

    async def _answer(self, endpoint: str, scope: Scope, receive: Receive) -> Messages:
        if scope["method"] != "POST":
            return self._error(405, "invalid_request", "Use POST.", extra=[(b"allow", b"POST")])
        try:
            body = await _read_body(receive)
        except _BodyTooLargeError:
            return self._error(413, "invalid_request", "The request is too large.")
        try:
            data = RequestData.of_form_post(scope, body)
        except UnicodeDecodeError:
            return self._error(400, "invalid_request", "The request is not UTF-8 form encoded.")
        server = self._server()
        if endpoint == "token":
            response = await server.token_response(data)
        else:
            response = await server.endpoint_response(endpoint, data)
        return (
            {
                "type": "http.response.start",
                "status": response.status_code,
                "headers": [*response.raw_headers, *self._security_headers],
            },
            {"type": "http.response.body", "body": response.body, "more_body": False},
        )

    def _error(
        self,
        status: int,
        error: str,
        description: str,
        *,
        extra: Sequence[tuple[bytes, bytes]] = (),
    ) -> Messages:
        body = orjson.dumps({"error": error, "error_description": description})
        headers: Headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode("ascii")),
            (b"cache-control", b"no-store"),
            *extra,
            *self._security_headers,
        ]
        return (
            {"type": "http.response.start", "status": status, "headers": headers},
            {"type": "http.response.body", "body": body, "more_body": False},
        )


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _DisconnectedError
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _BodyTooLargeError
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def install(app: Starlette, services: Services) -> None:
    """Put the endpoints in front of `app`'s whole middleware stack."""
    build_inner = app.build_middleware_stack
    hsts = services.settings.secure_cookies

    def build_middleware_stack() -> ASGIApp:
        return FastProtocol(build_inner(), server=lambda: get_oauth_server(services), hsts=hsts)

    setattr(app, "build_middleware_stack", build_middleware_stack)  # noqa: B010
