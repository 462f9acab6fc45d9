"""Registered clients held in the process for a few seconds (the token endpoint's and
introspection's client authentication would otherwise read the row on every request).

What is cached is an immutable `ClientSnapshot`, never an ORM object, so no session or
thread can change it. An entry is used for at most `ttl_seconds` (5 s by default), and
dropped at once when this process commits a change to any client (an ORM insert, update
or delete of a `Client`: `idp.admin.clients`, the admin pages, tests). Bounded staleness:
a change made by *another* process (`idp clients ...` on the command line, another
worker) is honoured here within `ttl_seconds`: a deleted client, or a replaced secret,
may keep working that long. Unknown client ids are never cached, so a client registered
anywhere works at once and made-up ids cannot fill the cache.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session

from idp.models import Client

#: Seconds a cached client may be used before it is read again.
DEFAULT_TTL_SECONDS = 5.0


@dataclass(frozen=True)
class ClientSnapshot:
    """A registered client's fields, copied out of its row (same names as `Client`)."""

    client_id: str
    client_secret_hash: str | None
    name: str
    redirect_uris: tuple[str, ...]
    post_logout_redirect_uris: tuple[str, ...]
    grant_types: tuple[str, ...]
    scope: str
    token_endpoint_auth_method: str
    jwks: dict[str, Any] | None
    id_token_signed_response_alg: str
    first_party: bool

    @classmethod
    def of(cls, row: Client) -> ClientSnapshot:
        """The snapshot of `row` as loaded now."""
        return cls(
            client_id=row.client_id,
            client_secret_hash=row.client_secret_hash,
            name=row.name,
            redirect_uris=tuple(row.redirect_uris or ()),
            post_logout_redirect_uris=tuple(row.post_logout_redirect_uris or ()),
            grant_types=tuple(row.grant_types or ()),
            scope=row.scope,
            token_endpoint_auth_method=row.token_endpoint_auth_method,
            jwks=dict(row.jwks) if row.jwks else None,
            id_token_signed_response_alg=row.id_token_signed_response_alg,
            first_party=row.first_party,
        )

    @property
    def is_public(self) -> bool:
        """Public clients (native or browser apps) have no secret."""
        return self.token_endpoint_auth_method == "none"  # noqa: S105 (a method name)


@dataclass(frozen=True)
class _Entry:
    snapshot: ClientSnapshot
    expires: float
    generation: int


class ClientCache:
    """Client snapshots by id, each for at most `ttl_seconds` of `clock` time."""

    def __init__(
        self,
        *,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl_seconds
        self._clock = clock
        self._entries: dict[str, _Entry] = {}

    def cached(self, client_id: str) -> ClientSnapshot | None:
        """The client if this cache holds it and it is fresh; never reads the database."""
        entry = self._entries.get(client_id)
        if (
            entry is not None
            and entry.generation == current_generation()
            and self._clock() < entry.expires
        ):
            return entry.snapshot
        return None

    def get(self, db: Session, client_id: str) -> ClientSnapshot | None:
        """The client, from the cache while fresh, else read with `db`."""
        # Taken before the read: a change committed during it makes this entry stale.
        generation = current_generation()
        now = self._clock()
        entry = self._entries.get(client_id)
        if entry is not None and entry.generation == generation and now < entry.expires:
            return entry.snapshot
        row = db.get(Client, client_id)
        if row is None:
            self._entries.pop(client_id, None)
            return None
        snapshot = ClientSnapshot.of(row)
        self._entries[client_id] = _Entry(snapshot, now + self._ttl, generation)
        return snapshot


# -- invalidation on this process's own changes --------------------------------------------

_generation = 0
_generation_lock = threading.Lock()
_counter = itertools.count(1)
_CHANGED = "idp_clients_changed"


def current_generation() -> int:
    """Bumped whenever this process commits a change to a client."""
    return _generation


def invalidate_all() -> None:
    """Make every cached client stale (in this process)."""
    global _generation
    with _generation_lock:
        _generation = next(_counter)


@event.listens_for(Session, "after_flush")
def _note_client_changes(session: Session, _context: Any) -> None:
    changed = itertools.chain(session.new, session.dirty, session.deleted)
    if any(isinstance(obj, Client) for obj in changed):
        session.info[_CHANGED] = True
        # Also now: a request reading in between sees the old row, but caches it as stale.
        invalidate_all()


@event.listens_for(Session, "after_commit")
def _invalidate_after_commit(session: Session) -> None:
    if session.info.pop(_CHANGED, False):
        invalidate_all()


@event.listens_for(Session, "after_rollback")
def _forget_rolled_back(session: Session) -> None:
    session.info.pop(_CHANGED, None)
