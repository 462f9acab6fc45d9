"""`idp clients ...`: register relying-party apps, list, inspect and delete them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from idp.admin import clients as registry
from idp.cli.context import database
from idp.cli.errors import CliError
from idp.cli.output import JSON_HELP, client_data, client_text, emit

app = typer.Typer(help="Manage relying-party apps (OAuth clients).", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help=JSON_HELP)]
ClientIdOpt = Annotated[str, typer.Option("--client-id", metavar="ID", help="The client's id.")]


def read_jwks(path: Path) -> dict[str, Any]:
    """A JWKS document (`{"keys": [...]}`) from a file, for `private_key_jwt` clients."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CliError(f"cannot read --jwks-file {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise CliError(f"--jwks-file {path} is not JSON: {exc}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise CliError(f'--jwks-file {path} must hold a JWK Set: {{"keys": [...]}}')
    return document


@app.command("create")
def create(
    name: Annotated[str, typer.Option(metavar="NAME", help="Name shown to people signing in.")],
    redirect_uri: Annotated[
        list[str],
        typer.Option("--redirect-uri", metavar="URI", help="Exact redirect URI (repeatable)."),
    ],
    post_logout_redirect_uri: Annotated[
        list[str] | None,
        typer.Option(
            "--post-logout-redirect-uri", metavar="URI", help="Redirect after logout (repeatable)."
        ),
    ] = None,
    public: Annotated[
        bool, typer.Option("--public", help="A public client (no secret; PKCE only).")
    ] = False,
    grant_type: Annotated[
        list[str] | None,
        typer.Option("--grant-type", metavar="TYPE", help="Allowed grant type (repeatable)."),
    ] = None,
    token_endpoint_auth_method: Annotated[
        str | None,
        typer.Option(metavar="METHOD", help="How the client authenticates at the token endpoint."),
    ] = None,
    scope: Annotated[str, typer.Option(metavar="SCOPE", help="Scopes the client may ask for.")] = (
        "openid email profile"
    ),
    jwks_file: Annotated[
        Path | None, typer.Option(metavar="FILE", help="JWK Set file of the client's public keys.")
    ] = None,
    id_token_alg: Annotated[
        Literal["RS256", "ES256"], typer.Option(help="ID token signing algorithm.")
    ] = "RS256",  # noqa: S107 (an algorithm name, not a password)
    third_party: Annotated[
        bool, typer.Option("--third-party", help="Ask people for consent before sharing data.")
    ] = False,
    service_name: Annotated[
        str | None,
        typer.Option(metavar="NAME", help="Service the app belongs to (shown on pages)."),
    ] = None,
    client_id: Annotated[
        str | None, typer.Option(metavar="ID", help="Use this client id instead of a random one.")
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """Register an app; a confidential client's secret is printed this once only."""
    jwks = read_jwks(jwks_file) if jwks_file is not None else None
    with database() as db:
        client, secret = registry.create_client(
            db,
            name=name,
            redirect_uris=redirect_uri,
            post_logout_redirect_uris=post_logout_redirect_uri or (),
            public=public,
            grant_types=grant_type or None,
            token_endpoint_auth_method=token_endpoint_auth_method,
            scope=scope,
            jwks=jwks,
            id_token_signed_response_alg=id_token_alg,
            first_party=not third_party,
            service_name=service_name,
            client_id=client_id,
        )
        data = client_data(client)
    text = f"created client {data['client_id']}"
    if secret is not None:
        data["client_secret"] = secret
        text += f"\nclient_secret: {secret}\n(store it now: it is not shown again)"
    emit(data, as_json=json_, text=text)


@app.command("list")
def list_(json_: JsonOpt = False) -> None:
    """List registered clients."""
    with database() as db:
        rows = [client_data(c) for c in registry.list_clients(db)]
    lines = [f"{r['client_id']}  {r['name']}" for r in rows]
    emit({"clients": rows}, as_json=json_, text="\n".join(lines) or "no clients")


@app.command("show")
def show(client_id: ClientIdOpt, json_: JsonOpt = False) -> None:
    """Show one client's registration."""
    with database() as db:
        client = registry.get_client(db, client_id=client_id)
        if client is None:
            raise CliError(f"no client has the id {client_id!r}; see `idp clients list`")
        data, text = client_data(client), client_text(client)
    emit(data, as_json=json_, text=text)


@app.command("delete")
def delete(client_id: ClientIdOpt, json_: JsonOpt = False) -> None:
    """Delete a client; its grants and tokens stop working."""
    with database() as db:
        if registry.get_client(db, client_id=client_id) is None:
            raise CliError(f"no client has the id {client_id!r}; see `idp clients list`")
        registry.delete_client(db, client_id=client_id)
    emit({"deleted": client_id}, as_json=json_, text=f"deleted client {client_id}")
