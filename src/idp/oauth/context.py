"""The database session of the protocol request being handled.

Authlib calls hooks such as `query_client(client_id)` without the request, so the
adapter (`idp.oauth.server`) opens one session per request in the worker thread and
binds it here for the duration of that call.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

if TYPE_CHECKING:
    from idp.oauth.models import RedeemedCode
    from idp.oauth.store import Claimed

_db: ContextVar[Session | None] = ContextVar("idp_oauth_db", default=None)


class NoDatabaseBoundError(RuntimeError):
    """Work that needs the database ran without a session bound: a programming error,
    except for the token endpoint's attempt on the event loop (`idp.oauth.server`),
    which catches it and runs the request again, in a worker thread with a session."""


def current_db() -> Session:
    """The session bound by `bound_db`."""
    db = _db.get()
    if db is None:
        raise NoDatabaseBoundError("no database session bound to this protocol request")
    return db


@contextmanager
def bound_db(db: Session) -> Iterator[Session]:
    """Bind `db` as the current session while the block runs."""
    token = _db.set(db)
    try:
        yield db
    finally:
        _db.reset(token)


@dataclass(frozen=True)
class ClaimedOnLoop:
    """A refresh token the event loop already rotated, by one statement that claimed it
    and stored its successor (`IdpAuthorizationServer._refresh_on_loop`)."""

    token: str
    client_id: str
    claimed: Claimed
    #: The new refresh token, already stored: the one the response must carry.
    successor: str


#: Bound while Authlib's refresh grant runs on the event loop: the rotation already made.
claimed_on_loop: ContextVar[ClaimedOnLoop | None] = ContextVar("idp_claimed", default=None)


@dataclass(frozen=True)
class RedeemedOnLoop:
    """An authorization code the event loop already redeemed (None: it had expired), in
    the transaction the request's refresh token will be written in."""

    code: str
    client_id: str
    redeemed: RedeemedCode | None


#: Bound while Authlib's code grant runs on the event loop: the redemption it would make.
redeemed_on_loop: ContextVar[RedeemedOnLoop | None] = ContextVar("idp_redeemed", default=None)
#: Bound with a redemption: new refresh token rows, written by the loop in its transaction.
pending_refresh_rows: ContextVar[list[dict[str, Any]] | None] = ContextVar(
    "idp_pending_refresh_rows", default=None
)


#: Bound while `/authorize/resume` issues a code on the event loop
#: (`idp.oauth.authorize.resume_on_loop`): each new grant with its code (`store.grant_row`,
#: `store.code_row`), written by the loop in its transaction instead of at once.
pending_issued_codes: ContextVar[list[tuple[dict[str, Any], dict[str, Any]]] | None] = ContextVar(
    "idp_pending_issued_codes", default=None
)
