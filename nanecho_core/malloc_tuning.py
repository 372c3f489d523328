"""Keep freed memory in the training process, so each step's tensors reuse pages already mapped.

glibc hands allocations above a (dynamic) threshold to mmap and gives them back with munmap on
free, and trims the heap top back to the OS. A training step frees and reallocates the same
activation and gradient buffers every iteration, so on CPU each one came back as fresh pages:
~1,300 page faults per iteration for the ci model, ~10% of its time. PyTorch's CPU tuning guide
answers this with jemalloc/tcmalloc via LD_PRELOAD; raising glibc's two thresholds in-process
gets the same effect with nothing to install. Set NANECHO_MALLOC_TUNING=off to leave glibc as is.
"""

from __future__ import annotations

import ctypes
import os
import sys

_M_TRIM_THRESHOLD = -1  # mallopt parameter numbers, from glibc's malloc.h
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 256 << 20  # allocations below this come from the heap, and are reused
TRIM_THRESHOLD = 1 << 30  # free memory kept at the heap top before any is returned

_applied = False


def retain_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds once per process; True when they are in effect."""
    global _applied
    if _applied:
        return True
    if os.environ.get("NANECHO_MALLOC_TUNING", "").lower() in ("off", "0", "false", "no"):
        return False
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (musl, or no libc.so.6)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    _applied = (
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    )
    return _applied
