"""Freed memory kept for the next step of a fit on the CPU, instead of handed back.

glibc's ``malloc`` serves every block above its mmap threshold (at most 32 MiB) with a fresh
``mmap`` and unmaps it when it is freed. A CPU step at 256 pixels and above frees and
allocates dozens of such blocks (128 MiB each for the Deep Decoder at 512x512), so every step
asks the kernel for zeroed pages and faults them in again: as much system time as user time.
Inside :func:`kept_heap` malloc serves every block from its heap and keeps what is freed
(``mallopt``: ``M_MMAP_MAX`` 0, ``M_TRIM_THRESHOLD`` at its largest); on the way out the
settings are put back and the free heap is handed back (``malloc_trim``). Allocation only:
every number a fit computes is the same, bit for bit. The heap then holds more than the live
tensors (the freed blocks it keeps do not always fit the next request): the memory guard
counts that (:data:`KEPT_HEAP_FACTOR`), and a fit that fits only with the heap handed back
runs so (:func:`hand_back_from_now`).

It is the default wherever dipbench fits (a unit of cells in a worker or in the run's
process, ``dipbench restore``, the estimates); ``DIPBENCH_KEEP_HEAP=0`` turns it off, and
``dipbench speed`` measures both. Elsewhere than glibc (macOS, musl, Windows) it does nothing.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

SWITCH = "DIPBENCH_KEEP_HEAP"
# At most how much more a fit's peak resident memory is with the heap kept than the memory
# guard's estimate with every block handed back: measured over 3 and 20 steps at 256-512 px,
# AVX-512 and AVX2 kernels, up to 1.46 (the Deep Decoder at 384; DIP 0.9-1.05).
KEPT_HEAP_FACTOR = 1.6

# mallopt's parameters (<malloc.h>). Handing back, the settings glibc's own rule reaches in a
# process that has freed blocks of 32 MiB and more (its mmap threshold rises to the largest
# block freed, at most 32 MiB, and the trim threshold is twice it): any mallopt call turns that
# rule off for good, so it is set where the rule would have taken it.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4
_MMAP_THRESHOLD_MAX, _DEFAULT_MMAP_MAX = 32 * 2**20, 65536
_LARGEST_TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int


def heap_kept() -> bool:
    """Whether fits keep their freed memory here: on glibc, unless ``DIPBENCH_KEEP_HEAP``
    says 0 (or no, off, false)."""
    value = os.environ.get(SWITCH, "1").strip().lower()
    if value in ("0", "no", "off", "false"):
        return False
    if value not in ("1", "yes", "on", "true", ""):
        raise ValueError(
            f"{SWITCH}={os.environ[SWITCH]!r}: write 1 to keep freed memory for the next step "
            "(the default) or 0 to hand it back to the system at once"
        )
    return _glibc() is not None


@contextmanager
def kept_heap(keep: bool | None = None) -> Iterator[None]:
    """Keep freed memory in the heap while the block runs, or hand it back at once
    (``keep``; default :func:`heap_kept`); on the way out the setting the block found is put
    back, and a heap no longer kept is handed back (``malloc_trim``)."""
    libc = _glibc()
    keep = heap_kept() if keep is None else keep
    if libc is None:
        yield
        return
    found = _MODES[-1] if _MODES else False
    _MODES.append(keep)
    _set(libc, keep, found)
    try:
        yield
    finally:
        _set(libc, found, _MODES.pop())


def kept_now() -> bool:
    """Whether freed memory is being kept now (inside a :func:`kept_heap` block that keeps
    it, on glibc)."""
    return bool(_MODES and _MODES[-1]) and _glibc() is not None


def hand_back_from_now() -> None:
    """Hand freed memory back at once from now until the innermost :func:`kept_heap` block
    ends: for a fit that would not fit in memory with the heap kept."""
    libc = _glibc()
    if libc is not None and kept_now():
        _MODES[-1] = False
        _set(libc, False, True)


def release_free_memory() -> None:
    """Hand the heap's free memory back to the system now (it stays kept from now on if it
    was): before the memory guard reads what is free."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def _set(libc: Any, keep: bool, was: bool) -> None:
    if keep == was:
        return
    if keep:
        libc.mallopt(_M_MMAP_MAX, 0)
        libc.mallopt(_M_TRIM_THRESHOLD, _LARGEST_TRIM_THRESHOLD)
    else:
        libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
        libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)
        libc.mallopt(_M_TRIM_THRESHOLD, 2 * _MMAP_THRESHOLD_MAX)
        libc.malloc_trim(0)


# The settings of the kept_heap blocks open in this process, innermost last: malloc's
# settings are the process's own, so this stack is too.
_MODES: list[bool] = []


@cache
def _glibc() -> Any | None:
    """The C library when it is glibc (it has ``mallopt`` and ``malloc_trim``), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 (only glibc has it)
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):
        return None
    return libc
