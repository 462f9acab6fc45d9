"""The authorization endpoint's decisions (docs/login-transaction.md, OIDC Core 3.1.2).

`start` validates a request with Authlib, then either issues a code from the browser's
session (single sign-on), answers `prompt=none` with an error, or stores a login
transaction and sends the browser to the hosted pages. `resume` picks the completed
transaction up and issues the code. Both run in a worker thread with the request's
database session bound; they return an outcome the route turns into a response. On
PostgreSQL the usual request (no session cookie) and the usual resume are answered on the
event loop instead (`start_on_loop`, `resume_on_loop`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from authlib.oauth2.rfc6749.errors import AccessDeniedError, InvalidRequestError
from authlib.oidc.core.errors import ConsentRequiredError, LoginRequiredError

from idp.accounts.sessions import current_session, session_cookie_name, touch_due, usable
from idp.loop_sqlite import Busy, loop_database
from idp.models import BrowserSession, LoginTransaction
from idp.oauth import acr as acr_policy
from idp.oauth import store, tokens, transactions
from idp.oauth.context import NoDatabaseBoundError, current_db, pending_issued_codes
from idp.oauth.errors import (
    LoginTransactionError,
    OAuth2Error,
    RequestNotSupportedError,
    RequestURINotSupportedError,
    UnmetAuthenticationRequirementsError,
    error_params,
    may_redirect,
)
from idp.oauth.models import Authentication
from idp.oauth.responses import RESPONSE_MODES, ClientResponse, response_mode_of

if TYPE_CHECKING:
    from idp.oauth.server import IdpAuthorizationServer, RequestData


@dataclass(frozen=True)
class SignInRedirect:
    """Send the browser to the hosted pages with a transaction id."""

    location: str


@dataclass(frozen=True)
class ErrorOutcome:
    """An error shown to the person (never redirected)."""

    error: OAuth2Error


Outcome = ClientResponse | SignInRedirect | ErrorOutcome


def _authentication(session: BrowserSession) -> Authentication:
    return Authentication(
        account_id=session.account_id,
        auth_time=session.auth_time,
        acr=session.acr,
        amr=list(session.amr),
        sid=session.sid,
    )


def _fail(error: OAuth2Error, data: dict[str, str]) -> Outcome:
    """An error outcome: back to the client when its redirect URI is validated."""
    if may_redirect(error):
        return ClientResponse(
            redirect_uri=error.redirect_uri,
            params=error_params(error, state=data.get("state")),
            response_mode=response_mode_of(data),
        )
    return ErrorOutcome(error)


def required_acr(acr_values: str | None, redirect_uri: str) -> str | None:
    """The weakest requested ACR we understand (any requested value satisfies the
    request); unknown values alone cannot be met (RFC 9470 3: never assumed highest)."""
    if not acr_values:
        return None
    known = [v for v in acr_values.split() if v in acr_policy.ACR_LEVELS]
    if not known:
        raise UnmetAuthenticationRequirementsError(
            "None of the requested acr_values is supported.", redirect_uri=redirect_uri
        )
    return min(known, key=acr_policy.ACR_LEVELS.index)


def _max_age(value: str | None, redirect_uri: str) -> int | None:
    if value is None or value == "":
        return None
    if not value.isdigit():
        raise InvalidRequestError("max_age must be a whole number.", redirect_uri=redirect_uri)
    return int(value)


def _check_request(data: dict[str, str], redirect_uri: str) -> None:
    """Checks Authlib leaves to us, after the client and redirect URI are known."""
    # OIDC Core 6: request objects are not supported, and say so.
    if "request" in data:
        raise RequestNotSupportedError(redirect_uri=redirect_uri)
    if "request_uri" in data:
        raise RequestURINotSupportedError(redirect_uri=redirect_uri)
    if data.get("response_mode", "query") not in RESPONSE_MODES:
        raise InvalidRequestError("Unsupported response_mode.", redirect_uri=redirect_uri)


def _hint_subject(
    server: IdpAuthorizationServer, hint: str | None, redirect_uri: str
) -> str | None:
    """The `sub` of a valid `id_token_hint` (OIDC Core 3.1.2.1: must be one of ours)."""
    if not hint:
        return None
    try:
        claims = tokens.verify_id_token_hint(
            hint, keys=server.keys, issuer=server.settings.issuer, now=server.now()
        )
    except tokens.TokenInvalidError:
        raise InvalidRequestError(
            "id_token_hint is not a valid ID token from this provider.", redirect_uri=redirect_uri
        ) from None
    return str(claims.get("sub"))


def _login_needed(
    session: BrowserSession | None,
    *,
    prompts: set[str],
    max_age: int | None,
    hint_sub: str | None,
    now: dt.datetime,
) -> bool:
    if session is None or "login" in prompts:
        return True
    # OIDC Core 3.1.2.1: past max_age the person authenticates again; max_age=0 acts
    # like prompt=login.
    if max_age is not None and (
        max_age == 0 or now - session.auth_time > dt.timedelta(seconds=max_age)
    ):
        return True
    # The client expects a particular person; someone else is signed in here.
    return hint_sub is not None and hint_sub != session.account_id


def _validated_grant(server: IdpAuthorizationServer, data: RequestData, user: Any) -> Any:
    request = server.create_oauth2_request(data)
    return server.get_consent_grant(request, end_user=user)


def start(server: IdpAuthorizationServer, data: RequestData) -> Outcome:
    """Handle `/authorize` (GET or POST)."""
    db, now, settings = current_db(), server.now(), server.settings
    session = current_session(
        db, cookie_value=data.cookies.get(session_cookie_name(settings)), settings=settings, now=now
    )
    decided = _decide(server, data, session, now=now)
    if not isinstance(decided, _SignInNeeded):
        return decided
    txid, row = decided.transaction(now=now, lifetime_seconds=settings.login_transaction_seconds)
    transactions.insert_transaction(db, row)
    return _to_sign_in(txid)


async def start_on_loop(server: IdpAuthorizationServer, data: RequestData) -> Outcome | None:
    """The usual `/authorize` on the event loop, without a worker thread or a session
    (a cached client, a browser with no session cookie): the request validated by
    Authlib as `start` validates it, and the login transaction inserted in one round trip
    (`idp.async_db`; on SQLite `idp.loop_sqlite`, if the write lock is free). Errors are
    answered here as `start` answers them: without a session none needs the database.

    None sends the request to `start`, with nothing written: a session cookie (the
    session is read, and may sign the person in), an `id_token_hint` (verified against
    the keyring, which may need reloading), a client that is not cached, or SQLite's
    write lock held elsewhere."""
    engine, settings = server.services.engine, server.settings
    database = loop_database(server.services)
    if (
        database is None
        or data.cookies.get(session_cookie_name(settings))
        or any(key == "id_token_hint" for key, _ in (*data.query, *data.form))
    ):
        return None
    now = server.now()
    try:
        decided = _decide(server, data, None, now=now)
    except NoDatabaseBoundError:
        return None  # the client is not cached: `start` reads it
    if not isinstance(decided, _SignInNeeded):
        return decided
    txid, row = decided.transaction(now=now, lifetime_seconds=settings.login_transaction_seconds)
    try:
        async with database.transaction() as transaction:
            transaction.defer(*transactions.insert_statement(engine.dialect, row))
    except Busy:
        return None  # nothing written: `start` waits its turn
    return _to_sign_in(txid)


@dataclass(frozen=True)
class _SignInNeeded:
    """`_decide`'s answer when the person must sign in, step up or consent: the login
    transaction to store."""

    client_id: str
    params: dict[str, str]
    stage: str
    account_id: str | None

    def transaction(self, *, now: dt.datetime, lifetime_seconds: int) -> tuple[str, dict[str, Any]]:
        """Its `txid` and row (`transactions.new_transaction`)."""
        return transactions.new_transaction(
            client_id=self.client_id,
            params=self.params,
            stage=self.stage,
            account_id=self.account_id,
            now=now,
            lifetime_seconds=lifetime_seconds,
        )


def _decide(
    server: IdpAuthorizationServer,
    data: RequestData,
    session: BrowserSession | None,
    *,
    now: dt.datetime,
) -> Outcome | _SignInNeeded:
    """What `/authorize` answers for the browser's live `session` (None: none): a code
    from the session (single sign-on), an error, or the sign-in to start. Reads nothing
    itself; Authlib's validation reads the client unless it is cached."""
    user = _authentication(session) if session is not None else None
    params: dict[str, str] = {}
    try:
        grant = _validated_grant(server, data, user)
        params = dict(grant.request.payload.data)
        redirect_uri: str = grant.redirect_uri
        _check_request(params, redirect_uri)
        prompts = set(params.get("prompt", "").split())
        max_age = _max_age(params.get("max_age"), redirect_uri)
        wanted_acr = required_acr(params.get("acr_values"), redirect_uri)
        hint_sub = _hint_subject(server, params.get("id_token_hint"), redirect_uri)
        client = grant.request.client
        login = _login_needed(session, prompts=prompts, max_age=max_age, hint_sub=hint_sub, now=now)
        step_up = (
            not login
            and session is not None
            and wanted_acr is not None
            and not acr_policy.satisfies(session.acr, wanted_acr)
        )
        consent = "consent" in prompts or not client.row.first_party
        if "none" in prompts:
            # OIDC Core 3.1.2.6: no interaction possible, say what was missing.
            if login:
                raise LoginRequiredError(redirect_uri=redirect_uri)
            if step_up:
                raise UnmetAuthenticationRequirementsError(
                    "A stronger sign-in is needed.", redirect_uri=redirect_uri
                )
            if consent:
                raise ConsentRequiredError(redirect_uri=redirect_uri)
        if not (login or step_up or consent) and user is not None:
            uri, code_params = grant.create_authorization_response(redirect_uri, user)
            return ClientResponse(uri, code_params, response_mode_of(params))
    except OAuth2Error as error:
        return _fail(error, params or dict(_first_values(data)))
    return _SignInNeeded(
        client_id=client.get_client_id(),
        params=params,
        stage="password" if login else ("mfa" if step_up else "consent"),
        account_id=None if login or session is None else session.account_id,
    )


