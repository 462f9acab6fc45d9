"""Account administration on real databases (SQLite and PostgreSQL): unique email
addresses under races, password policy, disabling, email changes and the audit trail."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from idp.accounts.emails import InvalidEmail
from idp.accounts.passwords import PasswordRejected, verify_password
from idp.admin import users
from idp.admin.users import AccountNotFound, EmailTaken
from idp.app import Services
from idp.models import (
    Account,
    AuditEvent,
    BrowserSession,
    Client,
    GlobalRole,
    Grant,
    LoginTransaction,
    Organisation,
    OrgRole,
    RefreshToken,
    utcnow,
)

PASSWORD = "violet tractor anchors the moon"


@pytest.fixture
def sessions(services: Services) -> sessionmaker[Session]:
    return services.sessions


@pytest.fixture
def db(sessions: sessionmaker[Session]) -> Iterator[Session]:
    with sessions() as session, session.begin():
        yield session


def _count(sessions: sessionmaker[Session], model: type[object]) -> int:
    with sessions() as s:
        return len(s.scalars(select(model)).all())


def _events(sessions: sessionmaker[Session], event: str) -> list[AuditEvent]:
    with sessions() as s:
        return list(s.scalars(select(AuditEvent).where(AuditEvent.event == event)))


# --- create ------------------------------------------------------------------------------


def test_create_account_stores_display_key_and_argon2_hash(
    sessions: sessionmaker[Session],
) -> None:
    with sessions() as s, s.begin():
        account = users.create_account(
            s, email="  Alice@Example.COM ", password=PASSWORD, name=" Alice ", actor_id="admin-1"
        )
        account_id = account.id
    with sessions() as s:
        stored = s.get(Account, account_id)
        assert stored is not None
        assert (stored.email, stored.email_key) == ("Alice@Example.COM", "alice@example.com")
        assert stored.name == "Alice"
        assert stored.email_verified is False
        assert stored.password_hash is not None
        assert stored.password_hash.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
        assert verify_password(stored.password_hash, PASSWORD)
    [event] = _events(sessions, "account.created")
    assert (event.account_id, event.actor_id) == (account_id, "admin-1")
    assert PASSWORD not in str(event.detail)
    assert "argon2" not in str(event.detail)


@pytest.mark.parametrize(
    "variant",
    [
        "alice@example.com",
        "ALICE@EXAMPLE.COM",
        "\uff41\uff4c\uff49\uff43\uff45\uff20\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45\uff0e\uff43\uff4f\uff4d",
        "\u3000Alice@example.com ",
    ],
)
def test_case_and_unicode_variants_are_taken(db: Session, variant: str) -> None:
    users.create_account(db, email="Alice@Example.COM", password=None)
    with pytest.raises(EmailTaken, match="already used by another account"):
        users.create_account(db, email=variant, password=None)


def test_special_case_folding_variants_are_taken(db: Session) -> None:
    users.create_account(db, email="ALİCE@example.com", password=None)
    with pytest.raises(EmailTaken):
        users.create_account(db, email="ali\u0307ce@example.com", password=None)
    users.create_account(db, email="Straße@example.de", password=None)
    with pytest.raises(EmailTaken):
        users.create_account(db, email="STRASSE@EXAMPLE.DE", password=None)


def test_internationalised_domain_in_either_spelling_is_taken(db: Session) -> None:
    account = users.create_account(db, email="user@Bücher.example", password=None)
    assert account.email_key == "user@xn--bcher-kva.example"
    with pytest.raises(EmailTaken):
        users.create_account(db, email="USER@xn--bcher-kva.example", password=None)


def test_unique_index_refuses_a_duplicate_inserted_around_the_service(
    sessions: sessionmaker[Session],
) -> None:
    with sessions() as s, s.begin():
        users.create_account(s, email="bob@example.com", password=None)
    with pytest.raises(IntegrityError), sessions() as s, s.begin():
        s.add(Account(email="BOB@example.com", email_key="bob@example.com"))
    assert _count(sessions, Account) == 1


def test_invalid_email_and_rejected_password_create_nothing(
    sessions: sessionmaker[Session],
) -> None:
    with sessions() as s, s.begin():
        with pytest.raises(InvalidEmail, match="must contain an @"):
            users.create_account(s, email="not-an-address", password=PASSWORD)
        with pytest.raises(PasswordRejected) as caught:
            users.create_account(s, email="carol@example.com", password="password1")
        assert "too common" in caught.value.reason
        with pytest.raises(PasswordRejected, match="email address"):
            users.create_account(s, email="carol.long@example.com", password="Carol.Long")
    assert _count(sessions, Account) == 0


def test_the_caller_owns_the_transaction(sessions: sessionmaker[Session]) -> None:
    # The savepoint used to catch duplicates must not commit on its own (SQLite too).
    with sessions() as s:
        s.begin()
        users.create_account(s, email="dave@example.com", password=None, org="Dave's Org")
        s.rollback()
    assert _count(sessions, Account) == 0
    assert _count(sessions, Organisation) == 0


def test_the_callers_own_constraint_errors_are_not_called_email_taken(
    sessions: sessionmaker[Session],
) -> None:
    with sessions() as s, s.begin():
        s.add(Organisation(name="Dup"))
    with sessions() as s:
        s.begin()
        s.add(Organisation(name="Dup"))  # the caller's own mistake, still pending
        with pytest.raises(IntegrityError, match="name"):
            users.create_account(s, email="new@example.com", password=None)
        s.rollback()
    assert _count(sessions, Account) == 0


def test_a_bad_org_name_writes_nothing(sessions: sessionmaker[Session]) -> None:
    with sessions() as s, s.begin():
        with pytest.raises(ValueError, match="Organisation name is empty"):
            users.create_account(s, email="q@example.com", password=None, org="  ")
        assert s.scalars(select(Account)).all() == []


def test_org_is_created_once_and_joined_with_the_role(sessions: sessionmaker[Session]) -> None:
    with sessions() as s, s.begin():
        first = users.create_account(
            s,
            email="a1@example.com",
            password=None,
            org=" Pharmacy One ",
            org_role=OrgRole.ORG_ADMIN,
        )
        second = users.create_account(s, email="a2@example.com", password=None, org="Pharmacy One")
        assert [(m.organisation.name, m.role) for m in first.memberships] == [
            ("Pharmacy One", OrgRole.ORG_ADMIN)
        ]
        assert second.memberships[0].role == OrgRole.MEMBER
        assert first.memberships[0].organisation_id == second.memberships[0].organisation_id
    assert _count(sessions, Organisation) == 1


def test_global_role_is_stored(db: Session) -> None:
    account = users.create_account(
        db, email="root@example.com", password=None, global_role=GlobalRole.ADMIN
    )
    assert account.global_role == GlobalRole.ADMIN


# --- concurrency -------------------------------------------------------------------------


def _variants(n: int) -> list[str]:
    """`n` different spellings of one address: case patterns and fullwidth letters."""
    base = "alice.smith"
    out = []
    for i in range(n):
        local = "".join(ch.upper() if (i >> (pos % 8)) & 1 else ch for pos, ch in enumerate(base))
        domain = "Example.ORG" if i % 3 == 0 else "example.org"
        if i % 5 == 4:
            local = local.replace("a", "\uff41", 1)  # fullwidth a
        out.append(f"{local}@{domain}")
    assert len(set(out)) == n
    return out


def test_twenty_concurrent_creations_of_one_address_leave_one_account(
    sessions: sessionmaker[Session],
) -> None:
    variants = _variants(20)
    barrier = threading.Barrier(len(variants))
    created: list[str] = []
    taken: list[str] = []
    errors: list[BaseException] = []

    def create(email: str) -> None:
        try:
            barrier.wait(timeout=30)
            with sessions() as s, s.begin():
                users.create_account(s, email=email, password=None)
            created.append(email)
        except EmailTaken:
            taken.append(email)
        except BaseException as exc:  # surfaced below, never swallowed
            errors.append(exc)

    threads = [threading.Thread(target=create, args=(v,)) for v in variants]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    assert (len(created), len(taken)) == (1, 19)
    with sessions() as s:
        keys = s.scalars(select(Account.email_key)).all()
    assert keys == ["alice.smith@example.org"]


def test_race_past_the_lookup_is_caught_by_the_index_and_the_transaction_survives(
    sessions: sessionmaker[Session],
) -> None:
    first = sessions()
    first.begin()
    users.create_account(first, email="race@example.com", password=None)  # not committed
    outcome: dict[str, object] = {}

    def second() -> None:
        try:
            with sessions() as s, s.begin():
                try:
                    users.create_account(s, email="RACE@example.com", password=None)
                except EmailTaken as exc:
                    outcome["taken"] = exc
                # The savepoint kept this transaction usable.
                users.create_account(s, email="after-race@example.com", password=None)
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=second)
    thread.start()
    # The look-up cannot see the uncommitted row, so the insert waits on the index.
    thread.join(timeout=1.0)
    assert thread.is_alive()
    first.commit()
    first.close()
    thread.join(timeout=30)
    assert "error" not in outcome, outcome.get("error")
    assert isinstance(outcome.get("taken"), EmailTaken)
    with sessions() as s:
        assert sorted(s.scalars(select(Account.email_key))) == [
            "after-race@example.com",
            "race@example.com",
        ]


# --- look-ups ----------------------------------------------------------------------------


def test_find_by_email_in_any_form_and_invalid_input_is_none(db: Session) -> None:
    account = users.create_account(db, email="Erin@Example.com", password=None)
    assert users.find_by_email(db, email=" ERIN@example.COM ") is account
    assert users.find_by_email(db, email="\uff45rin@example.com") is account
    assert users.find_by_email(db, email="nobody@example.com") is None
    assert users.find_by_email(db, email="not an address") is None
    assert users.find_by_email(db, email="") is None


def test_get_and_require_account(db: Session) -> None:
    account = users.create_account(db, email="frank@example.com", password=None)
    assert users.get_account(db, account_id=account.id) is account
    assert users.get_account(db, account_id="no-such-id") is None
    assert users.require_account(db, account_id=account.id) is account
    with pytest.raises(AccountNotFound, match="no-such-id"):
        users.require_account(db, account_id="no-such-id")


def test_list_accounts_by_org_with_paging(sessions: sessionmaker[Session]) -> None:
    with sessions() as s, s.begin():
        for i in range(5):
            users.create_account(
                s, email=f"p{i}@example.com", password=None, org="North" if i % 2 else "South"
            )
    with sessions() as s:
        everyone = users.list_accounts(s)
        assert [a.email for a in everyone] == [f"p{i}@example.com" for i in range(5)]
        north = users.list_accounts(s, org="North")
        assert [a.email for a in north] == ["p1@example.com", "p3@example.com"]
        assert north[0].memberships[0].organisation.name == "North"
        assert [a.email for a in users.list_accounts(s, limit=2, offset=1)] == [
            "p1@example.com",
            "p2@example.com",
        ]
        assert users.list_accounts(s, org="Nowhere") == []
        with pytest.raises(ValueError, match="limit"):
            users.list_accounts(s, limit=0)
        with pytest.raises(ValueError, match="offset"):
            users.list_accounts(s, offset=-1)


# --- disable -----------------------------------------------------------------------------


def _signed_in_everywhere(s: Session, account: Account, client_id: str, tag: str) -> None:
    now = utcnow()
    later = now + dt.timedelta(hours=1)
    s.add(
        BrowserSession(
            id_hash=f"{tag}-session",
            sid=f"{tag}-sid",
            account_id=account.id,
            auth_time=now,
            acr="aal2",
            expires_at=later,
        )
    )
    grant = Grant(
        client_id=client_id,
        account_id=account.id,
        scope="openid",
        auth_time=now,
        acr="aal2",
        expires_at=later,
    )
    s.add(grant)
    s.flush()
    s.add(
        LoginTransaction(
            id_hash=f"{tag}-tx",
            client_id=client_id,
            params={},
            csrf_token="csrf",
            account_id=account.id,
            stage="mfa",
            expires_at=later,
        )
    )
    s.add(
        RefreshToken(
            token_hash=f"{tag}-refresh",
            grant_id=grant.id,
            client_id=client_id,
            scope="openid",
            expires_at=later,
        )
    )
    s.flush()


def test_disable_ends_sessions_and_revokes_grants_and_refresh_tokens(
    sessions: sessionmaker[Session],
) -> None:
    with sessions() as s, s.begin():
        s.add(Client(client_id="app", name="App"))
        target = users.create_account(s, email="gina@example.com", password=None)
        bystander = users.create_account(s, email="hal@example.com", password=None)
        _signed_in_everywhere(s, target, "app", "gina")
        _signed_in_everywhere(s, bystander, "app", "hal")
        target_id = target.id
    when = (utcnow() + dt.timedelta(minutes=5)).replace(microsecond=0)
    with sessions() as s, s.begin():
        account = users.require_account(s, account_id=target_id)
        users.disable_account(s, account=account, actor_id="support-1", now=when)
    with sessions() as s:
        account = users.require_account(s, account_id=target_id)
        assert account.disabled
        assert account.disabled_at == when
        ended = {b.sid: b.ended_at for b in s.scalars(select(BrowserSession))}
        assert ended == {"gina-sid": when, "hal-sid": None}
        grants = {g.account_id: g.revoked_at for g in s.scalars(select(Grant))}
        assert grants[target_id] == when
        assert [v for k, v in grants.items() if k != target_id] == [None]
        tokens = {t.token_hash: t.revoked_at for t in s.scalars(select(RefreshToken))}
        assert tokens == {"gina-refresh": when, "hal-refresh": None}
        expiries = {t.id_hash: t.expires_at for t in s.scalars(select(LoginTransaction))}
        assert expiries["gina-tx"] == when
        assert expiries["hal-tx"] > utcnow()
    [event] = _events(sessions, "account.disabled")
    assert event.actor_id == "support-1"
    assert event.detail == {
        "sessions_ended": 1,
        "grants_revoked": 1,
        "refresh_tokens_revoked": 1,
        "login_transactions_ended": 1,
    }


def test_enable_lets_the_account_back_but_keeps_old_sessions_ended(db: Session) -> None:
    account = users.create_account(db, email="ivy@example.com", password=None)
    users.disable_account(db, account=account)
    users.enable_account(db, account=account)
    assert not account.disabled


# --- email and password changes ----------------------------------------------------------


def test_change_email_clears_legacy_and_verification(sessions: sessionmaker[Session]) -> None:
    with sessions() as s, s.begin():
        legacy = Account(legacy_email="shared@pharmacy.example", email_verified=True)
        s.add(legacy)
        s.flush()
        users.change_email(s, account=legacy, new_email="Jo@Pharmacy.example", actor_id="a-1")
        legacy_id = legacy.id
    with sessions() as s:
        stored = users.require_account(s, account_id=legacy_id)
        assert (stored.email, stored.email_key) == ("Jo@Pharmacy.example", "jo@pharmacy.example")
        assert stored.legacy_email is None
        assert stored.email_verified is False
    [event] = _events(sessions, "account.email_changed")
    assert event.detail == {"old_email": None, "new_email": "Jo@Pharmacy.example"}


def test_change_email_to_a_case_variant_of_its_own_keeps_verification(db: Session) -> None:
    account = users.create_account(db, email="kim@example.com", password=None)
    account.email_verified = True
    users.change_email(db, account=account, new_email="Kim@Example.com")
    assert (account.email, account.email_verified) == ("Kim@Example.com", True)


def test_change_email_to_another_accounts_address_is_refused_and_harmless(
    sessions: sessionmaker[Session],
) -> None:
    with sessions() as s, s.begin():
        users.create_account(s, email="lee@example.com", password=None)
        mover = users.create_account(s, email="max@example.com", password=None)
        with pytest.raises(EmailTaken):
            users.change_email(s, account=mover, new_email="LEE@example.com")
        assert mover.email == "max@example.com"
        mover_id = mover.id
    with sessions() as s:
        assert users.require_account(s, account_id=mover_id).email_key == "max@example.com"
        with pytest.raises(InvalidEmail):
            users.change_email(
                s, account=users.require_account(s, account_id=mover_id), new_email="x@y"
            )


def test_change_email_race_is_caught_by_the_index(sessions: sessionmaker[Session]) -> None:
    with sessions() as s, s.begin():
        mover_id = users.create_account(s, email="ned@example.com", password=None).id
    first = sessions()
    first.begin()
    users.create_account(first, email="oz@example.com", password=None)  # not committed
    outcome: dict[str, object] = {}

    def move() -> None:
        try:
            with sessions() as s, s.begin():
                mover = users.require_account(s, account_id=mover_id)
                try:
                    users.change_email(s, account=mover, new_email="OZ@example.com")
                except EmailTaken as exc:
                    outcome["taken"] = exc
                # The old values are back, so committing does not retry the change.
                outcome["email_key"] = mover.email_key
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=move)
    thread.start()
    thread.join(timeout=1.0)
    assert thread.is_alive()  # waiting on the unique index
    first.commit()
    first.close()
    thread.join(timeout=30)
    assert "error" not in outcome, outcome.get("error")
    assert isinstance(outcome.get("taken"), EmailTaken)
    assert outcome["email_key"] == "ned@example.com"
    with sessions() as s:
        assert users.require_account(s, account_id=mover_id).email == "ned@example.com"


def test_set_password_applies_the_policy_and_audits_without_secrets(
    sessions: sessionmaker[Session],
) -> None:
    with sessions() as s, s.begin():
        account = users.create_account(s, email="pat@example.com", password=PASSWORD)
        old_hash = account.password_hash
        with pytest.raises(PasswordRejected, match="at least 8"):
            users.set_password(s, account=account, password="short")
        assert account.password_hash == old_hash
        users.set_password(s, account=account, password="a new long passphrase", actor_id="x")
        assert account.password_hash != old_hash
        assert account.password_hash is not None
        assert verify_password(account.password_hash, "a new long passphrase")
    [event] = _events(sessions, "account.password_set")
    assert event.detail == {}
