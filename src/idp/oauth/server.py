"""The one adapter between FastAPI/Starlette and Authlib's (synchronous) server.

Modelled on `authlib/integrations/flask_oauth2`: an `AuthorizationServer` subclass whose
`create_oauth2_request` wraps a request whose body was already read in the async route
(`RequestData.read`), and whose `handle_response` builds a Starlette response. Authlib
runs in a worker thread (`IdpAuthorizationServer.run`) with one database session per request,
bound in `idp.oauth.context` because Authlib calls hooks like `query_client(client_id)`
without the request.
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
import functools
import logging
import sqlite3
import threading
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

import orjson
from authlib.common.security import is_secure_transport
from authlib.consts import default_json_headers
from authlib.oauth2 import AuthorizationServer, OAuth2Error, OAuth2Request
from authlib.oauth2.rfc6749 import OAuth2Payload
from authlib.oauth2.rfc6749.errors import InsecureTransportError
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope

from idp.async_db import async_db
from idp.loop_sqlite import Busy, LoopReader, loop_database
from idp.models import utcnow
from idp.oauth import grants, store, token_lookup, tokens
from idp.oauth.client_auth import PrivateKeyJWT
from idp.oauth.client_cache import ClientCache
from idp.oauth.context import (
    ClaimedOnLoop,
    NoDatabaseBoundError,
    RedeemedOnLoop,
    bound_db,
    claimed_on_loop,
    current_db,
    pending_refresh_rows,
    redeemed_on_loop,
)
from idp.oauth.errors import InvalidRequestError, json_error
from idp.oauth.grants.base import TOKEN_AUTH_METHODS
from idp.oauth.introspection import Introspection
from idp.oauth.keys import SUPPORTED_ALGS
from idp.oauth.models import OAuthClient, Subject
from idp.oauth.revocation import Revocation

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from idp.app import Services
    from idp.oauth.keyring import KeyRing

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class RequestData:
    """Everything Authlib reads from an HTTP request, captured in the async route."""

    method: str
    url: str
    headers: Mapping[str, str]
    query: Sequence[tuple[str, str]]
    form: Sequence[tuple[str, str]] = ()
    cookies: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    async def read(cls, request: Request) -> RequestData:
        """Read the form body (if any) now, so the worker thread never awaits."""
        form: list[tuple[str, str]] = []
        content_type = request.headers.get("content-type", "")
        if request.method == "POST" and content_type.startswith(
            "application/x-www-form-urlencoded"
        ):
            parsed = await request.form()
            form = [(k, v) for k, v in parsed.multi_items() if isinstance(v, str)]
        return cls(
            method=request.method,
            url=str(request.url),
            headers=request.headers,  # case-insensitive, as Authlib expects
            query=list(request.query_params.multi_items()),
            form=form,
            cookies=dict(request.cookies),
        )

    @classmethod
    def of_form_post(cls, scope: Scope, body: bytes) -> RequestData:
        """A POST read by a pure-ASGI endpoint (`idp.web.fast_protocol`): the body parsed
        as an `application/x-www-form-urlencoded` form when it says it is one.

        Raises UnicodeDecodeError when the body or query is not UTF-8 once decoded."""
        headers = Headers(scope=scope)
        form: list[tuple[str, str]] = []
        if headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            form = _parse_pairs(body.decode("utf-8"))
        query = scope.get("query_string", b"").decode("latin-1")
        return cls(
            method=scope["method"],
            url=scope["path"] + (f"?{query}" if query else ""),
            headers=headers,
            query=_parse_pairs(query),
            form=form,
        )

    @classmethod
    def of_params(cls, params: Mapping[str, str], *, url: str) -> RequestData:
        """A request rebuilt from stored parameters (a resumed login transaction)."""
        return cls(method="GET", url=url, headers=Headers(), query=list(params.items()))


def _parse_pairs(encoded: str) -> list[tuple[str, str]]:
    """`name=value&...` pairs, percent-decoded as UTF-8 (strictly), blanks kept."""
    return parse_qsl(encoded, keep_blank_values=True, encoding="utf-8", errors="strict")


class _Payload(OAuth2Payload):  # type: ignore[misc]
    """Query and form values together, query first (like Flask's `request.values`)."""

    def __init__(self, pairs: Sequence[tuple[str, str]]) -> None:
        self._pairs = pairs

    @cached_property
    def data(self) -> dict[str, str]:
        merged: dict[str, str] = {}
        for key, value in self._pairs:
            merged.setdefault(key, value)
        return merged

    @cached_property
    def datalist(self) -> defaultdict[str, list[str]]:
        values: defaultdict[str, list[str]] = defaultdict(list)
        for key, value in self._pairs:
            values[key].append(value)
        return values


class StarletteOAuth2Request(OAuth2Request):  # type: ignore[misc]
    """Authlib's request over `RequestData`; `server` lets extensions reach settings."""

    def __init__(self, data: RequestData, server: IdpAuthorizationServer) -> None:
        # The public URL (issuer + path), not the socket's: behind a TLS-terminating
        # proxy the inner URL is http, which Authlib's transport check would refuse.
        parts = urlsplit(data.url)
        public = server.settings.issuer + parts.path + (f"?{parts.query}" if parts.query else "")
        # Authlib's `__init__` checks the transport of `public` (reading os.environ) on
        # every request, a good share of an introspection's CPU. `public` is the issuer
        # plus a path, so the server decided once (`secure_transport`); an insecure issuer
        # still gets Authlib's check, and its error, on every request.
        if not server.secure_transport:
            InsecureTransportError.check(public)
        # What `OAuth2Request.__init__` sets (tests/oauth/test_server_adapter.py checks
        # that this stays in step with Authlib).
        self.method = data.method
        self.uri = public
        self.headers = data.headers
        self._body = None
        self.client = None
        self.auth_method = None
        self.user = None
        self.authorization_code = None
        self.refresh_token = None
        self.credential = None
        self._scope = None
        self.source = data
        self.server = server
        #: (client, endpoint) once `IdpAuthorizationServer.authenticate_client` succeeded.
        self.authenticated: tuple[OAuthClient, str] | None = None
        self.payload = _Payload([*data.query, *data.form])
        self._form = dict(reversed(data.form))
        self._args = dict(reversed(data.query))

    @property
    def args(self) -> dict[str, str]:
        return self._args

    @property
    def form(self) -> dict[str, str]:
        return self._form


class IdpAuthorizationServer(AuthorizationServer):  # type: ignore[misc]
    """Authlib's server wired to our database, keys, clock and grants."""

    def __init__(
        self,
        services: Services,
        *,
        now: Callable[[], dt.datetime] = utcnow,
        clients: ClientCache | None = None,
    ) -> None:
        super().__init__(scopes_supported=None)
        self.services = services
        self.settings = services.settings
        #: The clock; tests replace it to expire codes and tokens without sleeping.
        self.now = now
        #: Registered clients, held for a few seconds (see `idp.oauth.client_cache`).
        self.clients = clients or ClientCache()
        from idp.app import PROTOCOL_THREADS

        #: The protocol's worker threads (anyio's hand-off cost three times as much).
        self._executor = ThreadPoolExecutor(PROTOCOL_THREADS, thread_name_prefix="protocol")
        #: SQLite: introspection's revocation read on the event loop (None elsewhere).
        self._loop_reader = LoopReader.for_engine(services.engine)
        #: Whether the issuer's URLs pass Authlib's transport check (https, loopback, or
        #: AUTHLIB_INSECURE_TRANSPORT set when the server was built).
        self.secure_transport = is_secure_transport(self.settings.issuer + "/")
        self.token_settings = tokens.TokenSettings(
            issuer=self.settings.issuer,
            access_token_seconds=self.settings.access_token_seconds,
            id_token_seconds=self.settings.id_token_seconds,
            access_token_alg=self.settings.access_token_alg,
        )
        self.register_token_generator("default", self._generate_token)
        self.register_client_auth_method(
            "private_key_jwt", PrivateKeyJWT(issuer=self.settings.issuer)
        )
        self.register_grant(
            grants.AuthorizationCodeGrant,
            [grants.RequiredS256CodeChallenge(), grants.OpenIDCodeExtension()],
        )
        self.register_grant(grants.RefreshTokenGrant, [grants.IdTokenOnRefresh()])
        self.register_grant(grants.ClientCredentialsGrant)
        self.register_endpoint(Introspection)
        self.register_endpoint(Revocation)

    @property
    def keys(self) -> tokens.SigningKeys:
        """The process's keyring (loaded once, refreshed from the database)."""
        from idp.oauth.keyring import get_keyring

        return get_keyring(self.services)

    # -- Authlib hooks -----------------------------------------------------------------

    def query_client(self, client_id: str) -> OAuthClient | None:
        if not isinstance(client_id, str) or len(client_id) > 64:
            return None
        snapshot = self.clients.cached(client_id) or self.clients.get(current_db(), client_id)
        return OAuthClient(snapshot) if snapshot is not None else None

    def save_token(self, token: dict[str, Any], request: Any) -> None:
        refresh = token.get("refresh_token")
        rotated = claimed_on_loop.get()
        if rotated is not None and refresh == rotated.successor:
            return  # stored with the claim (`_refresh_on_loop`)
        if refresh and isinstance(request.user, Subject):
            row = store.refresh_token_row(
                token=refresh,
                subject=request.user,
                client_id=request.client.get_client_id(),
                scope=token["scope"],
                now=self.now(),
                idle_seconds=self.settings.refresh_token_idle_seconds,
            )
            pending = pending_refresh_rows.get()
            if pending is not None:  # written by `_token_on_loop`, in its transaction
                pending.append(row)
            else:
                store.insert_refresh_token(current_db(), row)

    def _generate_token(
        self,
        *,
        grant_type: str,
        client: OAuthClient,
        user: Subject | None = None,
        scope: str | None = None,
        expires_in: int | None = None,
        include_refresh_token: bool = True,
    ) -> dict[str, Any]:
        scope = scope or ""
        claims = tokens.access_token_claims(
            settings=self.token_settings,
            client_id=client.get_client_id(),
            scope=scope,
            subject=user,
            now=self.now(),
        )
        token: dict[str, Any] = {
            "token_type": "Bearer",
            "access_token": tokens.sign_access_token(
                claims, self.keys, alg=self.settings.access_token_alg
            ),
            "expires_in": self.settings.access_token_seconds,
            "scope": scope,
        }
        if include_refresh_token and user is not None:
            rotated = claimed_on_loop.get()
            token["refresh_token"] = (
                rotated.successor if rotated is not None else tokens.new_refresh_token()
            )
        return token

    def authenticate_client(
        self, request: Any, methods: Sequence[str], endpoint: str = "token"
    ) -> OAuthClient:
        """Authlib's client authentication, done once per request: the event-loop token
        path authenticates before it claims anything, then hands the same request to
        the grant, which would otherwise authenticate it again."""
        done = getattr(request, "authenticated", None)
        if done is not None and done[1] == endpoint and request.auth_method in methods:
            client: OAuthClient = done[0]
            return client
        client = super().authenticate_client(request, methods, endpoint)
        request.authenticated = (client, endpoint)
        return client

    def create_oauth2_request(self, request: Any) -> OAuth2Request:
        if isinstance(request, OAuth2Request):
            return request
        return StarletteOAuth2Request(request, self)

    def create_json_request(self, request: Any) -> Any:
        raise NotImplementedError("no JSON endpoints")

    def handle_response(
        self, status_code: int, payload: Any, headers: Sequence[tuple[str, str]]
    ) -> Response:
        body = orjson.dumps(payload) if isinstance(payload, dict) else payload
        response = Response(body, status_code=status_code)
        for name, value in headers:
            response.headers[name] = value
        if isinstance(payload, dict):
            # RFC 6749 5.1: token responses (and errors) are never cached.
            response.headers["Cache-Control"] = "no-store"
            response.headers["Pragma"] = "no-cache"
        return response

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        """No signals: auditing happens in the routes."""

    # -- running Authlib ---------------------------------------------------------------

    def in_transaction(self, func: Callable[..., T], *args: Any, read_only: bool = False) -> T:
        """Run `func` with a database session bound, committed when it returns (error
        responses included: a reused code must stay revoked), rolled back if it raises.
        `read_only` work (it must not write) runs in a deferred transaction on SQLite, so
        it neither takes nor waits for the write lock."""
        # Load the keyring (and create the first keys) before this request's transaction
        # opens: on SQLite a key written from inside it would wait for our own lock.
        for alg in SUPPORTED_ALGS:
            self.keys.signing_key(alg)
        session: Session
        factory = self.services.read_sessions if read_only else self.services.sessions
        with factory() as session, session.begin(), bound_db(session):
            return func(*args)

    async def run(self, func: Callable[..., T], *args: Any, read_only: bool = False) -> T:
        """`in_transaction` in a worker thread, off the event loop (the context, e.g.
        log fields, goes along)."""
        work = functools.partial(self.in_transaction, func, *args, read_only=read_only)
        context = contextvars.copy_context()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, context.run, work)

    def close(self) -> None:
        """Let the worker threads end and close the event loop's SQLite connection (at
        application shutdown)."""
        self._executor.shutdown(wait=False)
        if self._loop_reader is not None:
            self._loop_reader.close()

    async def token_response(self, data: RequestData) -> Response:
        """The token endpoint (RFC 6749 3.2)."""
        names = [name for name, _ in data.form]
        if len(names) != len(set(names)):
            # RFC 6749 3.2: parameters MUST NOT be included more than once.
            return json_error(InvalidRequestError("A parameter was sent more than once."))
        response: Response
        answered = await self._token_on_loop(data)
        if answered is not None:
            return answered
        if self._may_answer_on_loop(data, names):
            try:
                response = self.create_token_response(data)
                return response
            except NoDatabaseBoundError:
                pass  # the client was not cached after all: again, with a session
        response = await self.run(self.create_token_response, data)
        return response

    def _may_answer_on_loop(self, data: RequestData, names: list[str]) -> bool:
        """Whether a token request may be tried on the event loop, without a database
        session and without the hop to a worker thread: a `client_credentials` request
        authenticated by a client secret (neither reads nor writes the database once the
        client is cached) while the keyring holds keys it need not re-check. Should the
        client not be cached after all, reading it raises `NoDatabaseBoundError` before
        anything was issued, and the request runs again in a worker thread."""
        if "client_assertion" in names or ("grant_type", "client_credentials") not in data.form:
            return False
        return self._keyring_on_loop() is not None

    def _keyring_on_loop(self) -> KeyRing | None:
        """The keyring, when the event loop may use it: loaded, and no re-check due (the
        re-check reads the database, which the loop never does through the keyring)."""
        from idp.oauth.keyring import KeyRing

        ring = self.services.extras.get("keyring")
        return ring if isinstance(ring, KeyRing) and not ring.refresh_due() else None

    async def _token_on_loop(self, data: RequestData) -> Response | None:
        """A refresh or a code redemption on the event loop, without a worker thread or
        a session (a cached client authenticated by its secret, or a public client by its
        id; on SQLite code redemptions only, the write lock free). None sends the request
        to the threaded path: when this does not apply, or when nothing could be claimed
        (reused, revoked, expired, another client's, unknown: nothing has changed, and the
        threaded path finds out why and acts on it, a reuse revoking the grant)."""
        engine = self.services.engine
        form = dict(data.form)  # no repeated names (checked)
        grant_type = form.get("grant_type")
        value = form.get("refresh_token" if grant_type == "refresh_token" else "code")
        if (
            grant_type not in ("refresh_token", "authorization_code")
            # SQLite: code redemptions only (a refresh's rotation is PostgreSQL's one
            # statement); `loop_database` says whether the loop can have the file.
            or (engine.dialect.name != "postgresql" and grant_type != "authorization_code")
            or not value
            or "client_assertion" in form
            # A narrower scope is checked after the claim: the threaded path checks it
            # before anything is written.
            or (grant_type == "refresh_token" and "scope" in form)
            or self._keyring_on_loop() is None
        ):
            return None
        request = self.create_oauth2_request(data)
        try:  # the client first: an unauthenticated caller never gets to claim
            client = self.authenticate_client(request, TOKEN_AUTH_METHODS, "token")
        except (OAuth2Error, NoDatabaseBoundError):
            return None
        if not client.check_grant_type(grant_type):
            return None
        if grant_type == "refresh_token":
            return await self._refresh_on_loop(request, client.get_client_id(), value)
        return await self._redeem_on_loop(request, client.get_client_id(), value)

    async def _refresh_on_loop(
        self, request: OAuth2Request, client_id: str, value: str
    ) -> Response | None:
        """A refresh in one statement (`store.refresh_rotation_query`: the claim the
        threaded path makes, and the insert of the new refresh token, made beforehand),
        then Authlib's grant issues the tokens with that rotation bound
        (`context.claimed_on_loop`). Nothing after the statement needs the database or
        can refuse the request (its client, grant type and keys were checked, and a
        narrower scope goes to the threaded path), so the tokens are signed after the
        commit; should that fail all the same, the client has lost a response, as when
        the network drops it, and signs in again."""
        now = self.now()
        successor = tokens.new_refresh_token()
        sql, params = store.refresh_rotation_query(
            token=value,
            successor=successor,
            client_id=client_id,
            now=now,
            idle_seconds=self.settings.refresh_token_idle_seconds,
        )
        row = await async_db(self.services).fetch_row(sql, params)
        if row is None:
            return None  # nothing written
        rotation = ClaimedOnLoop(value, client_id, store.claimed_from_row(row), successor)
        bound = claimed_on_loop.set(rotation)
        try:  # the request authenticated above (`authenticate_client`); never a thread
            # now: the token is rotated, and would look reused there
            response: Response = self.create_token_response(request)
        finally:
            claimed_on_loop.reset(bound)
        return response

    async def _redeem_on_loop(
        self, request: OAuth2Request, client_id: str, value: str
    ) -> Response | None:
        """A code redemption in one `idp.async_db` transaction: the code redeemed by the
        statement the threaded path runs (`store.code_redeem_query`), Authlib's grant
        issuing the tokens with that redemption bound (`context.redeemed_on_loop`), the
        new refresh token inserted with the COMMIT. The grant's checks (PKCE, the
        redirect URI) come after the redemption; a refusal is an error response, and is
        committed as on the threaded path (`in_transaction`): the code is used up."""
        engine, now = self.services.engine, self.now()
        database = loop_database(self.services)
        if database is None:
            return None
        try:
            async with database.transaction() as transaction:
                row = await store.redeem_code_on_loop(
                    transaction, dialect=engine.dialect, code=value, client_id=client_id, now=now
                )
                if row is None:
                    raise _NotClaimedError
                redemption = store.redeemed_from_row(row, now=now)
                redeemed = redeemed_on_loop.set(RedeemedOnLoop(value, client_id, redemption))
                rows: list[dict[str, Any]] = []
                pending = pending_refresh_rows.set(rows)
                try:  # the request authenticated above (`authenticate_client`)
                    response: Response = self.create_token_response(request)
                finally:
                    pending_refresh_rows.reset(pending)
                    redeemed_on_loop.reset(redeemed)
                for new in rows:
                    transaction.defer(*store.refresh_token_insert(engine.dialect, new))
        except (_NotClaimedError, NoDatabaseBoundError, Busy):
            return None  # rolled back (or never begun): nothing changed
        return response

    def _revoked_on_loop(self, *, jti: str, grant_id: str | None) -> bool | None:
        """SQLite: whether the access token was revoked, read on the event loop
        (`idp.loop_sqlite`); None when there is no such reader, or the database cannot be
        read without waiting."""
        if self._loop_reader is None:
            return None
        sql, params = store.access_token_revocation_query(
            self.services.engine.dialect, jti=jti, grant_id=grant_id
        )
        assert isinstance(params, tuple)  # SQLite's parameters are positional
        try:
            row = self._loop_reader.fetch_one(sql, params)
        except sqlite3.Error as exc:
            log.debug("revocation read on the event loop failed: %s", exc.__class__.__name__)
            return None
        return store.access_token_revoked_from(row)

    async def _introspect_on_loop(self, data: RequestData) -> Response | None:
        """Introspection of one of our access tokens by a cached client, answered on the
        event loop with one read (on PostgreSQL over `idp.async_db`; on SQLite on a
        connection of the loop's own, `idp.loop_sqlite`, or where that cannot read at
        once in a worker thread, `store.access_token_revoked_now`): the client is
        authenticated first, then the token verified, then its revocation read, then
        Authlib's endpoint answers with both facts bound (`token_lookup.
        checked_access_token`). None when this does not apply (another kind of token, a
        client or key not loaded here): the caller then runs the whole endpoint in a
        worker thread with a session."""
        ring = self._keyring_on_loop()
        form = dict(reversed(data.form))  # the first of repeated names, as Authlib reads
        value = form.get("token", "")
        if (
            ring is None
            or value.count(".") != 2
            or form.get("token_type_hint") == "refresh_token"  # looked up first: a read
        ):
            return None
        endpoint: Introspection = self._endpoints[Introspection.ENDPOINT_NAME][0]
        request = self.create_oauth2_request(data)
        try:
            client = endpoint.authenticate_endpoint_client(request)
            claims = tokens.verify_access_token(  # an unknown kid: the thread re-reads keys
                value,
                keys=ring,
                issuer=self.settings.issuer,
                now=self.now(),
                reread_unknown_kid=False,
            )
        except (OAuth2Error, NoDatabaseBoundError, tokens.TokenInvalidError):
            return None  # the whole endpoint in a thread says why, or answers otherwise
        jti, grant_id = token_lookup.access_token_ids(claims)
        engine = self.services.engine
        revoked: bool | None
        if engine.dialect.name == "postgresql":
            sql, params = store.access_token_revocation_libpq(jti=jti, grant_id=grant_id)
            flags = await async_db(self.services).fetch_flags(sql, params)
            revoked = store.access_token_revoked_from(flags)
        else:
            revoked = self._revoked_on_loop(jti=jti, grant_id=grant_id)
        if revoked is None:  # SQLite could not be read at once: wait in a worker thread
            read = functools.partial(
                store.access_token_revoked_now, engine, jti=jti, grant_id=grant_id
            )
            revoked = await asyncio.get_running_loop().run_in_executor(self._executor, read)
        bound = token_lookup.checked_access_token.set(
            token_lookup.CheckedAccessToken(value, claims, revoked)
        )
        # What Authlib's IntrospectionEndpoint.create_endpoint_response does, with the
        # client authenticated above.
        try:
            token = endpoint.authenticate_token(request, client)
            payload = endpoint.create_introspection_payload(token)
            response: Response = self.handle_response(200, payload, default_json_headers)
            return response
        except OAuth2Error as error:
            error_response: Response = self.handle_error_response(request, error)
            return error_response
        except NoDatabaseBoundError:
            return None  # something else needed the database after all: all in a thread
        finally:
            token_lookup.checked_access_token.reset(bound)

    async def endpoint_response(self, name: str, data: RequestData) -> Response:
        """Introspection (RFC 7662) or revocation (RFC 7009)."""
        # Introspection only reads, unless the client authenticates with an assertion,
        # whose `jti` is recorded against replay (RFC 7523 3).
        read_only = name == Introspection.ENDPOINT_NAME and not any(
            key == "client_assertion" for key, _ in data.form
        )
        if read_only:
            answered = await self._introspect_on_loop(data)
            if answered is not None:
                return answered
        response: Response = await self.run(
            self.create_endpoint_response, name, data, read_only=read_only
        )
        return response


class _NotClaimedError(Exception):
    """The refresh token or code could not be claimed on the event loop."""


_LOCK = threading.Lock()


def get_oauth_server(services: Services) -> IdpAuthorizationServer:
    """The process's server, built once and kept in `services.extras["oauth_server"]`."""
    existing = services.extras.get("oauth_server")
    if isinstance(existing, IdpAuthorizationServer):
        return existing
    with _LOCK:
        existing = services.extras.get("oauth_server")
        if not isinstance(existing, IdpAuthorizationServer):
            existing = IdpAuthorizationServer(services)
            services.extras["oauth_server"] = existing
        return existing
