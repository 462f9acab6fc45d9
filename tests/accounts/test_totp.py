"""TOTP: RFC 6238 vectors, seeds, key URI and QR code, one-time acceptance across processes."""

from __future__ import annotations

import base64
import datetime as dt
import io
import re
import threading
from urllib.parse import parse_qs, unquote, urlsplit

import pyotp
import pytest
import zxingcpp
from PIL import Image, ImageDraw
from sqlalchemy import func, select

from idp.accounts import totp
from idp.app import Services
from idp.crypto import DecryptionError, Encryptor, new_token, token_digest
from idp.db import make_engine, make_session_factory, transaction
from idp.models import (
    Account,
    AuditEvent,
    BrowserSession,
    Grant,
    LoginTransaction,
    RefreshToken,
    TotpCredential,
)
from tests.accounts._identity import NOW, make_account, make_grant_with_refresh_token

RFC_SECRET = base64.b32encode(b"12345678901234567890").decode()


# --- RFC 6238 Appendix B, through the same helper verification uses ----------------------


@pytest.mark.parametrize(
    ("unix_time", "expected"),
    [
        (59, "94287082"),
        (1111111109, "07081804"),
        (1111111111, "14050471"),
        (1234567890, "89005924"),
        (2000000000, "69279037"),
        (20000000000, "65353130"),
    ],
)
def test_rfc6238_appendix_b_sha1_vectors(unix_time: int, expected: str) -> None:
    at = dt.datetime.fromtimestamp(unix_time, dt.UTC)
    assert totp.code_at(RFC_SECRET, totp.time_step(at), digits=8) == expected
    # The six-digit code we accept is the last six digits of the same HOTP value.
    assert totp.code_at(RFC_SECRET, totp.time_step(at)) == expected[-6:]


def test_matching_step_accepts_the_rfc_code_at_its_time() -> None:
    at = dt.datetime.fromtimestamp(1111111109, dt.UTC)
    assert totp.matching_step(RFC_SECRET, "081804", now=at) == 1111111109 // 30


# --- seeds, key URI, QR --------------------------------------------------------------------


def test_new_secret_is_160_bits_base32_without_padding_and_unique() -> None:
    secrets_ = {totp.new_secret() for _ in range(200)}
    assert len(secrets_) == 200
    for secret in secrets_:
        assert re.fullmatch(r"[A-Z2-7]{32}", secret)
        assert len(base64.b32decode(secret)) == 20


def test_provisioning_uri_label_prefix_equals_issuer_and_parameters() -> None:
    secret = totp.new_secret()
    uri = totp.provisioning_uri(secret, email="jo.bloggs@example.org", issuer="PharmOutcomes")
    parts = urlsplit(uri)
    assert (parts.scheme, parts.netloc) == ("otpauth", "totp")
    assert unquote(parts.path) == "/PharmOutcomes:jo.bloggs@example.org"
    query = parse_qs(parts.query)
    assert query["secret"] == [secret]
    assert query["issuer"] == ["PharmOutcomes"]
    assert query["algorithm"] == ["SHA1"]
    assert query["digits"] == ["6"]
    assert query["period"] == ["30"]
    parsed = pyotp.parse_uri(uri)
    assert isinstance(parsed, pyotp.TOTP)
    assert parsed.secret == secret
    assert parsed.issuer == "PharmOutcomes"
    assert parsed.name == "jo.bloggs@example.org"


def test_provisioning_uri_escapes_spaces_in_the_issuer() -> None:
    uri = totp.provisioning_uri("AAAA", email="a@example.org", issuer="Ocular Outcomes")
    assert uri.startswith("otpauth://totp/Ocular%20Outcomes:a@example.org?")
    assert "issuer=Ocular%20Outcomes" in uri


@pytest.mark.parametrize("issuer", ["", "Pharm:Outcomes"])
def test_provisioning_uri_refuses_an_ambiguous_issuer(issuer: str) -> None:
    with pytest.raises(ValueError, match="issuer"):
        totp.provisioning_uri("AAAA", email="a@example.org", issuer=issuer)


