"""Routes for the provider metadata (both well-known URIs) and the JWKS, served from
precomputed bytes."""

from __future__ import annotations

from fastapi import APIRouter, Response

from idp.oauth.keyring import get_keyring
from idp.oauth.keys import JWKS_MAX_AGE_SECONDS
from idp.oauth.metadata import (
    JWKS_PATH,
    OAUTH_SERVER_METADATA_PATH,
    OPENID_CONFIGURATION_PATH,
    discovery_bytes,
)
from idp.web.deps import ServicesDep, SettingsDep

router = APIRouter(tags=["discovery"])
# GET requests for these documents are answered in front of the app by
# `idp.web.fast_documents`, with the same headers; these routes remain the reference (and
# serve the JWKS while the keyring is not loaded yet).

#: The metadata changes only with a deployment.
DISCOVERY_CACHE_CONTROL = "public, max-age=3600"
#: A relying party may hold the JWKS this long. `IDP_KEY_ACTIVATION_DELAY_SECONDS` (default
#: 900 s) must stay above it: a rotated-in key is published at once but signs only after
#: the delay, so every cache that fetched the JWKS before the rotation has expired, and
#: refetched a JWKS holding the new key, before the first token signed with it appears.
#: (`idp keys rotate` warns when the delay is shorter.)
JWKS_CACHE_CONTROL = f"public, max-age={JWKS_MAX_AGE_SECONDS}"

PUBLIC_HEADERS = {
    # Public documents: browser-based relying parties may read them from any origin.
    "Access-Control-Allow-Origin": "*",
    "X-Content-Type-Options": "nosniff",
}


@router.get(OPENID_CONFIGURATION_PATH)
async def openid_configuration(settings: SettingsDep) -> Response:
    """OpenID Connect Discovery 1.0 section 4: the provider configuration."""
    return _json(discovery_bytes(settings), DISCOVERY_CACHE_CONTROL)


@router.get(OAUTH_SERVER_METADATA_PATH)
async def oauth_authorization_server(settings: SettingsDep) -> Response:
    """RFC 8414 section 3: the authorization server metadata (same document)."""
    return _json(discovery_bytes(settings), DISCOVERY_CACHE_CONTROL)


@router.get(JWKS_PATH)
def jwks(services: ServicesDep) -> Response:
    """RFC 7517 section 5: the public signing keys (sync: a periodic key re-check may
    touch the database, which must not block the event loop). GET requests are normally
    answered by `idp.web.fast_documents` before they reach this route."""
    return _json(get_keyring(services).jwks_bytes(), JWKS_CACHE_CONTROL)


def _json(body: bytes, cache_control: str) -> Response:
    return Response(
        content=body,
        media_type="application/json",
        headers={"Cache-Control": cache_control, **PUBLIC_HEADERS},
    )
