"""`idp keys ...`: list the token signing keys and rotate them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Annotated, Any

import typer

from idp.cli.context import database, load_settings
from idp.cli.errors import CliError
from idp.cli.output import JSON_HELP, emit
from idp.crypto import Encryptor
from idp.models import SigningKey, utcnow
from idp.oauth.keys import (
    JWKS_MAX_AGE_SECONDS,
    SUPPORTED_ALGS,
    key_state,
    list_keys,
    retire_after_for,
    retire_key,
    rotate_keys,
    signing_choice,
)

app = typer.Typer(help="Manage token signing keys.", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help=JSON_HELP)]


def key_data(row: SigningKey, *, now: dt.datetime, signing: bool) -> dict[str, Any]:
    """A key as printed by `idp keys ...` (public facts only, never the private part)."""
    return {
        "kid": row.kid,
        "alg": row.alg,
        "state": key_state(row, now),
        "signing": signing,
        "created_at": row.created_at,
        "active_from": row.active_from,
        "retired_at": row.retired_at,
    }


def _table(rows: Sequence[SigningKey], now: dt.datetime) -> list[dict[str, Any]]:
    signing = {
        choice.kid
        for alg in SUPPORTED_ALGS
        if (choice := signing_choice(rows, alg, now)) is not None
    }
    return [key_data(row, now=now, signing=row.kid in signing) for row in rows]


def _line(data: dict[str, Any]) -> str:
    retired = data["retired_at"].isoformat() if data["retired_at"] else "-"
    mark = " (signing)" if data["signing"] else ""
    return (
        f"{data['alg']:<6} {data['kid']}  {data['state']}{mark}  "
        f"signs from {data['active_from'].isoformat()}  retires {retired}"
    )


@app.command("list")
def list_(json_: JsonOpt = False) -> None:
    """List every signing key with its state: pending, active, retiring or retired."""
    now = utcnow()
    with database() as db:
        keys = _table(list_keys(db), now)
    emit({"keys": keys}, as_json=json_, text="\n".join(map(_line, keys)) or "no keys yet")


@app.command("rotate")
def rotate(json_: JsonOpt = False) -> None:
    """Publish new RS256 and ES256 keys now; they sign after IDP_KEY_ACTIVATION_DELAY_SECONDS,
    and the old keys leave the JWKS once the tokens they signed have expired."""
    settings = load_settings()
    delay = dt.timedelta(seconds=settings.key_activation_delay_seconds)
    if delay < dt.timedelta(seconds=JWKS_MAX_AGE_SECONDS):
        # Not an error (an emergency rotation may want it), but relying parties holding a
        # cached JWKS will reject tokens signed by the new key until their cache expires.
        typer.echo(
            f"warning: IDP_KEY_ACTIVATION_DELAY_SECONDS={settings.key_activation_delay_seconds} "
            f"is shorter than the JWKS cache lifetime ({JWKS_MAX_AGE_SECONDS} s)",
            err=True,
        )
    now = utcnow()
    with database() as db:
        created = rotate_keys(
            db,
            encryptor=Encryptor(settings.encryption_keyring),
            now=now,
            activation_delay=delay,
            retire_after=retire_after_for(settings),
        )
        new_kids = {row.kid for row in created}
        keys = _table(list_keys(db), now)
    data = {
        "created": [key for key in keys if key["kid"] in new_kids],
        "keys": keys,
    }
    text = "\n".join(
        ["published new keys:", *(_line(k) for k in data["created"]), "all keys:"]
        + [_line(k) for k in keys]
    )
    emit(data, as_json=json_, text=text)


@app.command("retire")
def retire(
    kid: Annotated[str, typer.Option("--kid", help="The key's id (see `idp keys list`).")],
    json_: JsonOpt = False,
) -> None:
    """Withdraw a key from the JWKS now (suspected leak); run `idp keys rotate` first, so its
    successor is already published and takes over at once."""
    now = utcnow()
    with database() as db:
        try:
            row = retire_key(db, kid=kid, now=now)
        except LookupError as exc:
            raise CliError(f"{exc}; see `idp keys list`") from exc
        db.flush()
        keys = _table(list_keys(db), now)
        retired = next(key for key in keys if key["kid"] == row.kid)
        alone = not any(key["alg"] == row.alg and key["state"] != "retired" for key in keys)
    if alone:
        # Not refused: a leaked key must go even before a successor exists.
        typer.echo(
            f"warning: no other {row.alg} key is published; the provider creates one at its "
            "next signature, and relying parties see it only after refetching the JWKS",
            err=True,
        )
    emit(
        {"retired": retired, "keys": keys},
        as_json=json_,
        text="\n".join([f"retired {row.alg} key {row.kid}", "all keys:", *map(_line, keys)]),
    )