def test_grouped_key_groups_of_four() -> None:
    assert totp.grouped_key("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") == (
        "ABCD EFGH IJKL MNOP QRST UVWX YZ23 4567"
    )
    assert totp.grouped_key("ABCDEF") == "ABCD EF"


def _decode(image: Image.Image) -> str:
    results = zxingcpp.read_barcodes(image)
    assert len(results) == 1
    return str(results[0].text)


def _rasterise_path_svg(svg: str, *, scale: int = 8) -> Image.Image:
    """Draw the unit squares of qrcode's SVG path image (M x,y H V z) onto a bitmap."""
    size = int(re.search(r'viewBox="0 0 (\d+) \d+"', svg).group(1))  # type: ignore[union-attr]
    image = Image.new("L", (size * scale, size * scale), 255)
    draw = ImageDraw.Draw(image)
    for x, y in re.findall(r"M(\d+),(\d+)H", svg):
        x0, y0 = int(x) * scale, int(y) * scale
        draw.rectangle([x0, y0, x0 + scale - 1, y0 + scale - 1], fill=0)
    return image


def test_qr_svg_is_self_contained_labelled_and_decodes_to_the_uri() -> None:
    uri = totp.provisioning_uri(totp.new_secret(), email="a@example.org", issuer="PharmOutcomes")
    svg = totp.qr_svg(uri, label='Scan "me" <now>')
    assert svg.startswith("<svg ")
    assert 'role="img"' in svg
    assert 'aria-label="Scan &quot;me&quot; &lt;now&gt;"' in svg
    # No external resources and nothing a strict CSP would block.
    assert "<script" not in svg
    assert "href" not in svg
    assert "<image" not in svg
    assert re.findall(r"https?://[^\"']+", svg) == ["http://www.w3.org/2000/svg"]
    assert _decode(_rasterise_path_svg(svg)) == uri


def test_qr_png_decodes_to_the_uri() -> None:
    uri = totp.provisioning_uri(totp.new_secret(), email="b@example.org", issuer="Outcomes4Health")
    assert _decode(Image.open(io.BytesIO(totp.qr_png(uri)))) == uri


# --- encryption at rest --------------------------------------------------------------------


def test_secret_encryption_round_trips_and_is_bound_to_the_account() -> None:
    encryptor = Encryptor({"k1": b"k" * 32})
    secret = totp.new_secret()
    sealed = totp.encrypt_secret(encryptor, secret, account_id="acc-1")
    assert secret not in sealed
    assert sealed.startswith("k1.")
    assert totp.decrypt_secret(encryptor, sealed, account_id="acc-1") == secret
    with pytest.raises(DecryptionError):
        totp.decrypt_secret(encryptor, sealed, account_id="acc-2")


def test_secret_decrypts_after_key_rotation() -> None:
    old = Encryptor({"k1": b"a" * 32})
    sealed = totp.encrypt_secret(old, "JBSWY3DPEHPK3PXP", account_id="acc")
    rotated = Encryptor({"k2": b"b" * 32, "k1": b"a" * 32})
    assert totp.decrypt_secret(rotated, sealed, account_id="acc") == "JBSWY3DPEHPK3PXP"
    assert totp.encrypt_secret(rotated, "JBSWY3DPEHPK3PXP", account_id="acc").startswith("k2.")


# --- code normalisation --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("123456", "123456"),
        (" 123 456 ", "123456"),
        ("123\t456\n", "123456"),
        ("12345", None),
        ("1234567", None),
        ("12345a", None),
        ("", None),
        ("١٢٣٤٥٦", None),  # Arabic-Indic digits are digits to Python, not to us
        ("\uff11\uff12\uff13\uff14\uff15\uff16", None),  # fullwidth digits
        ("123-456", None),
        ("1" * 10_000, None),
    ],
)
def test_normalise_code(raw: str, expected: str | None) -> None:
    assert totp.normalise_code(raw) == expected


# --- verification against the database ------------------------------------------------------


