"""The kept heap of CPU fits (benchmark/methods/fit/heap.py): large blocks come from the
heap while a fit runs, glibc's defaults come back after it, and no number changes."""

from __future__ import annotations

import ctypes
import platform

import numpy as np
import pytest
import torch

from benchmark.degradations import gaussian
from benchmark.methods.fit import FitConfig, fit
from benchmark.methods.fit.heap import kept_heap
from benchmark.methods.priors import build_network, get_preset

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
BLOCK = 64 * 2**20  # above glibc's largest mmap threshold (32 MiB)


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd",
            "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost",
        )
    ]  # fmt: skip


def _mmapped_bytes() -> int:
    """Bytes malloc holds in mmap'ed blocks now (mallinfo2's ``hblkhd``)."""
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    return libc.mallinfo2().hblkhd


@pytest.mark.skipif(not GLIBC, reason="drives glibc's malloc")
def test_a_kept_heap_serves_large_blocks_from_the_heap_and_restores_the_defaults() -> None:
    before = _mmapped_bytes()
    with kept_heap() as kept:
        assert kept
        block = torch.empty(BLOCK // 4)
        assert _mmapped_bytes() < before + BLOCK  # from the heap, not a fresh mapping
        del block
    block = torch.empty(BLOCK // 4)
    assert _mmapped_bytes() >= before + BLOCK  # the default again: mmap'ed
    del block


def test_a_heap_not_kept_changes_nothing() -> None:
    with kept_heap(False) as kept:
        assert not kept


def test_the_kept_heap_changes_no_number_of_a_fit() -> None:
    """A fit with keep_heap on and off: the same outputs, bit for bit."""
    clean = np.random.default_rng(0).random((64, 64, 3)).astype(np.float32)
    observation = gaussian(clean, 25, np.random.default_rng(1)).observation
    outputs = []
    for keep_heap in (True, False):
        preset = get_preset("dd", "denoising")
        net = build_network(preset.network, 3, torch.Generator().manual_seed(0))
        cfg = FitConfig(iterations=20, check_every=10, keep_heap=keep_heap)
        outputs.append(fit(net, observation, cfg, device="cpu").outputs)
    assert outputs[0].keys() == outputs[1].keys()
    for name, image in outputs[0].items():
        np.testing.assert_array_equal(image, outputs[1][name], err_msg=name)
