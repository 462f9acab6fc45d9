"""Token signing keys: generation, encrypted storage, the publish/sign/retire schedule
and rotation.

A key's life (see `SigningKey`): published in the JWKS from `created_at`, signs from
`active_from`, withdrawn after `retired_at`. Rotation publishes the successor at once and
lets it sign only after a delay, so relying parties' JWKS caches learn it first; the
predecessor stays published until every token it signed has expired.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, TypeVar, cast

from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc.jwk import ECKey, KeyParameters, RSAKey
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from idp.crypto import Encryptor
from idp.models import SigningKey
from idp.settings import Settings

#: JWS algorithms we sign with: RS256 is the OIDC default (OIDC Core 15.1), ES256 on request.
SUPPORTED_ALGS: tuple[str, ...] = ("RS256", "ES256")
DEFAULT_ALG = "RS256"

#: Members a published JWK may carry (RFC 7517 4, RFC 7518 6.2.1 / 6.3.1): never a private one.
PUBLIC_MEMBERS = frozenset({"kty", "kid", "use", "alg", "n", "e", "crv", "x", "y"})

#: Verifiers commonly allow this much clock skew on `exp`; a retiring key outlives its
#: last token by the same margin.
CLOCK_SKEW = dt.timedelta(seconds=60)

#: Relying parties may cache the JWKS this long (`Cache-Control` of `/jwks.json`). The
#: activation delay of a rotation must be at least this, so every cache has refetched a
#: JWKS holding the new key before the first token signed with it appears.
JWKS_MAX_AGE_SECONDS = 300

#: How often creating "the next key" is retried after losing a race to another process.
_CREATE_ATTEMPTS = 5

JWK = RSAKey | ECKey


class KeyScheduleRow(Protocol):
    """What the schedule functions read from a key (a `SigningKey` row or a loaded key)."""

    @property
    def alg(self) -> str: ...
    @property
    def seq(self) -> int: ...
    @property
    def active_from(self) -> dt.datetime: ...
    @property
    def retired_at(self) -> dt.datetime | None: ...


K = TypeVar("K", bound=KeyScheduleRow)


def generate_jwk(alg: str) -> JWK:
    """A fresh private key for `alg`, with `kid` = its RFC 7638 thumbprint."""
    params: KeyParameters = {"alg": alg, "use": "sig"}
    key: JWK
    if alg == "RS256":
        # RFC 7518 3.3: at least 2048 bits.
        key = RSAKey.generate_key(2048, parameters=params, private=True)
    elif alg == "ES256":
        key = ECKey.generate_key("P-256", parameters=params, private=True)
    else:
        raise ValueError(f"unsupported signing algorithm {alg!r}")
    key.ensure_kid()
    return key


def public_jwk(key: JWK) -> dict[str, Any]:
    """The public JWK as published: kty, kid, use, alg and n/e or crv/x/y only."""
    return {
        name: value for name, value in key.as_dict(private=False).items() if name in PUBLIC_MEMBERS
    }


def new_signing_key(
    *, alg: str, encryptor: Encryptor, seq: int, now: dt.datetime, active_from: dt.datetime
) -> SigningKey:
    """A new (unsaved) key row; the private JWK is sealed with the kid as associated data,
    so a ciphertext moved to another row fails to decrypt."""
    key = generate_jwk(alg)
    kid = str(key.kid)
    sealed = encryptor.encrypt(
        json.dumps(key.as_dict(private=True)).encode("utf-8"), context=kid.encode("utf-8")
    )
    return SigningKey(
        kid=kid,
        alg=alg,
        seq=seq,
        public_jwk=public_jwk(key),
        private_key_encrypted=sealed,
        created_at=now,
        active_from=active_from,
        retired_at=None,
    )


def load_private_key(row: SigningKey, *, encryptor: Encryptor) -> JWK:
    """Decrypt a row's private key; refuses one whose thumbprint is not its kid."""
    raw = json.loads(encryptor.decrypt(row.private_key_encrypted, context=row.kid.encode("utf-8")))
    key: JWK
    if raw.get("kty") == "RSA" and all(raw.get(member) for member in _RSA_CRT_MEMBERS):
        key = RSAKey.import_key(_rsa_private_key(raw), _parameters(raw))
    else:
        key = (RSAKey if raw.get("kty") == "RSA" else ECKey).import_key(raw)
    if key.thumbprint() != row.kid or key.alg != row.alg or not key.is_private:
        raise ValueError(f"signing key {row.kid!r} does not match its stored private key")
    return key


