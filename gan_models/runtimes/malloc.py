"""glibc allocator settings for torch's per-run buffers; entry points call `tune_malloc()` once at start-up."""

from __future__ import annotations

import ctypes
import sys

# glibc serves blocks above its mmap threshold (dynamic, 128 KiB to 32 MiB) with fresh mmaps and trims a free heap
# top above twice that, so torch's activations (8-13 MB per layer at 256²) go back to the kernel and fault in again on
# the next run: eager upscale 256² took a median 648 ms that way against 434 ms with these settings (2-core AVX2,
# 8 processes each; ~90k page faults over 8 runs of a small net → 0, see tests). Blocks above 32 MiB (whole
# 8-megapixel results) stay mmapped and are returned when freed; at most 512 MiB of free heap is kept.
MALLOC_MMAP_THRESHOLD = 32 << 20
MALLOC_TRIM_THRESHOLD = 512 << 20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers


def tune_malloc() -> bool:
    """Keep torch's per-run buffers in the heap (glibc only; a no-op returning False elsewhere).

    Process-wide, so entry points (app.py, the CLI, train.py, the benchmark) call it once at start-up; the library
    never does.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # musl and other libcs have no mallopt: AttributeError
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(_M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD))


def trim_heap() -> bool:
    """Hand the heap's free memory back to the kernel now (glibc's malloc_trim; a no-op returning False elsewhere).

    After a large export the freed copies of the network stay resident up to the trim threshold; the tournament
    trims before it builds its candidates, so they do not stack on top of that.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        malloc_trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return False
    malloc_trim.argtypes = [ctypes.c_size_t]
    return bool(malloc_trim(0))
