"""`keep_freed_memory()`: CPU training without a page fault storm (`keep_host_memory`).

glibc's malloc serves large blocks with mmap, gives them back to the OS when they are freed,
and trims free memory off the top of its heap; its thresholds adapt, but not to a training
step, which frees tens of MB of activations and gradients at its end and allocates them again
at the start of the next. Each step then faults its memory back in page by page, and the kernel
zeroes every page: on the paper's MNIST net (64 + 64 images, fp32, 2-core AMD EPYC) about 9,000
page faults per step, a quarter of the step's time. Fixing the thresholds (mmap only for blocks
of 32 MiB or more, glibc's maximum; trim only beyond 1 GiB of free heap) keeps that memory in
the process for reuse: a few faults per step. Intel's PyTorch CPU guide gets the same effect by
preloading jemalloc or tcmalloc; this needs no preload.

The price: the process keeps up to 1 GiB of freed memory instead of returning it. A no-op where
malloc is not glibc's (macOS, Windows, musl) and on memory the GPU allocator owns.
"""

import ctypes
import ctypes.util
import logging
import platform

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's <malloc.h>
MMAP_THRESHOLD = 32 << 20  # glibc's upper limit for this setting (64-bit)
TRIM_THRESHOLD = 1 << 30


def keep_freed_memory() -> bool:
    """Set glibc's malloc thresholds as above for this process; True if they were set."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    done = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    done = mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and done
    if done:
        log.debug("keep_host_memory: glibc keeps freed memory below 1 GiB for reuse")
    return done
