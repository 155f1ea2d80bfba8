"""Keep freed training tensors in the process instead of handing them back to the kernel every step.

glibc serves blocks above its mmap threshold with fresh mappings and trims freed memory at the top of the heap
above its trim threshold; a training loop that frees and reallocates the same 5-30 MB activation and gradient
tensors every step then page-faults them back in each time. The EfficientNet-Lite0 fine-tune (`train_head`) took
131 million minor faults and 534 s of system time in a 39-minute run; 40 steps of its tail took 2.4-2.7 M faults
and 25-33 s, and 8-16 k faults and 25-26 s with the thresholds raised (2026-12-02, AMD EPYC, 2 threads).
"""
from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 << 20   # glibc's largest accepted value (HEAP_MAX_SIZE / 2 on 64-bit)
TRIM_THRESHOLD = 256 << 20  # up to this much freed memory stays mapped for reuse


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process. True when set; False where the C library is not
    glibc (nothing changes there)."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
