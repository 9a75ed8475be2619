"""Heap settings for CPU work: freed memory stays mapped in the process instead of going back to the OS each time.

PyTorch's CPU allocator takes every activation from ``malloc`` and frees it when the tensor dies. glibc serves blocks
above ``M_MMAP_THRESHOLD`` with a fresh ``mmap`` and gives the top of the heap back to the OS once more than
``M_TRIM_THRESHOLD`` of it is free, both adjusted on the fly to a few megabytes. A forward pass that frees tens of
megabytes of activations at its end therefore hands them back, and the next pass touches new pages: YOLO-n
``predict`` at 640 px took about 7000 page faults per call on one thread (28 MB), batch 8 at 320 px 12000. With both
thresholds raised the pages are reused and a call takes none: ``benchmarks/heap.py`` measured batch 1 at 640 px
1.14x faster on one thread (129.6 -> 113.3 ms), batch 8 at 320 px 1.10x (one thread) and 1.13x (two threads, batch
slices), batch 1 on two threads unchanged, detections identical. The memory kept is what the process used at its
peak, as with jemalloc or tcmalloc, which many PyTorch CPU deployments preload for the same reason.

Applied once, when :mod:`vision` is imported, on Linux with glibc only; skipped when ``VISION_MALLOC=0``, or when the
user has set glibc's own knobs (``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TOP_PAD_`` or
``GLIBC_TUNABLES``), which then win.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import sys
from collections.abc import Mapping

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "keep_freed_memory"]

#: blocks up to this size come from the heap (reused) rather than from a fresh ``mmap`` each time
MMAP_THRESHOLD = 256 << 20
#: free memory at the top of the heap kept mapped, up to this size
TRIM_THRESHOLD = 1 << 30
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers (malloc.h)
_USER_KNOBS = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_", "GLIBC_TUNABLES")


def keep_freed_memory(environ: Mapping[str, str] | None = None) -> bool:
    """Raise glibc's mmap and trim thresholds (:data:`MMAP_THRESHOLD`, :data:`TRIM_THRESHOLD`) for this process.

    Both are set together: setting either one turns off glibc's adjustment of the other, and a trim threshold alone
    would leave the mmap threshold at 128 KiB, where every activation is a fresh mapping.

    Args:
        environ: the environment to read the opt-outs from (``os.environ``).

    Returns:
        Whether the thresholds were set (False off Linux/glibc, with ``VISION_MALLOC=0`` or a user's glibc setting).
    """
    env = os.environ if environ is None else environ
    if env.get("VISION_MALLOC", "1") == "0" or any(k in env for k in _USER_KNOBS):
        return False
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))


keep_freed_memory()