def _to_sign_in(txid: str) -> SignInRedirect:
    return SignInRedirect(f"/signin?{urlencode({'tx': txid})}")


def _first_values(data: RequestData) -> Sequence[tuple[str, str]]:
    seen: dict[str, str] = {}
    for key, value in [*data.query, *data.form]:
        seen.setdefault(key, value)
    return list(seen.items())


def authorize_url(issuer: str, params: dict[str, str]) -> str:
    """The original `/authorize` request: where "Start again" leads."""
    return f"{issuer}/authorize?{urlencode(params)}"


def resume(server: IdpAuthorizationServer, data: RequestData) -> Outcome:
    """Handle `/authorize/resume?tx=...` after the hosted pages completed the sign-in."""
    db, now, settings = current_db(), server.now(), server.settings
    txid = dict(data.query).get("tx")
    tx = transactions.find_transaction(db, txid=txid)
    if tx is None:
        return ErrorOutcome(LoginTransactionError("This sign-in link is not valid."))
    again = authorize_url(settings.issuer, {str(k): str(v) for k, v in tx.params.items()})
    if tx.consumed_at is not None:
        return ErrorOutcome(
            LoginTransactionError("This sign-in has already been used.", start_again=again)
        )
    if tx.expires_at <= now or tx.completed_at is None or tx.account_id is None:
        return ErrorOutcome(LoginTransactionError("This sign-in has expired.", start_again=again))
    session = current_session(
        db, cookie_value=data.cookies.get(session_cookie_name(settings)), settings=settings, now=now
    )
    # The transaction is bound to the browser that completed it: a stolen txid is
    # useless without that browser's session cookie.
    if session is None or session.account_id != tx.account_id:
        return ErrorOutcome(
            LoginTransactionError("This sign-in was finished elsewhere.", start_again=again)
        )
    if not transactions.claim_transaction(db, transaction=tx, now=now):
        return ErrorOutcome(
            LoginTransactionError("This sign-in has already been used.", start_again=again)
        )
    params = _resumed_params(tx)
    try:
        return _issue(server, data, tx, session, params)
    except OAuth2Error as error:
        return _fail(error, params)


