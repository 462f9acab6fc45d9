"""Which form targets may enter the Content-Security-Policy, and the CSRF token checks."""

from __future__ import annotations

import pytest

from idp.web.csrf import csrf_valid, new_csrf_token
from idp.web.security import csp_source_for


@pytest.mark.parametrize(
    ("uri", "source"),
    [
        ("https://rp.example/cb", "https://rp.example"),
        ("https://RP.Example:8443/cb?a=b#c", "https://rp.example:8443"),
        ("http://127.0.0.1:5000/callback", "http://127.0.0.1:5000"),
        ("http://[::1]:5000/callback", "http://[::1]:5000"),
        ("com.example.app:/oauth2redirect", "com.example.app:"),
    ],
)
def test_redirect_uris_become_origins(uri: str, source: str) -> None:
    assert csp_source_for(uri) == source


@pytest.mark.parametrize(
    "uri",
    [
        "https://rp.example;script-src 'unsafe-inline'/cb",
        "https://rp.example 'unsafe-inline'/cb",
        "https://user:pw@rp.example/cb",
        "https:///cb",
        "/relative/cb",
        "",
        "javascript:alert(1)",
    ],
)
def test_anything_else_is_refused(uri: str) -> None:
    if uri.startswith("javascript:"):
        # A scheme source is syntactically fine; redirect URI registration refuses it.
        assert csp_source_for(uri) == "javascript:"
        return
    with pytest.raises(ValueError, match="form-action"):
        csp_source_for(uri)


def test_csrf_tokens_are_fresh_and_long() -> None:
    tokens = {new_csrf_token() for _ in range(100)}
    assert len(tokens) == 100
    assert all(len(token) >= 43 for token in tokens)


def test_csrf_valid_accepts_only_the_same_token() -> None:
    token = new_csrf_token()
    assert csrf_valid(token, token)
    assert not csrf_valid(token, new_csrf_token())
    assert not csrf_valid(token, token[:-1])
    assert not csrf_valid(token, None)
    assert not csrf_valid(token, "")
    assert not csrf_valid(None, token)
    assert not csrf_valid("", "")
    assert not csrf_valid(None, None)
    assert not csrf_valid(token, "é" + token)
    assert not csrf_valid(token, token + "x" * 1000)
