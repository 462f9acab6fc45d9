"""What commands print: one JSON object with `--json`, short human text otherwise."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from idp.models import Account, Client

JSON_HELP = "Print one JSON object instead of text."


def _default(value: object) -> str:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return str(value)


def emit(data: Mapping[str, Any], *, as_json: bool, text: str) -> None:
    """Print `data` as one JSON object, or `text` for a person."""
    if as_json:
        typer.echo(json.dumps(data, default=_default, ensure_ascii=False))
    else:
        typer.echo(text)


def account_data(account: Account) -> dict[str, Any]:
    """An account as printed by `idp users ...` (never its password hash)."""
    return {
        "id": account.id,
        "email": account.email,
        "legacy_email": account.legacy_email,
        "name": account.name,
        "email_verified": account.email_verified,
        "global_role": account.global_role.value if account.global_role else None,
        "disabled": account.disabled,
        "created_at": account.created_at,
        "organisations": [
            {"name": m.organisation.name, "role": m.role.value} for m in account.memberships
        ],
    }


def account_text(account: Account) -> str:
    """One line per fact, for `idp users show`."""
    data = account_data(account)
    orgs = ", ".join(f"{o['name']} ({o['role']})" for o in data["organisations"]) or "-"
    lines = [
        f"id:             {data['id']}",
        f"email:          {data['email'] or '-'}",
        f"name:           {data['name'] or '-'}",
        f"global role:    {data['global_role'] or '-'}",
        f"organisations:  {orgs}",
        f"disabled:       {'yes' if data['disabled'] else 'no'}",
        f"created:        {data['created_at'].isoformat()}",
    ]
    if data["legacy_email"]:
        lines.insert(2, f"legacy email:   {data['legacy_email']} (shared; cannot sign in)")
    return "\n".join(lines)


def client_data(client: Client) -> dict[str, Any]:
    """A client's registration as printed by `idp clients ...` (never the secret hash)."""
    return {
        "client_id": client.client_id,
        "name": client.name,
        "service_name": client.service_name,
        "public": client.is_public,
        "first_party": client.first_party,
        "redirect_uris": list(client.redirect_uris),
        "post_logout_redirect_uris": list(client.post_logout_redirect_uris),
        "grant_types": list(client.grant_types),
        "token_endpoint_auth_method": client.token_endpoint_auth_method,
        "scope": client.scope,
        "id_token_signed_response_alg": client.id_token_signed_response_alg,
        "jwks": client.jwks,
        "created_at": client.created_at,
    }


def client_text(client: Client) -> str:
    """One line per fact, for `idp clients show`."""
    data = client_data(client)
    return "\n".join(
        [
            f"client_id:      {data['client_id']}",
            f"name:           {data['name']}",
            f"kind:           {'public' if data['public'] else 'confidential'}, "
            f"{'first' if data['first_party'] else 'third'} party",
            f"redirect URIs:  {' '.join(data['redirect_uris'])}",
            f"logout URIs:    {' '.join(data['post_logout_redirect_uris']) or '-'}",
            f"grant types:    {' '.join(data['grant_types'])}",
            f"auth method:    {data['token_endpoint_auth_method']}",
            f"scope:          {data['scope']}",
            f"ID token alg:   {data['id_token_signed_response_alg']}",
        ]
    )
