"""Signing keys: generation, encryption at rest, the rotation schedule, and keyrings in
separate "processes" (own Services and engine) agreeing through the database."""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from joserfc import jwt
from joserfc.errors import BadSignatureError, InvalidKeyIdError
from joserfc.jwk import ECKey, KeySet, RSAKey
from sqlalchemy import Engine, event, select, text, update
from sqlalchemy.exc import IntegrityError, OperationalError

from idp import migrations
from idp.app import Services, build_services
from idp.crypto import DecryptionError
from idp.models import SigningKey
from idp.oauth import tokens
from idp.oauth.keyring import KeyRing, NoSigningKeyError, get_keyring
from idp.oauth.keys import (
    PUBLIC_MEMBERS,
    ensure_keys,
    load_private_key,
    new_signing_key,
    retire_after_for,
    retire_key,
    rotate_keys,
)
from idp.settings import Settings
from tests.clock import Clock

T0 = dt.datetime(2026, 3, 1, 9, 0, tzinfo=dt.UTC)
DELAY = dt.timedelta(minutes=15)
RETIRE_AFTER = dt.timedelta(minutes=11)
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi"}


class QueryCounter:
    """Records the queries an engine sends (to prove the hot path sends none)."""

    def __init__(self, engine: Engine) -> None:
        self.statements: list[str] = []
        event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        # Transaction control is not a query (SQLite engines send BEGIN IMMEDIATE).
        if not statement.lstrip().upper().startswith("BEGIN"):
            self.statements.append(statement)

    @property
    def count(self) -> int:
        return len(self.statements)


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def ring(services: Services, clock: Clock) -> KeyRing:
    keyring = KeyRing(services.sessions, services.encryptor, now=clock)
    keyring.ensure_keys()
    return keyring


@pytest.fixture
def other_process(settings: Settings) -> Iterator[Services]:
    """Services with their own engine and pool on the same database: another process."""
    built = build_services(settings)
    yield built
    built.engine.dispose()


def rows(services: Services) -> list[SigningKey]:
    with services.sessions() as db:
        return list(db.scalars(select(SigningKey).order_by(SigningKey.alg, SigningKey.seq)))


def rotate(services: Services, now: dt.datetime) -> dict[str, str]:
    """Rotate in one committed transaction; returns the new kid per alg."""
    with services.sessions() as db, db.begin():
        created = rotate_keys(
            db,
            encryptor=services.encryptor,
            now=now,
            activation_delay=DELAY,
            retire_after=RETIRE_AFTER,
        )
    return {row.alg: row.kid for row in created}


def jwks_kids(ring: KeyRing) -> set[str]:
    return {key["kid"] for key in json.loads(ring.jwks_bytes())["keys"]}


def b64u(value: bytes) -> str:
    return base64.urlsafe_b64encode(value).rstrip(b"=").decode()


