"""Organisations and the policy on who may change whose email address."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from idp.admin import users
from idp.admin.orgs import InvalidOrganisation, can_change_email, find_org, get_or_create_org
from idp.app import Services
from idp.models import Account, GlobalRole, Organisation, OrgRole, utcnow


@pytest.fixture
def db(services: Services) -> Iterator[Session]:
    sessions: sessionmaker[Session] = services.sessions
    with sessions() as session, session.begin():
        yield session


def test_get_or_create_org_trims_and_reuses(db: Session) -> None:
    first = get_or_create_org(db, name="  Boots Leeds ")
    again = get_or_create_org(db, name="Boots Leeds")
    assert first is again
    assert first.name == "Boots Leeds"
    assert find_org(db, name="Boots Leeds ") is first
    assert find_org(db, name="Elsewhere") is None
    assert len(db.scalars(select(Organisation)).all()) == 1
    with pytest.raises(InvalidOrganisation, match="empty"):
        get_or_create_org(db, name="   ")
    with pytest.raises(InvalidOrganisation, match="too long"):
        get_or_create_org(db, name="o" * 201)


def _people(db: Session) -> dict[str, Account]:
    def make(tag: str, org: str | None = None, role: OrgRole = OrgRole.MEMBER) -> Account:
        return users.create_account(
            db, email=f"{tag}@example.com", password=None, org=org, org_role=role
        )

    people = {
        "admin_a": make("admin_a", "A", OrgRole.ORG_ADMIN),
        "member_a": make("member_a", "A"),
        "other_member_a": make("other_member_a", "A"),
        "member_b": make("member_b", "B"),
        "admin_b": make("admin_b", "B", OrgRole.ORG_ADMIN),
        "support": make("support"),
        "root": make("root"),
        "support_in_a": make("support_in_a", "A"),
    }
    people["support"].global_role = GlobalRole.SUPPORT
    people["root"].global_role = GlobalRole.ADMIN
    people["support_in_a"].global_role = GlobalRole.SUPPORT
    db.flush()
    return people


def test_people_change_their_own_address(db: Session) -> None:
    p = _people(db)
    assert can_change_email(p["member_a"], p["member_a"])
    assert not can_change_email(p["member_a"], p["other_member_a"])


def test_org_admins_change_their_members_addresses_only(db: Session) -> None:
    p = _people(db)
    assert can_change_email(p["admin_a"], p["member_a"])
    assert not can_change_email(p["admin_a"], p["member_b"])
    assert not can_change_email(p["admin_b"], p["member_a"])
    # A member is not an administrator of their own organisation.
    assert not can_change_email(p["member_a"], p["admin_a"])


def test_global_roles_cannot_be_captured_by_lesser_roles(db: Session) -> None:
    p = _people(db)
    # support staff change ordinary accounts anywhere...
    assert can_change_email(p["support"], p["member_b"])
    # ...but not an administrator's, nor another support person's.
    assert not can_change_email(p["support"], p["root"])
    assert not can_change_email(p["support"], p["support_in_a"])
    # An org_admin cannot take over a support person who is a member of their org.
    assert not can_change_email(p["admin_a"], p["support_in_a"])
    # Administrators change anyone's.
    assert can_change_email(p["root"], p["support"])
    assert can_change_email(p["root"], p["member_b"])


def test_a_disabled_actor_can_change_nothing(db: Session) -> None:
    p = _people(db)
    p["root"].disabled_at = utcnow()
    assert not can_change_email(p["root"], p["member_a"])
    assert not can_change_email(p["root"], p["root"])
