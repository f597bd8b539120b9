"""Keeping a CPU fit's freed memory in the process for its next step.

glibc's ``malloc`` serves every block above 32 MiB with a fresh ``mmap`` and returns it with
``munmap`` when freed. A CPU fit at 256x256 and above allocates and frees such blocks
(activations and their gradients) dozens of times a step, so each step asks the kernel for
fresh zeroed pages and page-faults them in one by one: measured here, the Deep Decoder at
512x512 spent more time in the kernel than in its convolutions (838 ms a step; 380 ms with
the heap kept). :func:`kept_heap` tells ``malloc`` to serve such blocks from its heap and not
to give freed memory back while a fit runs, and gives it back when the fit ends. It changes
where memory comes from, never a number a fit computes.
"""

from __future__ import annotations

import contextlib
import ctypes
import platform
from collections.abc import Iterator

# mallopt(3) parameters and glibc's defaults, to restore them.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_DEFAULT_TRIM_THRESHOLD = 128 * 1024
_DEFAULT_MMAP_MAX = 65536
_NEVER_TRIM = 2**31 - 1  # mallopt takes an int


def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (whose ``mallopt`` this module drives), else None."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


@contextlib.contextmanager
def kept_heap(enabled: bool = True) -> Iterator[bool]:
    """While the context runs, serve large blocks from the heap and keep freed memory for
    reuse; afterwards restore glibc's defaults and return the free memory to the system.

    Yields whether the heap is kept (False: disabled, or not glibc, where nothing changes).
    Process-wide: an inner context's exit restores the defaults for an outer one too.
    """
    libc = _glibc() if enabled else None
    if libc is None:
        yield False
        return
    libc.mallopt(_M_MMAP_MAX, 0)
    libc.mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM)
    try:
        yield True
    finally:
        libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
        libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
        libc.malloc_trim(0)