def _resumed_params(tx: LoginTransaction) -> dict[str, str]:
    """The stored authorization request, as it is asked again once the person signed in."""
    params = {str(k): str(v) for k, v in tx.params.items()}
    params.pop("prompt", None)  # the interaction it asked for has happened
    return params


def _issue(
    server: IdpAuthorizationServer,
    data: RequestData,
    tx: LoginTransaction,
    session: BrowserSession,
    params: dict[str, str],
) -> ClientResponse:
    """The code for the claimed transaction `tx` of the browser's `session`; raises the
    `OAuth2Error` that answers the client instead (no consent, the level not reached)."""
    user = _authentication(session)
    request = server.create_oauth2_request(
        type(data).of_params(params, url=f"{server.settings.issuer}/authorize")
    )
    grant = server.get_consent_grant(request, end_user=user)
    redirect_uri: str = grant.redirect_uri
    needs_consent = "consent" in tx.params.get("prompt", "").split() or not (
        grant.request.client.row.first_party
    )
    if needs_consent and tx.consented_at is None:
        raise AccessDeniedError(redirect_uri=redirect_uri)
    wanted_acr = required_acr(params.get("acr_values"), redirect_uri)
    if wanted_acr is not None and not acr_policy.satisfies(user.acr, wanted_acr):
        raise UnmetAuthenticationRequirementsError(
            "The sign-in did not reach the requested level.", redirect_uri=redirect_uri
        )
    uri, code_params = grant.create_authorization_response(redirect_uri, user)
    return ClientResponse(uri, code_params, response_mode_of(params))