#: The members of an RSA private JWK that `_rsa_private_key` needs (RFC 7518 6.3.2).
_RSA_CRT_MEMBERS = ("n", "e", "d", "p", "q", "dp", "dq", "qi")


def _rsa_private_key(raw: dict[str, Any]) -> rsa.RSAPrivateKey:
    """The RSA key of a private JWK of ours, without OpenSSL's consistency check of its
    primes and exponents (about 60 ms a key, the largest part of loading the keyring at
    start-up). The check guards against a corrupt or forged key; ours was made by
    `new_signing_key` and comes back through authenticated encryption bound to its kid
    (`Encryptor`), so it is the key that was made, and `load_private_key` still checks
    its public part against the kid."""
    public = rsa.RSAPublicNumbers(_int(raw["e"]), _int(raw["n"]))
    numbers = rsa.RSAPrivateNumbers(
        p=_int(raw["p"]),
        q=_int(raw["q"]),
        d=_int(raw["d"]),
        dmp1=_int(raw["dp"]),
        dmq1=_int(raw["dq"]),
        iqmp=_int(raw["qi"]),
        public_numbers=public,
    )
    return numbers.private_key(unsafe_skip_rsa_key_validation=True)


def _int(value: str) -> int:
    """A JWK's base64url big-endian integer (RFC 7518 2)."""
    return int.from_bytes(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)), "big")


def _parameters(raw: dict[str, Any]) -> KeyParameters:
    """The JWK's members that describe the key rather than hold it."""
    return cast(KeyParameters, {k: raw[k] for k in ("kid", "alg", "use", "key_ops") if k in raw})


def is_retired(row: KeyScheduleRow, now: dt.datetime) -> bool:
    """Withdrawn from the JWKS: its retirement time has passed."""
    return row.retired_at is not None and row.retired_at <= now


def can_sign(row: KeyScheduleRow, now: dt.datetime) -> bool:
    """Allowed to sign now: activated and not retired."""
    return row.active_from <= now and not is_retired(row, now)


def signing_choice(rows: Iterable[K], alg: str, now: dt.datetime) -> K | None:
    """The key of `alg` that signs now: the newest one allowed to sign."""
    candidates = [row for row in rows if row.alg == alg and can_sign(row, now)]
    return max(candidates, key=lambda row: (row.active_from, row.seq), default=None)


def key_state(row: KeyScheduleRow, now: dt.datetime) -> str:
    """`pending` (published, not signing yet), `active`, `retiring` (retirement
    scheduled) or `retired`."""
    if is_retired(row, now):
        return "retired"
    if row.active_from > now:
        return "pending"
    return "retiring" if row.retired_at is not None else "active"


def retire_after_for(settings: Settings) -> dt.timedelta:
    """How long a replaced key stays published after it stops signing: the longest
    lifetime of a token signed with it (access and ID tokens; refresh tokens are opaque)
    plus clock skew."""
    longest = max(settings.access_token_seconds, settings.id_token_seconds)
    return dt.timedelta(seconds=longest) + CLOCK_SKEW


def list_keys(db: Session) -> Sequence[SigningKey]:
    """Every key row, oldest first within each algorithm."""
    return db.scalars(select(SigningKey).order_by(SigningKey.alg, SigningKey.seq)).all()


def _next_seq(db: Session, alg: str) -> int:
    current = db.scalar(select(func.max(SigningKey.seq)).where(SigningKey.alg == alg))
    return (current or 0) + 1


