"""The malloc arena limit (idp.memory) applies on glibc, and is harmless elsewhere."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from idp.memory import limit_malloc_arenas


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_the_arena_limit_is_accepted_on_glibc() -> None:
    assert limit_malloc_arenas() is True


RSS_AFTER_HASHING = """
import sys, threading
from argon2 import PasswordHasher
from idp.memory import limit_malloc_arenas
if sys.argv[1] == "limited":
    assert limit_malloc_arenas()
ph = PasswordHasher(time_cost=1, memory_cost=19456, parallelism=1)
digest = ph.hash("x")
threads = [threading.Thread(target=lambda: [ph.verify(digest, "x") for _ in range(3)])
           for _ in range(16)]
[t.start() for t in threads]
[t.join() for t in threads]
status = open("/proc/self/status").read()
print(int(status.split("VmRSS:")[1].split()[0]) // 1024)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_argon2_working_memory_is_given_back_after_concurrent_sign_ins() -> None:
    """16 threads verifying at once used to leave ~300 MiB resident in the process."""

    def rss_mib(mode: str) -> int:
        out = subprocess.run(
            [sys.executable, "-c", RSS_AFTER_HASHING, mode],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        return int(out.stdout.strip())

    assert rss_mib("limited") < 100
    assert rss_mib("default") > 100  # the check above can fail: glibc's own behaviour
