"""The hosted sign-in pages: email and password, authenticator setup, security code,
consent. They complete a login transaction and hand back to `/authorize/resume`
(docs/login-transaction.md); they never build protocol responses themselves."""

from __future__ import annotations

from fastapi import APIRouter

from idp.web.pages import consent, mfa, signin

router = APIRouter(include_in_schema=False)
router.include_router(signin.router)
router.include_router(mfa.router)
router.include_router(consent.router)