def _enrolled(services: Services, *, now: dt.datetime = NOW) -> tuple[str, str, str]:
    """An account with a credential whose last used step is well in the past."""
    secret = totp.new_secret()
    with transaction(services.sessions) as db:
        account = make_account(db)
        credential = TotpCredential(
            account_id=account.id,
            secret_encrypted=totp.encrypt_secret(services.encryptor, secret, account_id=account.id),
            last_used_step=totp.time_step(now) - 100,
        )
        db.add(credential)
        db.flush()
        return account.id, credential.id, secret


def _verify(services: Services, credential_id: str, code: str, now: dt.datetime) -> bool:
    with transaction(services.sessions) as db:
        credential = db.get_one(TotpCredential, credential_id)
        return totp.verify_code(
            db, credential=credential, code=code, encryptor=services.encryptor, now=now
        )


def _code(secret: str, now: dt.datetime, offset: int = 0) -> str:
    return totp.code_at(secret, totp.time_step(now) + offset)


@pytest.mark.parametrize("offset", [-1, 0, 1])
def test_code_within_one_step_of_drift_is_accepted(services: Services, offset: int) -> None:
    _, credential_id, secret = _enrolled(services)
    assert _verify(services, credential_id, _code(secret, NOW, offset), NOW)


@pytest.mark.parametrize("offset", [-3, -2, 2, 3])
def test_code_two_or_more_steps_away_is_refused(services: Services, offset: int) -> None:
    _, credential_id, secret = _enrolled(services)
    assert not _verify(services, credential_id, _code(secret, NOW, offset), NOW)


def test_code_is_accepted_once_only(services: Services) -> None:
    _, credential_id, secret = _enrolled(services)
    code = _code(secret, NOW)
    assert _verify(services, credential_id, code, NOW)
    # NIST 800-63B 5.1.4.2 / ASVS 6.5.1: the same code, seconds later, is refused.
    assert not _verify(services, credential_id, code, NOW + dt.timedelta(seconds=5))
    # ...and so is the code of the previous step, though still within drift.
    assert not _verify(services, credential_id, _code(secret, NOW, -1), NOW)
    # The next step's code still works.
    assert _verify(services, credential_id, _code(secret, NOW, 1), NOW)
    with transaction(services.sessions) as db:
        stored = db.get_one(TotpCredential, credential_id).last_used_step
    assert stored == totp.time_step(NOW) + 1


def test_wrong_and_malformed_codes_are_refused_without_spending_a_step(
    services: Services,
) -> None:
    _, credential_id, secret = _enrolled(services)
    right = _code(secret, NOW)
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"
    for bad in [wrong, right[:5], right + "0", "abcdef", "", right.replace(right[0], "x", 1)]:
        assert not _verify(services, credential_id, bad, NOW)
    assert _verify(services, credential_id, f"{right[:3]} {right[3:]}", NOW)


def test_code_from_another_accounts_seed_is_refused(services: Services) -> None:
    _, credential_a, _ = _enrolled(services)
    _, _, secret_b = _enrolled(services)
    assert not _verify(services, credential_a, _code(secret_b, NOW), NOW)


def test_racing_requests_on_separate_engines_accept_a_code_once(database_url: str) -> None:
    """Eight "processes" (own engine and connection each) submit the same code at once."""
    from idp.app import build_services
    from idp.settings import Settings

    base = build_services(Settings(database_url=database_url))
    _, credential_id, secret = _enrolled(base)
    code = _code(secret, NOW)
    racers = 8
    barrier = threading.Barrier(racers)
    results: list[bool] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def attempt() -> None:
        engine = make_engine(database_url)
        factory = make_session_factory(engine)
        try:
            # Meet before opening a transaction: SQLite may take its write lock at BEGIN,
            # and a thread holding it at the barrier would keep the others from arriving.
            barrier.wait(timeout=30)
            with transaction(factory) as db:
                credential = db.get_one(TotpCredential, credential_id)
                ok = totp.verify_code(
                    db, credential=credential, code=code, encryptor=base.encryptor, now=NOW
                )
            with lock:
                results.append(ok)
        except BaseException as exc:  # reported below; a thread must not swallow it
            with lock:
                errors.append(exc)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=attempt) for _ in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    base.engine.dispose()
    assert errors == []
    assert sorted(results) == [False] * (racers - 1) + [True]


