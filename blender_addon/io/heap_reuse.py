"""Let the attribute arrays Blender allocates during an import reuse the parse buffers it frees (glibc only).

glibc's malloc serves a block above its mmap threshold (128 KiB in a fresh process) with a fresh mapping and
unmaps it on free, so every attribute array of an import is new memory whose 4 KiB pages all fault on first
write, although the parsed buffer freed just before it is the same size. glibc raises the threshold by itself
(to at most 32 MiB) once it unmaps a block larger than it; doing that once, before a file is read, keeps the
buffers and arrays up to 32 MiB (1M SH-3 Gaussians: 12–16 MB each) on the heap, where each freed buffer is
reused by the next array. That is the bpy module's case (its build turns jemalloc off); Blender's own Linux
builds link jemalloc, which keeps freed memory for reuse by itself, and there the one malloc/free below is all
this does.
"""

from __future__ import annotations

import ctypes
import os

# glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit: the highest threshold its own adjustment goes to.
_GLIBC_THRESHOLD_MAX = 32 * 1024 * 1024
_raised = False


def is_glibc() -> bool:
    """Whether this process's C library is glibc (whose malloc this module and the fuzz harness's memory meter
    know)."""
    try:
        return (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
    except (AttributeError, ValueError, OSError):   # no confstr (Windows) or no such name (macOS, musl)
        return False


def reuse_freed_buffers() -> bool:
    """Raise glibc's mmap threshold to its maximum the way glibc itself does it: unmap one block of that size.

    Only the threshold (and glibc's trim threshold, twice it) change, and only upwards, as a long Blender session
    gets them anyway; nothing is kept allocated. A no-op after the first call, and where the C library is not
    glibc (macOS, Windows, musl), whose allocators decide this themselves. True when the threshold was raised.
    """
    global _raised
    if _raised or not is_glibc():
        return False
    libc = ctypes.CDLL(None)
    malloc, free = libc.malloc, libc.free
    malloc.restype, malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    free.restype, free.argtypes = None, [ctypes.c_void_p]
    # Leave room for the chunk header and page rounding: the mapping must not exceed the maximum, or glibc
    # unmaps it without raising the threshold. The block is never written, so no page of it is faulted in.
    block = malloc(_GLIBC_THRESHOLD_MAX - 2 * 4096)
    if block:
        free(block)
    _raised = True
    return bool(block)
