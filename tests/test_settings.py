"""Settings: development defaults work; production refuses unsafe values, naming the setting."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from pydantic import ValidationError

from idp.settings import DEV_ENCRYPTION_KEYS, Settings

# Fixed, not random: pytest-xdist workers must collect identical parameter ids.
REAL_KEY = "k1:" + base64.urlsafe_b64encode(bytes(range(32))).decode().rstrip("=")
SAFE_PRODUCTION: dict[str, Any] = {
    "env": "production",
    "issuer": "https://login.pharmoutcomes.org",
    "encryption_keys": REAL_KEY,
}


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sees only the IDP_ variables it sets itself."""
    import os

    for name in list(os.environ):
        if name.startswith("IDP_"):
            monkeypatch.delenv(name)


def refusal(**values: Any) -> str:
    with pytest.raises(ValidationError) as caught:
        Settings(**values)
    return str(caught.value)


def test_development_defaults_work() -> None:
    settings = Settings()
    assert settings.env == "development"
    assert settings.issuer == "http://127.0.0.1:8000"
    assert settings.database_url.startswith("sqlite:///")
    assert list(settings.encryption_keyring) == ["dev"]
    assert settings.secure_cookies is False


def test_a_safe_production_configuration_is_accepted() -> None:
    settings = Settings(**SAFE_PRODUCTION)
    assert settings.secure_cookies is True
    assert list(settings.encryption_keyring) == ["k1"]


def test_environment_variables_are_read_with_the_idp_prefix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("IDP_ENV", "production")
    monkeypatch.setenv("IDP_ISSUER", "https://login.example.org")
    monkeypatch.setenv("IDP_ENCRYPTION_KEYS", REAL_KEY)
    monkeypatch.setenv("IDP_MFA_REQUIRED_FROM", "2025-01-31")
    settings = Settings()
    assert settings.env == "production"
    assert settings.mfa_required_from.isoformat() == "2025-01-31"


def test_production_refuses_an_http_issuer() -> None:
    message = refusal(**{**SAFE_PRODUCTION, "issuer": "http://login.pharmoutcomes.org"})
    assert "IDP_ISSUER" in message
    assert "https" in message


def test_production_refuses_a_missing_encryption_key(monkeypatch: pytest.MonkeyPatch) -> None:
    # Unset means the development default, which production must not accept.
    values = {k: v for k, v in SAFE_PRODUCTION.items() if k != "encryption_keys"}
    assert "IDP_ENCRYPTION_KEYS" in refusal(**values)
    monkeypatch.setenv("IDP_ENCRYPTION_KEYS", "")
    assert "IDP_ENCRYPTION_KEYS" in refusal(**values)


def test_production_refuses_the_placeholder_key_even_beside_a_real_one() -> None:
    assert "IDP_ENCRYPTION_KEYS" in refusal(
        **{**SAFE_PRODUCTION, "encryption_keys": DEV_ENCRYPTION_KEYS}
    )
    assert "IDP_ENCRYPTION_KEYS" in refusal(
        **{**SAFE_PRODUCTION, "encryption_keys": f"{REAL_KEY},{DEV_ENCRYPTION_KEYS}"}
    )


def test_production_refuses_debug_logging() -> None:
    assert "IDP_LOG_LEVEL" in refusal(**{**SAFE_PRODUCTION, "log_level": "debug"})


def test_development_allows_what_production_refuses() -> None:
    settings = Settings(issuer="http://localhost:8000", log_level="debug")
    assert settings.log_level == "debug"


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ("k1", "kid:base64url-key"),
        (":" + REAL_KEY.split(":")[1], "kid:base64url-key"),
        ("k1:not*base64!", "k1"),
        ("k1:" + base64.urlsafe_b64encode(b"short").decode(), "32 bytes"),
        (f"{REAL_KEY},{REAL_KEY}", "twice"),
        (",", "at least one key"),
    ],
)
def test_malformed_encryption_keys_are_rejected(keys: str, expected: str) -> None:
    message = refusal(encryption_keys=keys)
    assert "IDP_ENCRYPTION_KEYS" in message
    assert expected in message


def test_issuer_with_a_trailing_slash_is_rejected() -> None:
    assert "IDP_ISSUER" in refusal(issuer="https://login.example.org/")


def test_out_of_range_lifetimes_are_rejected() -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(authorization_code_seconds=600)
    assert caught.value.errors()[0]["loc"] == ("authorization_code_seconds",)
    assert "IDP_SESSION_ABSOLUTE_SECONDS" in refusal(
        session_idle_seconds=3600, session_absolute_seconds=1800
    )
