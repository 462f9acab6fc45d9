"""argon2id verification on pooled working memory (idp.accounts.argon2_memory) answers as
argon2-cffi's own verification does, for our parameters and any other, keeps no more
buffers than verifications may run at once, and leaves nothing of a password in them."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from argon2.low_level import ffi

from idp.accounts import argon2_memory
from idp.accounts.argon2_memory import WorkingMemory

OURS = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1, type=Type.ID)
KIB = 19456


def verify(encoded: str, secret: str, memory: WorkingMemory | None = None) -> bool:
    """`argon2_memory.verify` on `memory` (a pool of the test's own) or the process's."""
    if memory is None:
        return argon2_memory.verify(encoded, secret, memory_cost_kib=KIB)
    decoded = argon2_memory._decode(encoded)
    computed = memory.hash_raw(decoded, secret.encode())
    if computed != decoded.digest:
        raise VerifyMismatchError
    return True


@pytest.mark.parametrize(
    "hasher",
    [
        OURS,
        PasswordHasher(time_cost=1, memory_cost=8192, parallelism=2, type=Type.ID),
        PasswordHasher(time_cost=3, memory_cost=4096, parallelism=1, hash_len=64, salt_len=32),
        PasswordHasher(time_cost=2, memory_cost=4096, parallelism=1, type=Type.I),
        PasswordHasher(time_cost=2, memory_cost=4096, parallelism=1, type=Type.D),
    ],
    ids=["ours", "two-lanes", "long-hash-and-salt", "argon2i", "argon2d"],
)
def test_answers_as_argon2_cffi_does(hasher: PasswordHasher) -> None:
    encoded = hasher.hash("pässwörd 1 ✓")
    assert hasher.verify(encoded, "pässwörd 1 ✓")
    assert verify(encoded, "pässwörd 1 ✓")
    for wrong in ("pässwörd 1 ✗", "", "pässwörd 1 ✓ "):
        with pytest.raises(VerifyMismatchError):
            hasher.verify(encoded, wrong)
        with pytest.raises(VerifyMismatchError):
            verify(encoded, wrong)


def test_a_changed_salt_hash_or_parameter_does_not_verify() -> None:
    encoded = OURS.hash("a long passphrase 1")
    head, salt, digest = encoded.rsplit("$", 2)
    other_salt = OURS.hash("x").rsplit("$", 2)[1]
    tampered = [
        f"{head}${other_salt}${digest}",
        f"{head}${salt}${digest[:-2]}AA",
        encoded.replace("t=2", "t=3"),
        encoded.replace("m=19456", "m=19457"),
        encoded.replace("$argon2id$", "$argon2i$"),
    ]
    for candidate in tampered:
        with pytest.raises(VerifyMismatchError):
            verify(candidate, "a long passphrase 1")


@pytest.mark.parametrize(
    "encoded",
    [
        "",
        "not a hash",
        "$argon2id$v=19$m=19456,t=2,p=1$",
        "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ",
        "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$***",
        "$argon2id$v=19$m=19456,t=2,p=1$c2Fs!HNhbHQ$c2FsdHNhbHQ",
        "$bcrypt$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$c2FsdHNhbHQ",
        "$argon2id$v=19$m=x,t=2,p=1$c2FsdHNhbHQ$c2FsdHNhbHQ",
    ],
)
def test_a_malformed_hash_is_an_invalid_hash(encoded: str) -> None:
    with pytest.raises(InvalidHashError):
        verify(encoded, "anything")


def test_parameters_argon2_refuses_are_a_verification_error() -> None:
    """A salt shorter than Argon2's minimum (8 bytes): refused, not computed."""
    with pytest.raises(VerificationError, match="Salt is too short"):
        verify("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$c2FsdHNhbHRzYWx0c2FsdA", "x")


def test_one_buffer_per_verification_at_once_kept_and_wiped() -> None:
    memory = WorkingMemory(2, KIB * 1024)
    encoded = OURS.hash("a long passphrase 1")
    assert memory.kept == 0
    assert verify(encoded, "a long passphrase 1", memory)
    assert memory.kept == 1  # kept for the next one
    with pytest.raises(VerifyMismatchError):
        verify(encoded, "another passphrase", memory)
    assert memory.kept == 1  # the same buffer again
    with ThreadPoolExecutor(6) as threads:
        results = list(
            threads.map(lambda _: verify(encoded, "a long passphrase 1", memory), range(12))
        )
    assert results == [True] * 12
    assert memory.kept == 2  # never more than may run at once
    for buffer in memory._idle:  # Argon2 wiped its working memory before giving it back
        data = bytes(ffi.buffer(buffer))
        assert len(data) == KIB * 1024
        assert data.count(0) == len(data)


def test_working_memory_of_another_size_is_not_kept() -> None:
    memory = WorkingMemory(2, KIB * 1024)
    small = PasswordHasher(time_cost=1, memory_cost=4096, parallelism=1).hash("a passphrase")
    assert verify(small, "a passphrase", memory)
    assert memory.kept == 0


def test_passwords_verify_through_the_pool() -> None:
    from idp.accounts.passwords import hash_password, verify_password

    encoded = hash_password("a long passphrase 1")
    assert verify_password(encoded, "a long passphrase 1")
    assert not verify_password(encoded, "a long passphrase 2")
    assert argon2_memory.pool(KIB).kept >= 1


def test_a_slot_given_back_goes_to_the_longest_waiter() -> None:
    """A thread that gives its slot back and at once asks again (a worker going on to its
    next hash) waits behind those already waiting, whom `threading.Semaphore` let it pass
    over."""
    import threading
    import time

    from idp.accounts.argon2_memory import FairSlots

    slots = FairSlots(1)
    order: list[str] = []

    def waiter(name: str) -> None:
        with slots:
            order.append(name)

    slots.__enter__()
    first = threading.Thread(target=waiter, args=("first",))
    first.start()
    while slots.waiting < 1:
        time.sleep(0.001)
    second = threading.Thread(target=waiter, args=("second",))
    second.start()
    while slots.waiting < 2:
        time.sleep(0.001)
    slots.__exit__()
    with slots:  # asked again at once: behind both
        order.append("again")
    first.join(5)
    second.join(5)
    assert order == ["first", "second", "again"]
    assert slots.waiting == 0
    with slots:  # and free again: taken at once
        assert slots.waiting == 0


def test_slots_admit_no_more_holders_than_their_size() -> None:
    import threading
    import time

    from idp.accounts.argon2_memory import FairSlots

    slots, lock = FairSlots(2), threading.Lock()
    holding, most = 0, 0

    def hold(_: int) -> None:
        nonlocal holding, most
        with slots:
            with lock:
                holding += 1
                most = max(most, holding)
            time.sleep(0.002)
            with lock:
                holding -= 1

    with ThreadPoolExecutor(6) as threads:
        list(threads.map(hold, range(30)))
    assert most == 2
