"""The C heap's policy: keep freed tensor memory for the next tensor instead of returning it.

glibc's malloc serves every block above its mmap threshold (dynamic, at most 32 MiB) with fresh
pages from the kernel and unmaps them on free, so each large tensor a transform allocates (50 MB
for a Kodak image's first layer at N=128) faults all its pages in again, zero-filled. On virtual
machines a page fault is expensive: on a 2-core cloud VM this was about half the time of g_a and
g_s (benchmarks/RESULTS.md, "nicengine vs CompressAI"). The engine therefore serves blocks up to
MMAP_LIMIT from the heap and keeps up to RETAIN bytes of free heap for reuse: a pipeline pays
the faults for its first image only. The costs: up to RETAIN bytes stay resident after a call
(glibc returns free heap above that); and blocks above MMAP_LIMIT (a 12-megapixel image's
strips) keep their own mappings, since serving them from the heap too fragmented it enough to
raise the peak memory of coding a 4000x3000 image by 1.0 GB (3.3 instead of 2.3 GB; with the
limit, 2.4 GB).

The policy is process-wide (glibc has no other kind) and applied when engine is imported. It
helps calls made on a process's main thread (the command line, compress-dir's pool processes,
most scripts): glibc gives each other thread an arena of heaps of at most 64 MiB, which a
tensor of tens of MB outgrows, so a call from a thread pool still faults its pages in (0.91 s
against 0.92 s without the policy; 0.64 against 0.99 s on the main thread, a loaded machine).
`NICENGINE_HEAP=system` keeps glibc's own behaviour; so does any MALLOC_MMAP_THRESHOLD_,
MALLOC_TRIM_THRESHOLD_ or GLIBC_TUNABLES setting, which says the user tuned the allocator.
Elsewhere than glibc (musl, macOS, Windows) nothing changes.
"""

from __future__ import annotations

import ctypes
import os
import platform

MMAP_LIMIT = 1 << 26  # blocks above this keep their own mapping, returned on free
RETAIN = 1 << 29  # free heap kept for reuse; glibc trims the heap's top beyond it
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")


def retain() -> bool:
    """Apply the policy unless the environment opts out; whether it was applied."""
    if os.environ.get("NICENGINE_HEAP", "retain").lower() == "system":
        return False
    if any(name in os.environ for name in _USER_SETTINGS):
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    # mallopt returns 1 on success; the trim threshold first, so a refused mmap threshold leaves
    # at most a heap that keeps its free top (which it would then rarely have).
    return bool(libc.mallopt(_M_TRIM_THRESHOLD, RETAIN)
                and libc.mallopt(_M_MMAP_THRESHOLD, MMAP_LIMIT))
