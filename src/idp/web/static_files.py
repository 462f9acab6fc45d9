"""Serves `/static` with cache headers, and `static_url()` for cache-busting links.

`static_url("idp.css")` returns `/static/idp.css?v=<content hash>`. A request that carries
`v` may be cached for a year (`immutable`): a changed file gets a new hash, hence a new URL.
Requests without `v` are cached briefly, so hand-written links still pick up changes.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path
from urllib.parse import parse_qs

from fastapi import FastAPI
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC_DIR = Path(__file__).parent / "static"
STATIC_PREFIX = "/static"
VERSIONED_CACHE = "public, max-age=31536000, immutable"
UNVERSIONED_CACHE = "public, max-age=300"


@lru_cache(maxsize=256)
def static_url(path: str) -> str:
    """The URL of static file `path` (relative to `web/static/`) with its content hash."""
    file = (STATIC_DIR / path).resolve()
    if not file.is_relative_to(STATIC_DIR.resolve()) or not file.is_file():
        # A typo in a template should fail loudly in tests, not ship a broken link.
        raise FileNotFoundError(f"no static file {path!r} under {STATIC_DIR}")
    digest = hashlib.sha256(file.read_bytes()).hexdigest()[:12]
    return f"{STATIC_PREFIX}/{path}?v={digest}"


class CachedStaticFiles(StaticFiles):
    """StaticFiles that sets Cache-Control by whether the URL is versioned."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        """The file response, with long caching only for `?v=` URLs."""
        response = await super().get_response(path, scope)
        if response.status_code in (200, 304):
            versioned = "v" in parse_qs(scope.get("query_string", b"").decode("latin-1"))
            response.headers["Cache-Control"] = VERSIONED_CACHE if versioned else UNVERSIONED_CACHE
        return response


def mount(app: FastAPI) -> None:
    """Serve `web/static/` at `/static` on `app`."""
    app.mount(STATIC_PREFIX, CachedStaticFiles(directory=STATIC_DIR), name="static")
