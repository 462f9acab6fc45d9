"""The process's view of the signing keys: which key signs now, the published JWKS,
and the keys our own tokens verify against.

Loaded once per process (`get_keyring`) and kept in memory, so signing and the JWKS cost
no database round trip. Rotations made by another process (`idp keys rotate`) are picked
up without a restart: a cheap fingerprint query (the live keys' schedule) at most every
`recheck_seconds`, and at once when a token names a kid we do not know.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from joserfc.jwk import Key, KeySet, KeySetSerialization
from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from idp.crypto import Encryptor
from idp.models import SigningKey, utcnow
from idp.oauth.keys import (
    DEFAULT_ALG,
    JWK,
    SUPPORTED_ALGS,
    ensure_keys,
    is_retired,
    load_private_key,
    signing_choice,
)

if TYPE_CHECKING:
    from idp.app import Services

logger = logging.getLogger(__name__)

Clock = Callable[[], dt.datetime]
_Fingerprint = tuple[Any, ...]


class NoSigningKeyError(LookupError):
    """No key of the requested algorithm may sign now."""


@dataclass(frozen=True)
class LoadedKey:
    """One key as the keyring holds it: its schedule and the decrypted private key."""

    kid: str
    alg: str
    seq: int
    created_at: dt.datetime
    active_from: dt.datetime
    retired_at: dt.datetime | None
    public_jwk: dict[str, Any]
    private_key: JWK


@dataclass(frozen=True)
class _Snapshot:
    """Immutable state swapped in whole, so readers on other threads never see half."""

    keys: tuple[LoadedKey, ...]
    fingerprint: _Fingerprint
    checked_at: dt.datetime


@dataclass(frozen=True)
class _Published:
    kids: tuple[str, ...]
    jwks_bytes: bytes
    key_set: KeySet
    by_kid: Mapping[str, Key]


class KeyRing:
    """Signing and verification keys of this process, refreshed from the database."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        encryptor: Encryptor,
        *,
        now: Clock = utcnow,
        recheck_seconds: float = 5.0,
        unknown_kid_recheck_seconds: float = 1.0,
        read_sessions: sessionmaker[Session] | None = None,
    ) -> None:
        self._sessions = sessions
        # Re-checks only read, and may run inside a request that holds SQLite's write lock.
        self._read_sessions = read_sessions or sessions
        self._encryptor = encryptor
        self._now = now
        self._recheck = dt.timedelta(seconds=recheck_seconds)
        # An attacker can send tokens with made-up kids; one forced look-up per interval
        # keeps that from turning into a query per request.
        self._unknown_recheck = dt.timedelta(seconds=unknown_kid_recheck_seconds)
        self._lock = threading.Lock()
        self._snapshot = self._load(self._now())
        self._published: _Published | None = None

    # -- public interface --------------------------------------------------------------

    def ensure_keys(self) -> None:
        """Create an RS256 and an ES256 key if either has none able to sign, then reload."""
        created = ensure_keys(self._sessions, encryptor=self._encryptor, now=self._now)
        # Even when this process created nothing, another may have: the fingerprint tells.
        self.refresh(force=bool(created))

    def signing_key(self, alg: str = DEFAULT_ALG) -> JWK:
        """The private key (with `kid`) that signs `alg` tokens now."""
        if alg not in SUPPORTED_ALGS:
            raise NoSigningKeyError(f"unsupported signing algorithm {alg!r}")
        self._maybe_refresh()
        choice = signing_choice(self._snapshot.keys, alg, self._now())
        if choice is None:
            # Self-healing: every key of this alg retired or none generated yet.
            self.ensure_keys()
            choice = signing_choice(self._snapshot.keys, alg, self._now())
            if choice is None:
                raise NoSigningKeyError(f"no {alg} key can sign now")
        return choice.private_key

    def verification_keys(self, kid: str | None = None) -> KeySet:
        """Public keys of every published key, for verifying our own tokens (access tokens,
        `id_token_hint`). Naming the token's `kid` re-reads the database at once when that
        kid is unknown here (a rotation made by another process)."""
        self._maybe_refresh()
        if kid is not None and kid not in self._current_published().kids:
            self._refresh_for_unknown_kid()
        return self._current_published().key_set

    def verification_key_map(self, kid: str | None = None) -> Mapping[str, Key]:
        """`verification_keys` by `kid` (what `idp.oauth.jws.verify` takes)."""
        self.verification_keys(kid)
        return self._current_published().by_kid

    def jwks_bytes(self) -> bytes:
        """The JWKS document (RFC 7517 5) as JSON bytes; rebuilt only when keys change."""
        self._maybe_refresh()
        return self._current_published().jwks_bytes

    def refresh_due(self) -> bool:
        """Whether the periodic re-check is due (no database access: safe on the loop)."""
        now = self._now()
        checked = self._snapshot.checked_at
        return not checked <= now < checked + self._recheck

    def maybe_refresh(self) -> None:
        """Run the periodic re-check if it is due (reads the database: not on the loop)."""
        self._maybe_refresh()

    def jwks_bytes_loaded(self) -> bytes:
        """The JWKS of the keys loaded now, without a re-check (see `refresh_due`)."""
        return self._current_published().jwks_bytes

    def jwks(self) -> dict[str, Any]:
        """The JWKS document as a dict."""
        document: dict[str, Any] = json.loads(self.jwks_bytes())
        return document

    def published_keys(self) -> tuple[LoadedKey, ...]:
        """Keys in the JWKS now: created and not yet retired (pending ones included)."""
        self._maybe_refresh()
        now = self._now()
        return tuple(key for key in self._snapshot.keys if not is_retired(key, now))

    def refresh(self, *, force: bool = False) -> bool:
        """Re-read the keys if their fingerprint changed (always when `force`);
        returns True when the key set was reloaded."""
        with self._lock:
            return self._refresh_locked(force=force)

    # -- internals -----------------------------------------------------------------------

    def _maybe_refresh(self) -> None:
        if not self.refresh_due():
            return
        # Another thread already checking: keep serving the current snapshot.
        if self._lock.acquire(blocking=False):
            try:
                self._background_refresh()
            finally:
                self._lock.release()

    def _refresh_for_unknown_kid(self) -> None:
        with self._lock:
            now = self._now()
            if now - self._snapshot.checked_at >= self._unknown_recheck:
                self._background_refresh()

    def _background_refresh(self) -> None:
        """A periodic re-check that fails (database unreachable) keeps the keys we hold:
        signing and the JWKS go on; the next check is one interval later, not at once."""
        try:
            self._refresh_locked(force=False)
        except SQLAlchemyError as exc:
            snapshot = self._snapshot
            self._snapshot = _Snapshot(snapshot.keys, snapshot.fingerprint, self._now())
            logger.warning(
                "signing key re-check failed, keeping loaded keys: %s", type(exc).__name__
            )

    def _refresh_locked(self, *, force: bool) -> bool:
        now = self._now()
        with self._read_sessions() as db:
            fingerprint = _fingerprint(db, now)
            if not force and fingerprint == self._snapshot.fingerprint:
                self._snapshot = _Snapshot(self._snapshot.keys, fingerprint, now)
                return False
        self._snapshot = self._load(now)
        return True

    def _load(self, now: dt.datetime) -> _Snapshot:
        with self._read_sessions() as db:
            fingerprint = _fingerprint(db, now)
            rows = db.scalars(
                select(SigningKey).where(_live(now)).order_by(SigningKey.alg, SigningKey.seq)
            ).all()
            keys = tuple(
                LoadedKey(
                    kid=row.kid,
                    alg=row.alg,
                    seq=row.seq,
                    created_at=row.created_at,
                    active_from=row.active_from,
                    retired_at=row.retired_at,
                    public_jwk=dict(row.public_jwk),
                    private_key=load_private_key(row, encryptor=self._encryptor),
                )
                for row in rows
            )
        return _Snapshot(keys, fingerprint, now)

    def _current_published(self) -> _Published:
        now = self._now()
        keys = [key for key in self._snapshot.keys if not is_retired(key, now)]
        kids = tuple(key.kid for key in keys)
        published = self._published
        if published is not None and published.kids == kids:
            return published
        document: KeySetSerialization = {"keys": [key.public_jwk for key in keys]}
        key_set = KeySet.import_key_set(document)
        published = _Published(
            kids=kids,
            jwks_bytes=json.dumps(document, separators=(",", ":")).encode("utf-8"),
            key_set=key_set,
            by_kid={key.kid: key for key in key_set.keys if key.kid is not None},
        )
        self._published = published
        return published