async def resume_on_loop(server: IdpAuthorizationServer, data: RequestData) -> Outcome | None:
    """The usual resume on the event loop, without a worker thread or a session
    (a cached client): the transaction claimed by one statement that also checks the
    browser's session (`transactions.claim_from_session_query`; on SQLite a read and the
    claim), the code issued by Authlib's grant as `resume` issues it, its grant and code
    inserted with the COMMIT (`idp.async_db`, or `idp.loop_sqlite` if the write lock is
    free).

    None sends the request to `resume`, with nothing changed (rolled back): when nothing
    was claimed (an unknown, unfinished, used or expired transaction, another browser's),
    when the session no longer signs the browser in or its idle timer is due to be
    written, the client is not cached, or the grant answers with an error. `resume` then
    finds out why, and answers as it always does."""
    engine, settings = server.services.engine, server.settings
    cookie = data.cookies.get(session_cookie_name(settings))
    txid = dict(data.query).get("tx")
    database = loop_database(server.services)
    if database is None or not cookie or not txid:
        return None
    now = server.now()
    claim = transactions.claim_from_session_query(
        engine.dialect, txid=txid, cookie_value=cookie, now=now
    )
    if claim is None:
        return None
    try:
        async with database.transaction() as transaction:
            read, then_claim = claim
            row = await transaction.fetch_one(*read)
            if row is None:
                raise _NotResumedError
            if then_claim is not None:
                transaction.defer(*then_claim)
            tx, session, disabled_at = transactions.claimed_with_session(row)
            if not usable(session, disabled_at=disabled_at, settings=settings, now=now) or (
                touch_due(session, now=now)
            ):
                raise _NotResumedError
            issued: list[tuple[dict[str, Any], dict[str, Any]]] = []
            pending = pending_issued_codes.set(issued)
            try:
                outcome = _issue(server, data, tx, session, _resumed_params(tx))
            finally:
                pending_issued_codes.reset(pending)
            for grant, code in issued:
                for statement in store.issued_code_inserts(engine.dialect, grant, code):
                    transaction.defer(*statement)
    except (_NotResumedError, OAuth2Error, NoDatabaseBoundError, Busy):
        return None  # rolled back (or never begun): nothing changed
    return outcome


class _NotResumedError(Exception):
    """The resume is not one the event loop answers (`resume_on_loop`)."""
