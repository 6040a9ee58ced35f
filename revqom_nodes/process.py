"""``configure_process``: what every compute process sets before its first frame or step.

The agent node, the fusion node's child process, the roadside unit, ``revqom eval``, ``revqom
train`` and the benchmarks call it with their thread count. Besides PyTorch's threads it keeps
freed memory in the process (``keep_freed_memory``): a frame allocates and frees the same few
megabyte-sized tensors each time, and with glibc's defaults each of them is a fresh ``mmap``
whose pages fault in again on first touch (blocks over the dynamic mmap threshold), or is trimmed
off the heap's top when freed. Measured on the five-agent frame, one thread, side by side: the
fusion 34.1 -> 29.3-29.6 ms p50 (docs/RESULTS.md, "Freed memory kept in the process"). The price is
that a process keeps its peak heap instead of giving it back between frames.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

# glibc's mallopt parameters (malloc.h) and the values set
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 * 2**20  # blocks up to this come from the heap: glibc's largest on 64-bit
TRIM_THRESHOLD_BYTES = 1 * 2**30  # free heap top kept up to this before it goes back to the system


def configure_process(num_threads: int) -> None:
    """PyTorch's intra-op threads (``num_threads`` > 0; 0 leaves PyTorch's default) and
    ``keep_freed_memory()``."""
    import torch

    if num_threads > 0:
        torch.set_num_threads(num_threads)
    keep_freed_memory()


@functools.cache
def keep_freed_memory() -> bool:
    """Sets glibc's mmap and trim thresholds (``MMAP_THRESHOLD_BYTES``, ``TRIM_THRESHOLD_BYTES``)
    so that freed blocks stay in the process for the next frame; True when both were set, False
    where the C library has no ``mallopt`` (not glibc) or refuses them. Once per process."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    set_mmap = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    set_trim = mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    return bool(set_mmap and set_trim)
