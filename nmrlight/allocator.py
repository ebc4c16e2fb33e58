"""Keep freed memory in the process instead of returning it to the OS after every large tensor.

glibc serves allocations above 128 kB-32 MB with fresh mmap pages and unmaps them on free, so each
full-frame tensor (16 MB at 3384 x 1230) costs page faults every time it is allocated: measured
here, that was a third of a forward+backward pass. Raising the mmap and trim thresholds makes glibc
reuse its heap. The command line calls this at start; library users can call it, or set
MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_ in the environment.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def keep_freed_memory(mmap_threshold: int = 1 << 30, trim_threshold: int = 1 << 31) -> bool:
    """Tune glibc's malloc (no-op elsewhere or when the environment already sets it). True if applied."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    mmap_threshold = min(mmap_threshold, 2**31 - 1)
    trim_threshold = min(trim_threshold, 2**31 - 1)
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(_M_TRIM_THRESHOLD, trim_threshold))