def rfc7638_thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 section 3, computed here rather than by joserfc: the required members in
    lexicographic order, no whitespace, SHA-256, base64url."""
    required = ("e", "kty", "n") if jwk["kty"] == "RSA" else ("crv", "kty", "x", "y")
    canonical = json.dumps({m: jwk[m] for m in required}, separators=(",", ":"), sort_keys=True)
    return b64u(hashlib.sha256(canonical.encode()).digest())


def test_first_use_creates_one_rs256_and_one_es256_key(services: Services, ring: KeyRing) -> None:
    stored = rows(services)
    assert sorted(row.alg for row in stored) == ["ES256", "RS256"]
    rsa, ec = ring.signing_key("RS256"), ring.signing_key("ES256")
    assert isinstance(rsa, RSAKey)
    assert rsa.as_dict(private=False)["alg"] == "RS256"
    # RFC 7518 3.3: 2048-bit modulus.
    n = rsa.as_dict(private=False)["n"]
    assert isinstance(n, str)
    assert len(base64.urlsafe_b64decode(n + "==")) * 8 == 2048
    assert isinstance(ec, ECKey)
    assert ec.as_dict(private=False)["crv"] == "P-256"
    for key in (rsa, ec):
        assert key.kid == rfc7638_thumbprint(key.as_dict(private=False))
    assert jwks_kids(ring) == {rsa.kid, ec.kid}
    # The default algorithm is RS256 (OIDC Core 15.1).
    assert ring.signing_key().kid == rsa.kid
    # Asking again changes nothing: keys are created only when none can sign.
    ring.ensure_keys()
    assert len(rows(services)) == 2


def test_get_keyring_builds_once_per_services(services: Services) -> None:
    first = get_keyring(services)
    assert get_keyring(services) is first
    assert services.extras["keyring"] is first
    assert len(rows(services)) == 2


def test_private_key_is_encrypted_at_rest(services: Services, ring: KeyRing) -> None:
    secrets_in_clear = {
        str(ring.signing_key(alg).as_dict(private=True)[member])
        for alg in ("RS256", "ES256")
        for member in PRIVATE_MEMBERS
        if member in ring.signing_key(alg).as_dict(private=True)
    }
    assert secrets_in_clear  # d (and p, q, ... for RSA) exist
    with services.engine.connect() as conn:
        stored = conn.execute(
            text("SELECT kid, private_key_encrypted, public_jwk FROM signing_keys")
        ).all()
    for kid, sealed, public in stored:
        raw = f"{sealed} {public}"
        assert not any(secret in raw for secret in secrets_in_clear)
        assert '"d"' not in raw
        # Bound to its kid: decrypting with any other context fails (AES-GCM associated data).
        with pytest.raises(DecryptionError):
            services.encryptor.decrypt(sealed, context=b"another-kid")
        opened = json.loads(services.encryptor.decrypt(sealed, context=kid.encode()))
        assert opened["kid"] == kid
        assert "d" in opened


def test_a_ciphertext_moved_to_another_row_is_refused(services: Services, ring: KeyRing) -> None:
    rs, es = sorted(rows(services), key=lambda row: row.alg, reverse=True)
    assert (rs.alg, es.alg) == ("RS256", "ES256")
    rs.private_key_encrypted = es.private_key_encrypted
    with pytest.raises(DecryptionError):
        load_private_key(rs, encryptor=services.encryptor)


def test_a_private_key_that_does_not_match_its_kid_is_refused(services: Services) -> None:
    row = new_signing_key(alg="RS256", encryptor=services.encryptor, seq=1, now=T0, active_from=T0)
    impostor = RSAKey.generate_key(2048, parameters={"alg": "RS256"}, private=True)
    # Sealed with the right context, so only the thumbprint check can catch it.
    row.private_key_encrypted = services.encryptor.encrypt(
        json.dumps(impostor.as_dict(private=True)).encode(), context=row.kid.encode()
    )
    with pytest.raises(ValueError, match="does not match"):
        load_private_key(row, encryptor=services.encryptor)


def test_a_stored_rsa_key_loads_as_the_key_that_was_made(services: Services) -> None:
    """Loaded without OpenSSL's consistency check (start-up time), it is still the same
    key: same private numbers, its signature verifies with the published key."""
    row = new_signing_key(alg="RS256", encryptor=services.encryptor, seq=1, now=T0, active_from=T0)
    made = json.loads(
        services.encryptor.decrypt(row.private_key_encrypted, context=row.kid.encode())
    )
    loaded = load_private_key(row, encryptor=services.encryptor)
    assert isinstance(loaded, RSAKey)
    assert (loaded.kid, loaded.alg) == (row.kid, "RS256")
    assert loaded.as_dict(private=True) == made
    token = jwt.encode({"alg": "RS256", "kid": row.kid}, {"sub": "x"}, loaded)
    published = RSAKey.import_key(row.public_jwk)
    assert jwt.decode(token, published).claims == {"sub": "x"}


def test_an_rsa_key_without_its_crt_members_loads_through_the_checked_path(
    services: Services,
) -> None:
    row = new_signing_key(alg="RS256", encryptor=services.encryptor, seq=1, now=T0, active_from=T0)
    made = json.loads(
        services.encryptor.decrypt(row.private_key_encrypted, context=row.kid.encode())
    )
    short = {k: v for k, v in made.items() if k not in {"p", "q", "dp", "dq", "qi"}}
    row.private_key_encrypted = services.encryptor.encrypt(
        json.dumps(short).encode(), context=row.kid.encode()
    )
    loaded = load_private_key(row, encryptor=services.encryptor)
    assert isinstance(loaded, RSAKey)
    assert loaded.private_key is not None
    primes = loaded.private_key.private_numbers()
    expected = {int.from_bytes(base64.urlsafe_b64decode(made[m] + "=="), "big") for m in "pq"}
    assert {primes.p, primes.q} == expected  # recovered from d


def test_jwks_holds_public_members_only(ring: KeyRing) -> None:
    for key in json.loads(ring.jwks_bytes())["keys"]:
        assert set(key) <= PUBLIC_MEMBERS
        assert not PRIVATE_MEMBERS & set(key)
        assert key["use"] == "sig"
        assert key["alg"] in {"RS256", "ES256"}


def test_tokens_signed_with_either_alg_verify_with_the_verification_keys(ring: KeyRing) -> None:
    for alg in ("RS256", "ES256"):
        key = ring.signing_key(alg)
        token = jwt.encode({"alg": alg, "kid": key.kid}, {"sub": "a"}, key)
        assert jwt.decode(token, ring.verification_keys(key.kid)).claims == {"sub": "a"}
    foreign = RSAKey.generate_key(2048, parameters={"alg": "RS256"}, private=True)
    foreign.ensure_kid()
    forged = jwt.encode({"alg": "RS256", "kid": ring.signing_key().kid}, {"sub": "a"}, foreign)
    with pytest.raises(BadSignatureError):
        jwt.decode(forged, ring.verification_keys())


def test_unsupported_algorithm_is_refused(ring: KeyRing) -> None:
    for alg in ("HS256", "none", "PS256"):
        with pytest.raises(NoSigningKeyError):
            ring.signing_key(alg)


def test_rotation_publishes_at_once_signs_after_delay_and_retires_later(
    services: Services, ring: KeyRing, clock: Clock
) -> None:
    old = {alg: ring.signing_key(alg).kid for alg in ("RS256", "ES256")}
    old_key = ring.signing_key()
    old_token = jwt.encode({"alg": "RS256", "kid": old_key.kid}, {"sub": "a"}, old_key)
    clock.advance(minutes=1)
    rotated_at = clock.now
    new = rotate(services, rotated_at)
    clock.advance(seconds=6)  # past the keyring's re-check interval

    # Published at once, so relying parties cache it before it signs anything.
    assert jwks_kids(ring) == set(old.values()) | set(new.values())
    assert {alg: ring.signing_key(alg).kid for alg in old} == old

    clock.now = rotated_at + DELAY - dt.timedelta(seconds=1)
    assert ring.signing_key().kid == old["RS256"]
    clock.now = rotated_at + DELAY
    assert {alg: ring.signing_key(alg).kid for alg in old} == new
    # The old key still verifies tokens it signed until they have all expired.
    assert jwks_kids(ring) == set(old.values()) | set(new.values())
    assert jwt.decode(old_token, ring.verification_keys(old["RS256"])).claims == {"sub": "a"}

    clock.now = rotated_at + DELAY + RETIRE_AFTER - dt.timedelta(seconds=1)
    assert old["ES256"] in jwks_kids(ring)
    clock.now = rotated_at + DELAY + RETIRE_AFTER
    assert jwks_kids(ring) == set(new.values())
    with pytest.raises(InvalidKeyIdError):
        jwt.decode(old_token, ring.verification_keys(old["RS256"]))


def test_a_second_rotation_keeps_the_first_retirement_time(
    services: Services, ring: KeyRing, clock: Clock
) -> None:
    first_kid = ring.signing_key().kid
    first = rotate(services, T0)
    rotate(services, T0 + dt.timedelta(minutes=2))
    by_kid = {row.kid: row for row in rows(services)}
    assert by_kid[first_kid].retired_at == T0 + DELAY + RETIRE_AFTER
    # The middle key signs from T0+15 min until its successor takes over at T0+17 min.
    middle = by_kid[first["RS256"]]
    assert middle.retired_at == T0 + dt.timedelta(minutes=2) + DELAY + RETIRE_AFTER
    assert [row.seq for row in rows(services) if row.alg == "RS256"] == [1, 2, 3]


def test_rotation_of_an_empty_database_signs_at_once(services: Services, clock: Clock) -> None:
    new = rotate(services, T0)
    keyring = KeyRing(services.sessions, services.encryptor, now=clock)
    assert keyring.signing_key().kid == new["RS256"]
    assert keyring.signing_key("ES256").kid == new["ES256"]


def test_another_process_sees_a_rotation_without_restart(
    services: Services, other_process: Services, ring: KeyRing, clock: Clock
) -> None:
    other_clock = Clock(T0)
    other = KeyRing(other_process.sessions, other_process.encryptor, now=other_clock)
    assert other.jwks_bytes() == ring.jwks_bytes()
    new = rotate(other_process, T0)  # e.g. `idp keys rotate` on another host

    # Within the re-check interval the other keyring serves from memory...
    clock.advance(seconds=1)
    assert new["RS256"] not in jwks_kids(ring)
    # ...and after it, the fingerprint query notices the new keys.
    clock.advance(seconds=5)
    assert set(new.values()) <= jwks_kids(ring)
    clock.now = T0 + DELAY
    assert ring.signing_key().kid == new["RS256"]


def test_an_unknown_kid_triggers_an_immediate_reload(
    services: Services, other_process: Services, ring: KeyRing, clock: Clock
) -> None:
    new = rotate(other_process, T0)
    clock.advance(seconds=1.5)  # well inside the 5 s re-check interval
    keys = ring.verification_keys(new["ES256"])
    assert keys.get_by_kid(new["ES256"])


def test_a_token_signed_with_a_key_made_elsewhere_verifies_after_one_reread(
    services: Services, other_process: Services, ring: KeyRing, clock: Clock
) -> None:
    ring.jwks_bytes()  # loaded now, before the rotation
    new = rotate(other_process, T0)
    signer = KeyRing(other_process.sessions, other_process.encryptor, now=Clock(T0 + DELAY))
    claims = {"iss": "https://idp.example", "sub": "a", "exp": int(T0.timestamp()) + 600}
    token = tokens.sign_access_token(claims, signer, alg="ES256")
    assert token_kid(token) == new["ES256"]
    clock.advance(seconds=1.5)  # well inside the 5 s re-check interval
    verify = functools.partial(
        tokens.verify_access_token, token, keys=ring, issuer="https://idp.example", now=T0
    )
    with pytest.raises(tokens.TokenInvalidError):  # the event loop never re-reads
        verify(reread_unknown_kid=False)
    assert verify()["sub"] == "a"  # elsewhere the keyring re-reads once, and knows it


def token_kid(token: str) -> str:
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    kid: str = header["kid"]
    return kid


def test_made_up_kids_cost_at_most_one_query_per_interval(
    services: Services, ring: KeyRing, clock: Clock
) -> None:
    counter = QueryCounter(services.engine)
    clock.advance(seconds=1.5)
    for n in range(50):
        ring.verification_keys(f"made-up-{n}")
    assert counter.count == 1, counter.statements


def test_the_hot_path_sends_no_query(services: Services, ring: KeyRing, clock: Clock) -> None:
    counter = QueryCounter(services.engine)
    for _ in range(200):
        ring.signing_key()
        ring.signing_key("ES256")
        ring.jwks_bytes()
        ring.verification_keys(ring.signing_key().kid)
    assert counter.count == 0
    clock.advance(seconds=5)
    ring.signing_key()
    assert counter.count == 1, counter.statements  # the fingerprint only: nothing reloaded


def test_jwks_bytes_are_rebuilt_only_when_the_keys_change(
    services: Services, ring: KeyRing, clock: Clock
) -> None:
    before = ring.jwks_bytes()
    clock.advance(seconds=30)
    assert ring.jwks_bytes() is before
    rotate(services, clock.now)
    clock.advance(seconds=6)
    after = ring.jwks_bytes()
    assert after is not before
    assert len(json.loads(after)["keys"]) == 4


def test_processes_starting_together_end_with_one_key_per_alg(
    settings: Settings, services: Services
) -> None:
    others = [build_services(settings) for _ in range(4)]
    barrier = threading.Barrier(len(others))
    rings: list[KeyRing] = []
    errors: list[BaseException] = []

    def start(process: Services) -> None:
        try:
            barrier.wait()
            rings.append(get_keyring(process))
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(process,)) for process in others]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for process in others:
        process.engine.dispose()
    assert not errors
    stored = rows(services)
    assert sorted(row.alg for row in stored) == ["ES256", "RS256"]
    assert {ring.signing_key().kid for ring in rings} == {
        row.kid for row in stored if row.alg == "RS256"
    }


def test_the_race_guard_refuses_a_second_key_with_the_same_seq(services: Services) -> None:
    ensure_keys(services.sessions, encryptor=services.encryptor, now=lambda: T0)
    duplicate = new_signing_key(
        alg="RS256", encryptor=services.encryptor, seq=1, now=T0, active_from=T0
    )
    with pytest.raises(IntegrityError), services.sessions() as db, db.begin():
        db.add(duplicate)
    assert len(rows(services)) == 2


def test_a_keyring_whose_keys_were_all_retired_makes_new_ones(
    services: Services, ring: KeyRing, clock: Clock
) -> None:
    old = ring.signing_key().kid
    with services.sessions() as db, db.begin():
        db.execute(update(SigningKey).values(retired_at=T0))
    clock.advance(seconds=6)
    fresh = ring.signing_key()
    assert fresh.kid != old
    assert old not in jwks_kids(ring)
    assert fresh.kid in jwks_kids(ring)


def test_retire_after_covers_the_longest_signed_token(database_url: str) -> None:
    settings = Settings(database_url=database_url, access_token_seconds=900, id_token_seconds=300)
    assert retire_after_for(settings) == dt.timedelta(seconds=900 + 60)


def test_a_verification_keyset_is_a_joserfc_keyset(ring: KeyRing) -> None:
    assert isinstance(ring.verification_keys(), KeySet)


def test_a_keyring_finds_replacement_keys_another_process_made(
    services: Services, other_process: Services, clock: Clock
) -> None:
    """Its own snapshot has no signer left, but another process already made one."""
    ensure_keys(services.sessions, encryptor=services.encryptor, now=lambda: T0)
    with services.sessions() as db, db.begin():
        db.execute(update(SigningKey).values(retired_at=T0 + dt.timedelta(seconds=3)))
    ring = KeyRing(services.sessions, services.encryptor, now=clock)
    other = KeyRing(other_process.sessions, other_process.encryptor, now=lambda: clock.now)
    clock.advance(seconds=3)
    replacement = other.signing_key().kid  # heals: creates the next RS256 and ES256 keys
    clock.advance(seconds=1)  # inside `ring`'s re-check interval
    assert ring.signing_key().kid == replacement
    assert len(rows(services)) == 4


def test_an_emergency_withdrawal_reaches_running_keyrings(services: Services, clock: Clock) -> None:
    """Moving a retiring key's retirement to now changes no count, min or max (an older
    retired key and a later retiring one bracket it); the keyring must still notice."""
    rotate(services, T0 - dt.timedelta(hours=2))  # retired at T0-34 min
    leaked = rotate(services, T0 - dt.timedelta(hours=1))  # retires at T0+25 min
    rotate(services, T0 - dt.timedelta(minutes=1))  # retires at T0+26 min
    rotate(services, T0)
    clock.now = T0 + dt.timedelta(minutes=1)
    ring = KeyRing(services.sessions, services.encryptor, now=clock)
    assert ring.signing_key().kid == leaked["RS256"]
    with services.sessions() as db, db.begin():
        db.execute(
            update(SigningKey).where(SigningKey.kid == leaked["RS256"]).values(retired_at=clock.now)
        )
    clock.advance(seconds=5)
    assert leaked["RS256"] not in jwks_kids(ring)
    assert ring.signing_key().kid != leaked["RS256"]


def test_withdrawing_the_signer_hands_over_to_its_published_successor(
    services: Services, ring: KeyRing, clock: Clock
) -> None:
    leaked = ring.signing_key().kid
    successor = rotate(services, T0)["RS256"]
    later = rotate(services, T0 + dt.timedelta(minutes=1))["RS256"]
    clock.advance(minutes=2)
    with services.sessions() as db, db.begin():
        retire_key(db, kid=leaked, now=clock.now)
    clock.advance(seconds=5)
    # The successor relying parties have cached signs at once; no unpublished key is made.
    assert ring.signing_key().kid == successor
    assert leaked not in jwks_kids(ring)
    assert len(rows(services)) == 6
    by_kid = {row.kid: row for row in rows(services)}
    assert by_kid[successor].active_from == clock.now
    assert by_kid[later].active_from == T0 + dt.timedelta(minutes=1) + DELAY


def test_retiring_an_unknown_kid_is_an_error(services: Services) -> None:
    with services.sessions() as db, pytest.raises(LookupError):
        retire_key(db, kid="nope", now=T0)


def test_a_failing_recheck_keeps_the_loaded_keys(tmp_path: Path, clock: Clock) -> None:
    """A database that breaks under a running process (here its table vanishes) must not
    stop signing or the JWKS; the next check waits one interval."""
    process = build_services(Settings(database_url=f"sqlite:///{tmp_path / 'broken.sqlite3'}"))
    try:
        migrations.upgrade(process.engine)
        keyring = KeyRing(process.sessions, process.encryptor, now=clock)
        keyring.ensure_keys()
        kid, jwks = keyring.signing_key().kid, keyring.jwks_bytes()
        with process.engine.begin() as conn:
            conn.execute(text("DROP TABLE signing_keys"))
        clock.advance(seconds=6)
        assert keyring.signing_key().kid == kid
        assert keyring.jwks_bytes() == jwks
        # An explicit refresh (e.g. after `ensure_keys`) still reports the failure.
        with pytest.raises(OperationalError):
            keyring.refresh()
    finally:
        process.engine.dispose()


def test_a_recheck_inside_a_writing_request_does_not_wait_for_its_own_lock(
    tmp_path: Path,
) -> None:
    """SQLite: a request holds the write lock (BEGIN IMMEDIATE) when the keyring's periodic
    re-check runs in the same thread; the re-check only reads, so it must not queue for
    that lock (it used to wait out the 30 s busy timeout)."""
    services = build_services(Settings(database_url=f"sqlite:///{tmp_path / 'idp.sqlite3'}"))
    migrations.upgrade(services.engine)
    try:
        ring = get_keyring(services)
        with services.sessions() as db, db.begin():
            db.execute(text("UPDATE signing_keys SET kid = kid"))  # holds the write lock
            done = threading.Event()

            def recheck() -> None:
                ring.refresh(force=True)
                done.set()

            worker = threading.Thread(target=recheck, daemon=True)
            worker.start()
            assert done.wait(timeout=5), "the re-check queued behind the request's lock"
        assert ring.signing_key("RS256").kid
    finally:
        services.engine.dispose()
