"""Password policy, argon2id hashing, verification, rehash detection and the blocklist."""

from __future__ import annotations

import time
import unicodedata

import pytest
from argon2 import PasswordHasher, Type

from idp.accounts import passwords
from idp.accounts.passwords import (
    MAX_BYTES,
    MAX_LENGTH,
    PasswordRejected,
    check_password_policy,
    hash_password,
    needs_rehash,
    verify_dummy,
    verify_password,
)

GOOD = "violet tractor anchors the moon"


def _reason(password: str, **kwargs: str) -> str:
    with pytest.raises(PasswordRejected) as caught:
        check_password_policy(password, **kwargs)
    assert caught.value.reason == str(caught.value)
    return caught.value.reason


# --- blocklist ---------------------------------------------------------------------------


def test_blocklist_ships_at_least_ten_thousand_entries_each_long_enough() -> None:
    entries = passwords.blocklist()
    assert len(entries) >= 10_000
    # Every entry is one the length rule alone would let through, so each one counts.
    assert min(len(e) for e in entries) >= passwords.MIN_LENGTH
    assert all(e == unicodedata.normalize("NFKC", e).casefold() for e in entries)


def test_blocklist_is_loaded_once() -> None:
    assert passwords.blocklist() is passwords.blocklist()


@pytest.mark.parametrize("common", ["password", "12345678", "qwertyuiop", "iloveyou", "football"])
def test_known_common_passwords_are_refused(common: str) -> None:
    assert "too common" in _reason(common)


def test_blocklist_match_ignores_case_and_compatibility_forms() -> None:
    assert "too common" in _reason("PassWord")
    assert "too common" in _reason(
        "\uff30\uff21\uff33\uff33\uff37\uff2f\uff32\uff24"
    )  # fullwidth PASSWORD


# --- policy ------------------------------------------------------------------------------


def test_a_long_uncommon_password_is_accepted() -> None:
    check_password_policy(GOOD)


def test_seven_characters_are_refused_eight_accepted() -> None:
    assert _reason("xq7!vb2") == "Use at least 8 characters."
    check_password_policy("xq7!vb2z")


def test_length_counts_characters_not_bytes() -> None:
    # Eight non-ASCII characters (24 bytes) are eight characters; seven are too short.
    check_password_policy("ключ-зам")
    assert _reason("ключзам") == "Use at least 8 characters."


def test_no_composition_rules() -> None:
    # All lower case letters, no digits or symbols: fine when long and uncommon.
    check_password_policy("glacierwombatsunset")
    check_password_policy("2718281828459045")


def test_spaces_and_any_unicode_are_allowed() -> None:
    check_password_policy("  leading and trailing spaces  ")
    check_password_policy("пароль для входа в систему")
    check_password_policy("🔑🔑 emoji are characters 🔑🔑")


def test_the_email_address_itself_is_refused() -> None:
    assert "email address" in _reason("Alice.Cooper@Example.com", email="alice.cooper@example.com")
    # The local part alone is the same guess.
    assert "email address" in _reason("ALICE.COOPER", email="alice.cooper@example.com")
    check_password_policy(GOOD, email="alice.cooper@example.com")


def test_oversize_input_is_refused_not_truncated() -> None:
    assert _reason("a" * (MAX_LENGTH + 1) + "Z") == f"Use at most {MAX_LENGTH} characters."
    # The limit is the same for 4-byte characters: 1024 of them (4096 bytes) are fine.
    at_limit = "\U0001f600" * MAX_LENGTH
    assert len(at_limit.encode("utf-8")) == MAX_BYTES
    check_password_policy(at_limit)
    assert verify_password(hash_password(at_limit), at_limit)
    assert "at most" in _reason(at_limit + "x")
    # NFKC expansion is counted: U+FDFA becomes 18 characters.
    assert "at most" in _reason("\ufdfa" * 100)


def test_non_text_is_refused() -> None:
    assert _reason(12345678) == "The password must be text."  # type: ignore[arg-type]


# --- hashing -----------------------------------------------------------------------------


def test_hash_is_argon2id_with_owasp_parameters() -> None:
    stored = hash_password(GOOD)
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert GOOD not in stored
    assert hash_password(GOOD) != stored  # salted
    assert verify_password(stored, GOOD)
    assert not needs_rehash(stored)


def test_sixty_five_characters_are_used_in_full() -> None:
    long_password = "correct-horse-battery-staple-" * 2 + "abcdefg"
    assert len(long_password) == 65
    check_password_policy(long_password)
    stored = hash_password(long_password)
    assert verify_password(stored, long_password)
    assert not verify_password(stored, long_password[:-1] + "h")
    assert not verify_password(stored, long_password[:64])


def test_long_unicode_password_is_not_truncated() -> None:
    long_password = "Größe-な-пароль-🙂-" * 50 + "Ω"
    assert len(long_password) <= MAX_LENGTH
    assert len(long_password.encode("utf-8")) > 1000
    check_password_policy(long_password)
    stored = hash_password(long_password)
    assert verify_password(stored, long_password)
    assert not verify_password(stored, long_password[:-1] + "Ψ")


def test_verification_uses_the_nfkc_form() -> None:
    decomposed = "Cafe\u0301 au lait tous les matins"  # e + combining acute
    composed = unicodedata.normalize("NFC", decomposed)
    stored = hash_password(decomposed)
    assert verify_password(stored, composed)
    # Fullwidth letters are the same password under NFKC.
    assert verify_password(
        hash_password("\uff50\uff41\uff53\uff53 phrase nine"), "pass phrase nine"
    )


def test_verify_never_raises() -> None:
    stored = hash_password(GOOD)
    assert not verify_password(stored, "wrong password entirely")
    assert not verify_password("not a hash", GOOD)
    assert not verify_password("", GOOD)
    assert not verify_password("$argon2id$v=19$m=19456,t=2,p=1$AAAA$BBBB", GOOD)
    assert not verify_password(stored, "x" * (MAX_LENGTH + 1))
    assert not verify_password(stored, None)  # type: ignore[arg-type]


def test_oversize_input_cannot_be_hashed() -> None:
    with pytest.raises(PasswordRejected):
        hash_password("x" * (MAX_LENGTH + 1))


def test_old_parameters_need_a_rehash_and_still_verify() -> None:
    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1, type=Type.ID)
    old = weak.hash(GOOD)
    assert verify_password(old, GOOD)
    assert needs_rehash(old)
    argon2i = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1, type=Type.I)
    assert needs_rehash(argon2i.hash(GOOD))
    assert needs_rehash("$2b$12$legacybcrypthashvaluexxxxxxxxxxxxxxxxxxxxxxxxxxxxx")


def test_dummy_verification_takes_as_long_as_a_real_one() -> None:
    stored = hash_password(GOOD)

    def timed(fn: object) -> float:
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            fn()  # type: ignore[operator]
            best = min(best, time.perf_counter() - start)
        return best

    # Same cost parameters means the same work, whatever the machine's load...
    assert not needs_rehash(passwords._DUMMY_HASH)
    # ...and the work is really done (the shared CI cores make ratios noisy: bounds are wide).
    real = timed(lambda: verify_password(stored, "some wrong guess"))
    dummy = timed(lambda: verify_dummy("some wrong guess"))
    assert real > 0.002
    assert 0.3 < dummy / real < 3.0
