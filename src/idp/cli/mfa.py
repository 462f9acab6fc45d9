"""`idp mfa ...`: support removes a person's authenticator app or clears their failure budgets.

Both are support actions taken after checking who is asking (the seed announcement: a
person who wants to switch authenticator asks support, who removes the old one). Each is
audited with the reason given (ASVS 16.3.1).
"""

from __future__ import annotations

from typing import Annotated

import typer
from sqlalchemy.orm import Session

from idp.accounts import audit, totp
from idp.accounts.throttle import KINDS, build_throttle
from idp.admin.users import find_by_email
from idp.cli.context import database, load_settings
from idp.cli.errors import CliError
from idp.cli.output import JSON_HELP, emit
from idp.models import Account, utcnow

app = typer.Typer(help="Manage authenticator apps and failed sign-in limits.", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help=JSON_HELP)]
EmailOpt = Annotated[str, typer.Option("--email", help="The account's email address.")]
ReasonOpt = Annotated[
    str, typer.Option("--reason", help="Why (kept in the audit trail), e.g. a ticket number.")
]


def _account(db: Session, email: str) -> Account:
    account = find_by_email(db, email=email)
    if account is None:
        raise CliError(f"no account has the email address {email!r}; see `idp users list`")
    return account


def _clear_budgets(db: Session, *, account_id: str, kinds: tuple[str, ...]) -> None:
    """Clear the account's failure counters wherever they are kept (Redis or database)."""
    throttle = build_throttle(redis_url=load_settings().redis_url, engine=db.get_bind().engine)
    try:
        throttle.reset_account(account_id=account_id, kinds=kinds)
    finally:
        dispose = getattr(throttle, "dispose", None)
        if dispose is not None:
            dispose()


@app.command("reset")
def reset(email: EmailOpt, reason: ReasonOpt, json_: JsonOpt = False) -> None:
    """Remove an account's authenticator app; a new one is set up at the next sign-in.

    Also ends the account's sessions and refresh tokens, and clears its failed-code count.
    """
    with database() as db:
        account = _account(db, email)
        removed = totp.reset_mfa(db, account=account, actor_id=None, reason=reason, now=utcnow())
        _clear_budgets(db, account_id=account.id, kinds=("code",))
        data = {"id": account.id, "email": account.email, "authenticator_removed": removed}
    text = (
        f"removed the authenticator of {data['email']}; they set up a new one at next sign-in"
        if removed
        else f"{data['email']} had no authenticator; sessions and tokens were ended anyway"
    )
    emit(data, as_json=json_, text=text)


@app.command("unblock")
def unblock(email: EmailOpt, reason: ReasonOpt, json_: JsonOpt = False) -> None:
    """Clear an account's failed password and code counts (after 100, only support can)."""
    reason = reason.strip()
    if not reason:
        raise CliError("give a --reason; it is kept in the audit trail")
    with database() as db:
        account = _account(db, email)
        _clear_budgets(db, account_id=account.id, kinds=KINDS)
        audit.record(db, "throttle.reset", account_id=account.id, reason=reason[:500])
        data = {"id": account.id, "email": account.email, "unblocked": True}
    emit(data, as_json=json_, text=f"cleared the failed sign-in counts of {data['email']}")
