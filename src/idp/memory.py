"""Keep a serving process's memory small: fewer glibc malloc arenas.

glibc gives threads their own malloc arenas (up to 8 per core), and memory freed in one
arena is not reused by threads of another, so a threaded server's resident memory grows
with its thread count under load. Two arenas are plenty for request threads that spend
their time in the database and in C code that releases the GIL.
"""

from __future__ import annotations

import ctypes
import ctypes.util

#: glibc's `mallopt` parameter for the arena limit (malloc.h: M_ARENA_MAX).
_M_ARENA_MAX = -8
ARENAS = 2


def limit_malloc_arenas(arenas: int = ARENAS) -> bool:
    """Limit this process's malloc arenas (each worker calls it at start-up, before its
    request threads exist). Returns False where this is not glibc (nothing changed)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_ARENA_MAX, arenas))
