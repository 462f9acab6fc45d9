"""Organisations: look-up and creation, and who may manage whose email address.

Repository functions take the caller's `Session` as `db` and never commit: the caller
owns the transaction.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from idp.models import Account, GlobalRole, Organisation, OrgRole

MAX_ORG_NAME = 200


class InvalidOrganisation(ValueError):  # noqa: N818 (reads as the refusal it is)
    """An organisation name that cannot be used; the message says why."""


def clean_org_name(name: str) -> str:
    """The name with surrounding spaces trimmed; refuse empty or overlong names."""
    cleaned = name.strip()
    if not cleaned:
        raise InvalidOrganisation("Organisation name is empty.")
    if len(cleaned) > MAX_ORG_NAME:
        raise InvalidOrganisation(f"Organisation name is too long (at most {MAX_ORG_NAME}).")
    return cleaned


def find_org(db: Session, *, name: str) -> Organisation | None:
    """The organisation called exactly `name` (after trimming), or None."""
    return db.scalar(select(Organisation).where(Organisation.name == name.strip()))


def get_or_create_org(db: Session, *, name: str) -> Organisation:
    """The organisation called `name`, created if missing (safe against a concurrent create)."""
    cleaned = clean_org_name(name)
    existing = find_org(db, name=cleaned)
    if existing is not None:
        return existing
    org = Organisation(name=cleaned)
    try:
        with db.begin_nested():
            db.add(org)
            db.flush()
    except IntegrityError:
        # Another transaction created it between our look-up and insert: use theirs.
        found = find_org(db, name=cleaned)
        if found is None:
            raise
        return found
    return org


def is_org_admin_of(actor: Account, target: Account) -> bool:
    """True if `actor` is an org_admin of an organisation `target` belongs to."""
    administered = {m.organisation_id for m in actor.memberships if m.role == OrgRole.ORG_ADMIN}
    return any(m.organisation_id in administered for m in target.memberships)


def can_change_email(actor: Account, target: Account) -> bool:
    """May `actor` change `target`'s email address? (Policy, no side effects.)

    People change their own address; support staff and administrators change anyone's;
    an organisation's administrators change their members' addresses. Whoever controls an
    address can take over the account through it, so a holder of a global role can only
    be changed by themselves or an administrator: an org_admin or support person cannot
    capture a more powerful account.
    """
    if actor.disabled:
        return False
    if actor.id == target.id:
        return True
    if actor.global_role == GlobalRole.ADMIN:
        return True
    if target.global_role is not None:
        return False
    if actor.global_role == GlobalRole.SUPPORT:
        return True
    return is_org_admin_of(actor, target)
