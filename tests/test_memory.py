"""The malloc arena limit (idp.memory) applies on glibc, and is harmless elsewhere."""

from __future__ import annotations

import platform

import pytest

from idp.memory import limit_malloc_arenas


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_the_arena_limit_is_accepted_on_glibc() -> None:
    assert limit_malloc_arenas() is True