def _fingerprint(db: Session, now: dt.datetime) -> _Fingerprint:
    """The schedule of every live key (a handful of small rows): changes when a key is
    added, its activation moved, or its retirement scheduled or moved, even to an earlier
    time (emergency withdrawal), which count/min/max aggregates could miss."""
    rows = db.execute(
        select(SigningKey.kid, SigningKey.active_from, SigningKey.retired_at)
        .where(_live(now))
        .order_by(SigningKey.kid)
    ).all()
    return tuple(tuple(row) for row in rows)


def _live(now: dt.datetime) -> ColumnElement[bool]:
    """Keys still in the JWKS at `now`."""
    return or_(SigningKey.retired_at.is_(None), SigningKey.retired_at > now)


_CREATE_LOCK = threading.Lock()


def get_keyring(services: Services) -> KeyRing:
    """The process's keyring, kept in `services.extras["keyring"]`; the first call loads
    it and generates the first keys if the database has none."""
    existing = services.extras.get("keyring")
    if isinstance(existing, KeyRing):
        return existing
    with _CREATE_LOCK:
        existing = services.extras.get("keyring")
        if isinstance(existing, KeyRing):
            return existing
        ring = KeyRing(services.sessions, services.encryptor, read_sessions=services.read_sessions)
        ring.ensure_keys()
        services.extras["keyring"] = ring
        return ring
