"""Process settings of the `semisup` command: glibc's allocator.

glibc's malloc returns large freed blocks to the system and maps new ones on the next step, so
a CPU training loop whose batches need hundreds of megabytes spends its time in page faults
(24 million minor faults in a 100-step CIFAR-10 run). `tune_allocator` keeps freed memory in
the heap for reuse, as `GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=...`
would, through `mallopt` at start-up. Where another allocator is preloaded (tcmalloc, jemalloc),
the C library is not glibc, or SEMISUP_TUNE_MALLOC=0 is set, nothing changes.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_MAX = -4
TRIM_THRESHOLD = 2**31 - 1  # the largest value mallopt takes: free memory stays mapped
OTHER_ALLOCATORS = ("tcmalloc", "jemalloc", "mimalloc")


def tune_allocator() -> bool:
    """Sets glibc's malloc to reuse freed memory instead of unmapping it; True if it did."""
    preloaded = os.environ.get("LD_PRELOAD", "")
    if sys.platform != "linux" or any(name in preloaded for name in OTHER_ALLOCATORS):
        return False
    if os.environ.get("SEMISUP_TUNE_MALLOC", "1") == "0":
        return False
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    no_mmap = libc.mallopt(M_MMAP_MAX, 0) == 1
    no_trim = libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    return no_mmap and no_trim
