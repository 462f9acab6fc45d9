"""argon2id verification on working memory kept between verifications.

argon2-cffi's `verify` lets the C library malloc each verification's working memory
(19 MiB with our parameters) and free it afterwards. A serving process always gives
blocks that big back to the system (`idp.memory`: a fixed mmap threshold keeps its
resident memory small), so every verification mapped 19 MiB afresh and faulted in every
page of it: about 4,900 page faults, 10-12 ms of system CPU and 4 ms more of user CPU on
top of the hash's own 21 ms (bench/README.md).

Here the memory comes from a small pool instead, through the allocation hooks of Argon2's
`argon2_context` (argon2-cffi's `core`): at most one verification per core runs at once
(more would only share the cores and each hold 19 MiB), on one of as many buffers,
allocated on first use and kept. A verification waits its turn in order of arrival
(`FairSlots`). Argon2 wipes its working memory before handing it back
(`clear_internal_memory`), so a buffer at rest holds nothing of a password. Working memory
of any other size (a hash made with other parameters, waiting for its rehash) is allocated
for that verification alone. The result is compared in constant time (`hmac`), as
`argon2_verify` does.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from argon2.low_level import core, error_to_str, ffi

_ARGON2_OK = 0  # argon2.h
_ARGON2_DEFAULT_FLAGS = 0


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class _Decoded:
    """A PHC string's parts: argon2-cffi's parameters, its salt and its hash."""

    parameters: argon2.Parameters
    salt: bytes
    digest: bytes


def _b64(text: str) -> bytes:
    """Argon2's base64: the standard alphabet, no padding."""
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidHashError("not base64") from None


def _decode(encoded: str) -> _Decoded:
    parameters = argon2.extract_parameters(encoded)  # InvalidHashError when malformed
    salt, digest = encoded.rsplit("$", 2)[1:]
    return _Decoded(parameters, _b64(salt), _b64(digest))


class FairSlots:
    """At most `size` holders at once, admitted in order of arrival: a slot given back is
    handed to the longest waiter directly.

    `threading.Semaphore` lets a thread that gives a slot back and at once asks again (a
    worker thread going on to its next hash) take it before the waiter it woke, which
    still needs the GIL to run; the waiter then queues again at the back. Under steady
    load a few sign-ins were passed over like that for seconds (bench/README.md).
    """

    def __init__(self, size: int) -> None:
        self._free = size
        #: One lock per waiter, held until its turn comes (released by the slot's holder).
        self._waiters: deque[threading.Lock] = deque()
        self._lock = threading.Lock()

    def __enter__(self) -> None:
        with self._lock:
            if self._free:  # a free slot means nobody waits: a slot is never left free
                self._free -= 1  # while someone does
                return
            turn = threading.Lock()
            turn.acquire()
            self._waiters.append(turn)
        turn.acquire()  # the slot is ours once its holder hands it over

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            if self._waiters:
                self._waiters.popleft().release()  # handed over: still taken
            else:
                self._free += 1

    @property
    def waiting(self) -> int:
        """How many wait for a slot."""
        return len(self._waiters)


class WorkingMemory:
    """Up to `size` buffers of `block_bytes` each, one per verification in progress."""

    def __init__(self, size: int, block_bytes: int) -> None:
        self.block_bytes = block_bytes
        self._slots = FairSlots(size)
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        #: The buffer Argon2 is given in this thread, while it runs.
        self._current = threading.local()
        self.allocate = ffi.callback("int(uint8_t **, size_t)", self._allocate, onerror=_no_memory)
        self.free = ffi.callback("void(uint8_t *, size_t)", self._free)

    def hash_raw(self, decoded: _Decoded, secret: bytes) -> bytes:
        """The raw argon2 hash of `secret` with the parameters and salt of `decoded`."""
        p = decoded.parameters
        out = ffi.new("uint8_t[]", len(decoded.digest))
        pwd = ffi.new("uint8_t[]", secret)
        salt = ffi.new("uint8_t[]", decoded.salt)
        context = ffi.new(
            "argon2_context *",
            {
                "out": out,
                "outlen": len(decoded.digest),
                "pwd": pwd,
                "pwdlen": len(secret),
                "salt": salt,
                "saltlen": len(decoded.salt),
                "secret": ffi.NULL,
                "secretlen": 0,
                "ad": ffi.NULL,
                "adlen": 0,
                "t_cost": p.time_cost,
                "m_cost": p.memory_cost,
                "lanes": p.parallelism,
                "threads": p.parallelism,
                "version": p.version,
                "allocate_cbk": self.allocate,
                "free_cbk": self.free,
                "flags": _ARGON2_DEFAULT_FLAGS,
            },
        )
        with self._slots:
            rv = core(context, p.type.value)  # releases the GIL while it works
        if rv != _ARGON2_OK:
            raise VerificationError(error_to_str(rv))
        return bytes(ffi.buffer(out, len(decoded.digest)))

    def _allocate(self, memory: Any, size: int) -> int:
        memory[0] = ffi.NULL  # until there is a buffer: Argon2 fails on NULL
        if size == self.block_bytes:
            with self._lock:
                buffer = self._idle.pop() if self._idle else None
            pooled = True
        else:
            buffer, pooled = None, False
        if buffer is None:
            buffer = ffi.new("uint8_t[]", size)
        self._current.held = (buffer, pooled)
        memory[0] = buffer
        return 0

    def _free(self, memory: Any, size: int) -> None:
        buffer, pooled = self._current.held
        self._current.held = None
        if pooled:
            with self._lock:
                self._idle.append(buffer)

    @property
    def kept(self) -> int:
        """How many buffers are kept for the next verifications."""
        return len(self._idle)


def _no_memory(exception: type[BaseException] | None, value: object, tb: object) -> int:
    """A failed allocation: Argon2 sees no memory and fails with its own error."""
    return 0


_POOL: WorkingMemory | None = None
_POOL_LOCK = threading.Lock()


def pool(memory_cost_kib: int) -> WorkingMemory:
    """The process's pool, for our parameters' memory cost (made on first use)."""
    global _POOL
    if _POOL is None:
        with _POOL_LOCK:
            if _POOL is None:
                _POOL = WorkingMemory(_cores(), memory_cost_kib * 1024)
    return _POOL


def verify(encoded: str, secret: str, *, memory_cost_kib: int) -> bool:
    """argon2-cffi's `PasswordHasher.verify` on pooled working memory: True, or
    `VerifyMismatchError`; `InvalidHashError` for a malformed hash, `VerificationError`
    when Argon2 refuses its parameters."""
    decoded = _decode(encoded)
    computed = pool(memory_cost_kib).hash_raw(decoded, secret.encode("utf-8"))
    if not hmac.compare_digest(computed, decoded.digest):
        raise VerifyMismatchError
    return True
