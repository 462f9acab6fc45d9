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
threshold keeps every big block an mmap, returned to the system when freed. (Password
verification itself no longer mallocs its working memory: it runs on a few buffers kept
for it, `idp.accounts.argon2_memory`, since mapping 19 MiB afresh each time cost more
CPU than half the hash.)

Start-up also pauses Python's cyclic garbage collector (`pause_gc`, `resume_gc`): the
imports and set-up of a serving process make ~190,000 long-lived objects and almost no
garbage, and the collections that allocation triggers were ~15% of the CPU to ready.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc

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


#: True while `pause_gc` holds the collector off for this process's start.
_gc_paused = False


def pause_gc() -> None:
    """Hold the cyclic garbage collector off while a serving process starts (imports,
    routes, signing keys); `resume_gc` turns it back on. Does nothing when the collector
    is already off (someone else chose that)."""
    global _gc_paused
    if gc.isenabled():
        gc.disable()
        _gc_paused = True


def resume_gc() -> bool:
    """End `pause_gc`'s pause: what start-up made is moved out of the collector's sight
    (`gc.freeze`: it lives as long as the process, and later full collections need not
    walk it again), and the collector is turned back on. Returns False, changing nothing,
    when no pause is in force."""
    global _gc_paused
    if not _gc_paused:
        return False
    _gc_paused = False
    gc.freeze()
    gc.enable()
    return True
