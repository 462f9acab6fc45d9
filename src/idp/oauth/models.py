"""Adapters that give Authlib the client, code and token objects it expects, over our
SQLAlchemy rows. Each is checked against a `Protocol` of what Authlib calls, since
Authlib's own hints are sparse."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from idp.crypto import digests_equal, token_digest
from idp.models import AuthorizationCode, Client
from idp.oauth.client_cache import ClientSnapshot

#: Scopes about a person: meaningless without one, so never granted to client_credentials.
USER_SCOPES = frozenset({"openid", "email", "profile", "offline_access"})
#: What a client registered without explicit grant types may use.
DEFAULT_GRANT_TYPES = ("authorization_code", "refresh_token")
_NEVER = dt.datetime.max.replace(tzinfo=dt.UTC)


class ClientProtocol(Protocol):
    """What Authlib (rfc6749 grants, client auth, rfc7523) calls on a client."""

    def get_client_id(self) -> str: ...
    def get_default_redirect_uri(self) -> str | None: ...
    def get_allowed_scope(self, scope: str | None) -> str | None: ...
    def check_redirect_uri(self, redirect_uri: str) -> bool: ...
    def check_client_secret(self, client_secret: str) -> bool: ...
    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool: ...
    def check_response_type(self, response_type: str) -> bool: ...
    def check_grant_type(self, grant_type: str) -> bool: ...


class AuthorizationCodeProtocol(Protocol):
    """What Authlib's AuthorizationCodeGrant, CodeChallenge and OpenIDCode call."""

    code_challenge: str
    code_challenge_method: str

    def get_redirect_uri(self) -> str: ...
    def get_scope(self) -> str: ...
    def get_nonce(self) -> str | None: ...
    def get_auth_time(self) -> int | None: ...
    def get_acr(self) -> str | None: ...
    def get_amr(self) -> list[str] | None: ...


class TokenProtocol(Protocol):
    """What Authlib's refresh, introspection and revocation endpoints call."""

    def check_client(self, client: ClientProtocol) -> bool: ...
    def get_scope(self) -> str: ...
    def get_expires_in(self) -> int: ...
    def is_expired(self) -> bool: ...
    def is_revoked(self) -> bool: ...


def split_scope(scope: str | None) -> list[str]:
    """A scope string as an ordered list without duplicates."""
    return list(dict.fromkeys((scope or "").split()))


class OAuthClient:
    """A registered client as Authlib sees it, over an immutable snapshot of its row."""

    def __init__(self, row: Client | ClientSnapshot) -> None:
        self.row = row if isinstance(row, ClientSnapshot) else ClientSnapshot.of(row)
        self.client_id = self.row.client_id

    def get_client_id(self) -> str:
        return self.row.client_id

    def get_default_redirect_uri(self) -> str | None:
        # OIDC Core 3.1.2.1: redirect_uri is required; no default is ever assumed.
        return None

    def get_allowed_scope(self, scope: str | None) -> str | None:
        """The requested scopes this client may have; unknown ones are ignored (OIDC
        certification sends scopes we do not serve). None when nothing is left."""
        allowed = set(self.row.scope.split())
        granted = [s for s in split_scope(scope) if s in allowed]
        return " ".join(granted) if granted else None

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        # RFC 9700 2.1 / 4.1.3: exact string comparison, no pattern or prefix matching.
        return redirect_uri in self.row.redirect_uris

    def check_post_logout_redirect_uri(self, uri: str) -> bool:
        """OIDC RP-Initiated Logout 3: exact match with a registered URI."""
        return uri in self.row.post_logout_redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        # The secret has 256 bits of entropy, so one SHA-256 is enough (no slow hash
        # on the hot path); the comparison is constant-time.
        stored = self.row.client_secret_hash
        return stored is not None and digests_equal(token_digest(client_secret), stored)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        # One registered method for every authenticated endpoint (RFC 7591 2).
        return method == self.row.token_endpoint_auth_method

    def check_response_type(self, response_type: str) -> bool:
        # RFC 9700 2.1.2: the code flow only, no implicit or hybrid; and only for
        # clients registered for it (a client_credentials-only client gets no codes).
        return response_type == "code" and self.check_grant_type("authorization_code")

    def check_grant_type(self, grant_type: str) -> bool:
        granted = tuple(self.row.grant_types) or DEFAULT_GRANT_TYPES
        if grant_type == "client_credentials" and self.is_public:
            return False  # RFC 6749 4.4: confidential clients only
        return grant_type in granted

    @property
    def is_public(self) -> bool:
        return self.row.is_public

    @property
    def machine_scopes(self) -> list[str]:
        """Scopes this client may hold for itself (client_credentials)."""
        return [s for s in split_scope(self.row.scope) if s not in USER_SCOPES]


@dataclass(frozen=True)
class Subject:
    """The signed-in person behind a grant: Authlib's "user". Carries what tokens state
    about the authentication, so issuing tokens needs no further database read."""

    account_id: str
    grant_id: str
    auth_time: dt.datetime
    acr: str
    amr: list[str] = field(default_factory=list)
    sid: str | None = None
    grant_expires_at: dt.datetime | None = None


@dataclass(frozen=True)
class Authentication:
    """How a browser session proved who it is: what `/authorize` hands to code issuance."""

    account_id: str
    auth_time: dt.datetime
    acr: str
    amr: list[str]
    sid: str | None


@dataclass(frozen=True)
class RedeemedCode:
    """An authorization code just marked redeemed, with who its grant stands for."""

    grant_id: str
    redirect_uri: str
    scope: str
    nonce: str | None
    code_challenge: str
    code_challenge_method: str
    #: None when the grant has been revoked or the account disabled since the code was made.
    subject: Subject | None


class OAuthCode:
    """An authorization code as Authlib sees it."""

    def __init__(self, row: AuthorizationCode | RedeemedCode) -> None:
        self.row = row
        self.code_challenge = row.code_challenge
        self.code_challenge_method = row.code_challenge_method

    def get_redirect_uri(self) -> str:
        return self.row.redirect_uri

    def get_scope(self) -> str:
        return self.row.scope

    def get_nonce(self) -> str | None:
        return self.row.nonce

    # Authentication facts are read from the grant when the ID token is made.
    def get_auth_time(self) -> int | None:
        return None

    def get_acr(self) -> str | None:
        return None

    def get_amr(self) -> list[str] | None:
        return None


@dataclass
class TokenRecord:
    """An access or refresh token found by introspection or revocation."""

    kind: str  # "access_token" or "refresh_token"
    client_id: str
    scope: str
    expires_at: dt.datetime
    issued_at: dt.datetime
    revoked: bool
    now: dt.datetime
    claims: dict[str, Any] = field(default_factory=dict)
    key: str = ""  # refresh: digest; access: jti
    grant_id: str | None = None

    def check_client(self, client: ClientProtocol) -> bool:
        return self.client_id == client.get_client_id()

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return max(0, int((self.expires_at - self.now).total_seconds()))

    def is_expired(self) -> bool:
        return self.expires_at <= self.now

    def is_revoked(self) -> bool:
        return self.revoked


if TYPE_CHECKING:  # mypy checks that the adapters satisfy what Authlib calls
    _client: ClientProtocol = OAuthClient(Client())
    _code: AuthorizationCodeProtocol = OAuthCode(AuthorizationCode())
    _token: TokenProtocol = TokenRecord(
        kind="",
        client_id="",
        scope="",
        expires_at=_NEVER,
        issued_at=_NEVER,
        revoked=False,
        now=_NEVER,
    )
