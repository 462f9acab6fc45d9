"""The client registry shared by the CLI and the admin pages: register, list, show,
delete relying parties, and check a presented client secret.

A confidential client's secret is 256 random bits, returned once at creation and stored
only as its SHA-256 digest. Functions take the caller's `Session` as `db` and never
commit: the caller owns the transaction.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from idp.accounts.audit import record
from idp.admin import client_metadata as meta
from idp.admin.client_metadata import InvalidClientMetadata, InvalidRedirectUri
from idp.crypto import new_token, token_digest
from idp.models import Client

__all__ = [
    "ClientIdTaken",
    "ClientNotFound",
    "InvalidClientMetadata",
    "InvalidRedirectUri",
    "client_secret_matches",
    "create_client",
    "delete_client",
    "get_client",
    "list_clients",
]

MAX_NAME = 200
#: Client ids are URL-safe so they need no escaping in URLs, forms or Basic auth.
_CLIENT_ID = re.compile(r"[A-Za-z0-9._~-]{1,64}")
#: Longer than any secret we issue (43 characters); longer input is not worth hashing.
MAX_SECRET_LENGTH = 512


class ClientIdTaken(InvalidClientMetadata):
    """Another client already has the requested client id."""


class ClientNotFound(LookupError):  # noqa: N818 (the name callers use)
    """No client has the given id."""


def _text(value: str | None, *, field: str, required: bool) -> str | None:
    cleaned = (value or "").strip()
    if not cleaned:
        if required:
            raise InvalidClientMetadata(f"The client {field} is empty.")
        return None
    if len(cleaned) > MAX_NAME:
        raise InvalidClientMetadata(f"The client {field} is too long (at most {MAX_NAME}).")
    return cleaned


def _client_id(db: Session, client_id: str | None) -> str:
    if client_id is None:
        return new_token(16)
    if not _CLIENT_ID.fullmatch(client_id):
        raise InvalidClientMetadata(
            "A client id is 1 to 64 letters, digits or the characters . _ ~ -."
        )
    if db.get(Client, client_id) is not None:
        raise ClientIdTaken(f"The client id {client_id!r} is already registered.")
    return client_id


def create_client(
    db: Session,
    *,
    name: str,
    redirect_uris: Sequence[str],
    post_logout_redirect_uris: Sequence[str] = (),
    public: bool = False,
    grant_types: Sequence[str] | None = None,
    token_endpoint_auth_method: str | None = None,
    scope: str = "openid email profile",
    jwks: dict[str, Any] | None = None,
    id_token_signed_response_alg: str = "RS256",  # noqa: S107 (an algorithm name)
    first_party: bool = True,
    service_name: str | None = None,
    client_id: str | None = None,
    actor_id: str | None = None,
) -> tuple[Client, str | None]:
    """Register a client; returns it and its plaintext secret (None without one).

    `token_endpoint_auth_method="none"` makes a public client even without `public`.
    Raises an `InvalidClientMetadata` (a `ValueError`) saying what is wrong.
    """
    public = public or token_endpoint_auth_method == "none"  # noqa: S105 (a method name)
    cleaned_name = _text(name, field="name", required=True)
    assert cleaned_name is not None
    uris = meta.redirect_uris(redirect_uris)
    logout_uris = meta.redirect_uris(post_logout_redirect_uris, label="post-logout redirect URI")
    grants = meta.grant_types(grant_types, public=public, redirect_uris=uris)
    method = meta.auth_method(token_endpoint_auth_method, public=public)
    key_set = meta.jwks(jwks, required=method == "private_key_jwt")
    client = Client(
        client_id=_client_id(db, client_id),
        name=cleaned_name,
        service_name=_text(service_name, field="service name", required=False),
        redirect_uris=uris,
        post_logout_redirect_uris=logout_uris,
        grant_types=grants,
        scope=meta.scope(scope),
        token_endpoint_auth_method=method,
        jwks=key_set,
        id_token_signed_response_alg=meta.id_token_alg(id_token_signed_response_alg),
        first_party=first_party,
    )
    secret = None
    if method in ("client_secret_basic", "client_secret_post"):
        secret = new_token()
        client.client_secret_hash = token_digest(secret)
    try:
        with db.begin_nested():
            db.add(client)
            db.flush()
    except IntegrityError as exc:
        # A concurrent registration took the same explicit client id.
        raise ClientIdTaken(f"The client id {client.client_id!r} is already registered.") from exc
    record(
        db,
        "client.created",
        client_id=client.client_id,
        actor_id=actor_id,
        name=client.name,
        auth_method=method,
        grant_types=grants,
        redirect_uris=uris,
    )
    return client, secret


def list_clients(db: Session) -> list[Client]:
    """Every registered client, oldest first."""
    return list(db.scalars(select(Client).order_by(Client.created_at, Client.client_id)))


def get_client(db: Session, *, client_id: str) -> Client | None:
    """The client with this id, or None."""
    if not isinstance(client_id, str) or not _CLIENT_ID.fullmatch(client_id):
        return None
    return db.get(Client, client_id)


def delete_client(db: Session, *, client_id: str, actor_id: str | None = None) -> None:
    """Delete a client; its grants (and so their refresh tokens) go with it.

    Raises `ClientNotFound` if there is no such client.
    """
    client = get_client(db, client_id=client_id)
    if client is None:
        raise ClientNotFound(f"no client has the id {client_id!r}")
    db.delete(client)
    db.flush()
    record(db, "client.deleted", client_id=client_id, actor_id=actor_id)


def client_secret_matches(client: Client, secret: str) -> bool:
    """Does `secret` match the client's stored digest? Constant-time (RFC 6749 2.3.1)."""
    stored = client.client_secret_hash
    if stored is None or not isinstance(secret, str) or not secret:
        return False
    if len(secret) > MAX_SECRET_LENGTH:
        return False
    presented = token_digest(secret)
    return hmac.compare_digest(presented.encode("ascii"), stored.encode("ascii"))
