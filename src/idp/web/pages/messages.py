"""The error messages of the sign-in pages, by key, each saying how to fix the problem.

A POST stores a key on the login transaction (`LoginTransaction.error`) and answers 303;
the next GET shows the message once (POST-redirect-GET, issue 4 point 6). Keys are a fixed
vocabulary, so nothing a person typed is ever echoed back as a message. A key may carry
one argument after a colon, e.g. `throttled:5` (minutes).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Message:
    """One error: the sentence, and the id of the field it is about (the summary links it)."""

    text: str
    field: str | None = None


_MESSAGES: dict[str, Message] = {
    "email_missing": Message("Enter your email address", "email"),
    "password_missing": Message("Enter your password", "password"),
    # ASVS 6.3.8: the same words for an unknown address and a wrong password.
    "credentials": Message(
        "Enter a correct email address and password. Check both and try again.", "email"
    ),
    "legacy_email": Message(
        "Your account does not have an email address of its own yet. Ask your "
        "administrator to give your account a unique email address, then sign in with it.",
        "email",
    ),
    "disabled": Message(
        "Your account has been switched off. Ask your administrator to switch it back on.",
        "email",
    ),
    "code_missing": Message("Enter the 6-digit security code from your authenticator app", "code"),
    "code_format": Message("Enter the security code as 6 digits, like 123456", "code"),
    "code_wrong": Message(
        "The security code is not right or has been used already. Wait for your "
        "authenticator app to show a new code and enter that.",
        "code",
    ),
    "setup_code_wrong": Message(
        "The security code is not right. Check that you added the key shown on this page "
        "(not an older one), wait for a new code and enter it.",
        "code",
    ),
    "already_enrolled": Message(
        "An authenticator app was set up for your account in another window. Enter a "
        "security code from that app.",
        "code",
    ),
    "authenticator_removed": Message(
        "Your authenticator app was removed from your account. Set up an app again below.",
        "code",
    ),
    # NIST 800-63B 5.2.2: after 100 consecutive failures only support can clear the block.
    "locked": Message(
        "Too many attempts. This account cannot sign in until support clears it: contact "
        "support (details at the bottom of this page)."
    ),
    "too_large": Message("What you entered is too long. Check it and try again."),
    "malformed": Message("Something went wrong with the form. Enter your details again."),
    "csrf": Message(
        "This page had expired, so nothing was sent. Enter your details again on this page."
    ),
    "decision_missing": Message("Choose whether to allow or cancel"),
}


def throttled_text(minutes: int) -> str:
    """The refusal shown while a failure budget is exhausted (NIST 800-63B 5.2.2)."""
    unit = "minute" if minutes == 1 else "minutes"
    return f"Too many attempts. Try again in {minutes} {unit}."


def lookup(key: str | None) -> Message | None:
    """The message for a stored key, or None for no or an unknown key."""
    if not key:
        return None
    name, _, arg = key.partition(":")
    if name == "throttled":
        return Message(throttled_text(int(arg) if arg.isdigit() else 1))
    return _MESSAGES.get(name)


def summary(key: str | None) -> list[dict[str, str]]:
    """The `errors` list the templates' error summary takes (`text`, `href`)."""
    message = lookup(key)
    if message is None:
        return []
    return [
        {"text": message.text, "href": f"#{message.field}" if message.field else "#maincontent"}
    ]