# --- enrolment -----------------------------------------------------------------------------


def test_confirm_enrolment_with_a_wrong_code_stores_nothing(services: Services) -> None:
    secret = totp.new_secret()
    with transaction(services.sessions) as db:
        account = make_account(db)
        right = _code(secret, NOW)
        wrong = f"{(int(right) + 1) % 1_000_000:06d}"
        assert (
            totp.confirm_enrolment(
                db,
                account_id=account.id,
                secret=secret,
                code=wrong,
                encryptor=services.encryptor,
                now=NOW,
            )
            is None
        )
        assert totp.credential_for(db, account_id=account.id) is None


def test_confirm_enrolment_stores_the_encrypted_seed_and_spends_the_code(
    services: Services,
) -> None:
    secret = totp.new_secret()
    code = _code(secret, NOW)
    with transaction(services.sessions) as db:
        account = make_account(db)
        account_id = account.id
        credential = totp.confirm_enrolment(
            db,
            account_id=account_id,
            secret=secret,
            code=code,
            encryptor=services.encryptor,
            now=NOW,
        )
        assert credential is not None
        credential_id = credential.id
        assert credential.last_used_step == totp.time_step(NOW)
        assert secret not in credential.secret_encrypted
    with transaction(services.sessions) as db:
        stored = totp.credential_for(db, account_id=account_id)
        assert stored is not None
        assert (
            totp.decrypt_secret(services.encryptor, stored.secret_encrypted, account_id=account_id)
            == secret
        )
        events = db.scalars(select(AuditEvent.event).where(AuditEvent.account_id == account_id))
        assert "mfa.enrolled" in list(events)
    # The confirming code cannot be used again to sign in.
    assert not _verify(services, credential_id, code, NOW)
    assert _verify(services, credential_id, _code(secret, NOW, 1), NOW)


def test_confirm_enrolment_refuses_a_second_authenticator(services: Services) -> None:
    account_id, _, _ = _enrolled(services)
    other = totp.new_secret()
    with transaction(services.sessions) as db, pytest.raises(totp.AlreadyEnrolled):
        totp.confirm_enrolment(
            db,
            account_id=account_id,
            secret=other,
            code=_code(other, NOW),
            encryptor=services.encryptor,
            now=NOW,
        )


def test_racing_enrolments_keep_one_authenticator_and_the_losers_transaction(
    database_url: str,
) -> None:
    """Two tabs confirm different seeds at once: one wins, the other gets AlreadyEnrolled,
    and the loser's other writes in the same transaction survive (savepoint)."""
    from idp.app import build_services
    from idp.settings import Settings

    base = build_services(Settings(database_url=database_url))
    with transaction(base.sessions) as db:
        account_id = make_account(db).id
    barrier = threading.Barrier(2)
    outcomes: list[str] = []
    lock = threading.Lock()

    def attempt(tag: str) -> None:
        secret = totp.new_secret()
        engine = make_engine(database_url)
        try:
            # Meet before opening a transaction: SQLite has one writer at a time (and may
            # take the lock at BEGIN), so a thread waiting here must not hold it.
            barrier.wait(timeout=30)
            with transaction(make_session_factory(engine)) as db:
                db.add(AuditEvent(event=f"test.before.{tag}", account_id=account_id))
                db.flush()
                try:
                    totp.confirm_enrolment(
                        db,
                        account_id=account_id,
                        secret=secret,
                        code=_code(secret, NOW),
                        encryptor=base.encryptor,
                        now=NOW,
                    )
                    outcome = "enrolled"
                except totp.AlreadyEnrolled:
                    outcome = "already"
                db.add(AuditEvent(event=f"test.after.{tag}", account_id=account_id))
            with lock:
                outcomes.append(outcome)
        except BaseException as exc:
            with lock:
                outcomes.append(f"error {exc!r}")
        finally:
            engine.dispose()

    threads = [threading.Thread(target=attempt, args=(tag,)) for tag in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)
    with transaction(base.sessions) as db:
        credentials = db.scalar(
            select(func.count())
            .select_from(TotpCredential)
            .where(TotpCredential.account_id == account_id)
        )
        before, after = (
            db.scalar(
                select(func.count())
                .select_from(AuditEvent)
                .where(AuditEvent.event.like(f"test.{when}.%"))
            )
            for when in ("before", "after")
        )
    base.engine.dispose()
    assert sorted(outcomes) == ["already", "enrolled"]
    assert credentials == 1
    assert (before, after) == (2, 2)