def ensure_keys(
    sessions: sessionmaker[Session],
    *,
    encryptor: Encryptor,
    now: Callable[[], dt.datetime],
    algs: Sequence[str] = SUPPORTED_ALGS,
) -> list[SigningKey]:
    """Give each algorithm a key able to sign; returns the keys it created or activated.

    Normally that means creating one (first start). When the signer was withdrawn early
    (`retire_key`, a suspected leak) and a successor is already published, the successor
    signs at once instead: it is in relying parties' JWKS caches, a brand-new key is not.

    Race-safe across processes: the new row takes the next `seq` of its algorithm, and
    the unique (alg, seq) constraint lets only one of two racing processes commit; the
    loser re-reads and finds the winner's key.
    """
    created: list[SigningKey] = []
    for alg in algs:
        for attempt in range(_CREATE_ATTEMPTS):
            try:
                with sessions() as db, db.begin():
                    rows = db.scalars(select(SigningKey).where(SigningKey.alg == alg)).all()
                    moment = now()
                    if signing_choice(rows, alg, moment) is not None:
                        break
                    pending = [
                        r for r in rows if r.active_from > moment and not is_retired(r, moment)
                    ]
                    if pending:
                        # Next in line by the rotation schedule; later ones keep theirs.
                        row = min(pending, key=lambda r: (r.active_from, r.seq))
                        row.active_from = moment
                        created.append(row)
                        break
                    # The first key signs at once: no relying party can have cached a JWKS
                    # that lacks it, because there was nothing to sign with before.
                    row = new_signing_key(
                        alg=alg,
                        encryptor=encryptor,
                        seq=_next_seq(db, alg),
                        now=moment,
                        active_from=moment,
                    )
                    db.add(row)
                created.append(row)
                break
            except (IntegrityError, OperationalError):
                # Another process created this algorithm's key first (unique alg, seq), or
                # SQLite refused a stale write snapshot: read again.
                if attempt == _CREATE_ATTEMPTS - 1:
                    raise
    return created


def retire_key(db: Session, *, kid: str, now: dt.datetime) -> SigningKey:
    """Withdraw a key from the JWKS now (a suspected leak): tokens it signed stop
    verifying. If it was its algorithm's signer, the next published key takes over at once
    (see `ensure_keys`), so rotate first. The caller commits."""
    row = db.get(SigningKey, kid)
    if row is None:
        raise LookupError(f"no signing key has kid {kid!r}")
    if row.retired_at is None or row.retired_at > now:
        row.retired_at = now
    return row


def rotate_keys(
    db: Session,
    *,
    encryptor: Encryptor,
    now: dt.datetime,
    activation_delay: dt.timedelta,
    retire_after: dt.timedelta,
    algs: Sequence[str] = SUPPORTED_ALGS,
) -> list[SigningKey]:
    """Create one new key per algorithm, published at once and signing from
    `now + activation_delay`; schedule each older key's retirement for when the new one
    has signed for `retire_after` (the longest lifetime of a token the old key signed).

    Keys already scheduled to retire keep their time: their last token was signed when
    their own successor took over. The caller commits; a concurrent rotation loses on the
    unique (alg, seq) constraint.
    """
    if activation_delay < dt.timedelta(0) or retire_after < dt.timedelta(0):
        raise ValueError("activation_delay and retire_after must not be negative")
    created: list[SigningKey] = []
    for alg in algs:
        rows = db.scalars(select(SigningKey).where(SigningKey.alg == alg)).all()
        # With no key able to sign there is no token to keep verifiable and nothing for
        # the new key to wait for: it signs at once.
        delay = activation_delay if signing_choice(rows, alg, now) else dt.timedelta(0)
        active_from = now + delay
        for old in rows:
            if old.retired_at is None:
                old.retired_at = active_from + retire_after
        row = new_signing_key(
            alg=alg,
            encryptor=encryptor,
            seq=_next_seq(db, alg),
            now=now,
            active_from=active_from,
        )
        db.add(row)
        created.append(row)
    db.flush()
    return created
