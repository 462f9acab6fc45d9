"""Keep a serving process's memory small: fewer glibc malloc arenas, and big blocks
always given back.

glibc gives threads their own malloc arenas (up to 8 per core), and memory freed in one
arena is not reused by threads of another, so a threaded server's resident memory grows
with its thread count under load. Two arenas are plenty for request threads that spend
their time in the database and in C code that releases the GIL.

Each argon2id verification allocates its 19 MiB working memory with malloc. glibc serves
blocks that big with mmap and unmaps them when freed, but raises that threshold after each
such free (up to 32 MiB), after which the blocks come from the heap and stay resident: a
worker that verified passwords on 16 threads at once kept hundreds of MiB. A fixed
threshold keeps every big block an mmap, returned to the system when freed.
"""

from __future__ import annotations

import ctypes
import ctypes.util

#: glibc's `mallopt` parameters (malloc.h): M_ARENA_MAX, M_MMAP_THRESHOLD.
_M_ARENA_MAX = -8
_M_MMAP_THRESHOLD = -3
ARENAS = 2
#: Blocks at least this big are always mmapped (and unmapped when freed).
MMAP_THRESHOLD = 1024 * 1024


def limit_malloc_arenas(arenas: int = ARENAS) -> bool:
    """Limit this process's malloc arenas and fix its mmap threshold (each worker calls
    it at start-up, before its request threads exist). Returns False where this is not
    glibc (nothing changed)."""
    mallopt = _libc_function("mallopt")
    if mallopt is None:
        return False
    return bool(mallopt(_M_ARENA_MAX, arenas)) and bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))


def _libc_function(name: str) -> ctypes._NamedFuncPointer | None:
    """`name` from the C library the process already runs with (its global symbols), or
    from the library `find_library` names: asked first, `find_library` runs `ldconfig`
    in a subprocess, about 0.1 s of a worker's start."""
    try:
        return getattr(ctypes.CDLL(None), name)  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        pass
    library = ctypes.util.find_library("c")
    if library is None:
        return None
    try:
        return getattr(ctypes.CDLL(library), name)  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None