# --- support reset -------------------------------------------------------------------------


def test_reset_mfa_removes_the_authenticator_and_ends_sessions_and_tokens(
    services: Services,
) -> None:
    from idp.accounts import sessions

    account_id, _, _ = _enrolled(services)
    with transaction(services.sessions) as db:
        account = db.get_one(Account, account_id)
        grant = make_grant_with_refresh_token(db, account=account, now=NOW)
        _, cookie = sessions.start_session(
            db,
            account_id=account_id,
            auth_time=NOW,
            amr=["pwd", "otp", "mfa"],
            acr="https://refeds.org/profile/mfa",
            settings=services.settings,
            now=NOW,
        )
        # A sign-in half-way through: password given, code page pending.
        pending = LoginTransaction(
            id_hash=token_digest(new_token()),
            client_id=grant.client_id,
            params={},
            csrf_token=new_token(),
            account_id=account_id,
            stage="mfa",
            amr=["pwd"],
            expires_at=NOW + dt.timedelta(minutes=15),
        )
        db.add(pending)
        later = NOW + dt.timedelta(minutes=5)
        assert totp.reset_mfa(
            db, account=account, actor_id="support-1", reason="lost phone", now=later
        )
        grant_id, pending_id = grant.id, pending.id_hash
    with transaction(services.sessions) as db:
        assert totp.credential_for(db, account_id=account_id) is None
        assert (
            sessions.current_session(db, cookie_value=cookie, settings=services.settings, now=later)
            is None
        )
        live_sessions = db.scalar(
            select(func.count())
            .select_from(BrowserSession)
            .where(BrowserSession.account_id == account_id, BrowserSession.ended_at.is_(None))
        )
        assert live_sessions == 0
        assert db.get_one(Grant, grant_id).revoked_at == later
        assert db.get_one(LoginTransaction, pending_id).expires_at == later
        tokens = db.scalars(select(RefreshToken).where(RefreshToken.grant_id == grant_id)).all()
        assert tokens
        assert all(t.revoked_at == later for t in tokens)
        event = db.scalars(
            select(AuditEvent).where(
                AuditEvent.account_id == account_id, AuditEvent.event == "mfa.reset"
            )
        ).one()
        assert event.actor_id == "support-1"
        assert event.detail["reason"] == "lost phone"
        assert event.detail["removed"] is True
        assert event.detail["sessions_ended"] == 1
        assert event.detail["refresh_tokens_revoked"] == 1
        assert event.detail["sign_ins_expired"] == 1


def test_reset_mfa_without_an_authenticator_returns_false(services: Services) -> None:
    with transaction(services.sessions) as db:
        account = make_account(db)
        assert not totp.reset_mfa(db, account=account, actor_id=None, reason="check", now=NOW)


def test_reset_mfa_needs_a_reason(services: Services) -> None:
    account_id, _, _ = _enrolled(services)
    with transaction(services.sessions) as db:
        account = db.get_one(Account, account_id)
        with pytest.raises(ValueError, match="reason"):
            totp.reset_mfa(db, account=account, actor_id=None, reason="  ", now=NOW)
    with transaction(services.sessions) as db:
        assert totp.credential_for(db, account_id=account_id) is not None
