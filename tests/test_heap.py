"""Freed memory kept for the next step (benchmark.heap): it spares the kernel's page faults,
changes no number a fit computes, is the runner's default, and a switch turns it off."""

from __future__ import annotations

import resource

import numpy as np
import pytest
import torch

from benchmark import heap
from benchmark.degradations import gaussian
from benchmark.heap import heap_kept, kept_heap
from benchmark.methods.fit import FitConfig, fit
from benchmark.methods.priors import build_network
from benchmark.runner.isolation import unit_state

GLIBC = heap_kept()  # on glibc with the switch unset: what CI machines run
needs_glibc = pytest.mark.skipif(not GLIBC, reason="only glibc's malloc is told to keep it")


def _faults_of_a_second_block(keep: bool, mib: int = 64) -> int:
    """Page faults of allocating and filling ``mib`` MiB after the same block was freed."""
    with kept_heap(keep):
        block = torch.ones(mib * 2**18)
        del block
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        block = torch.ones(mib * 2**18)
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
        del block
    return faults


@needs_glibc
def test_a_kept_heap_serves_the_next_block_without_page_faults() -> None:
    handed_back = _faults_of_a_second_block(keep=False)
    if handed_back < 1000:
        pytest.skip(f"transparent huge pages for every mapping here ({handed_back} faults)")
    assert _faults_of_a_second_block(keep=True) < handed_back / 10


def _fit(keep: bool) -> dict[str, np.ndarray]:
    # A small Deep Decoder: its 0.5 MiB activations are above glibc's first mmap threshold.
    small = {"kind": "decoder", "channels": 32, "layers": 4}
    net = build_network(small, 3, torch.Generator().manual_seed(0))
    clean = np.random.default_rng(0).random((63, 65, 3)).astype(np.float32)
    observation = gaussian(clean, 25, np.random.default_rng(1)).observation
    cfg = FitConfig(iterations=12, check_every=4, record_every=4)
    with kept_heap(keep):
        return fit(net, observation, cfg, device="cpu", monitor_reference=clean).outputs


def test_a_fit_computes_the_same_bits_with_the_heap_kept_or_handed_back() -> None:
    kept, handed_back = _fit(keep=True), _fit(keep=False)
    assert kept.keys() == handed_back.keys()
    for name in kept:
        assert np.array_equal(kept[name], handed_back[name]), name


@needs_glibc
def test_blocks_nest_and_the_outer_setting_comes_back() -> None:
    outer = heap.kept_now()  # the tests' session keeps it unless switched off
    with kept_heap(False):
        assert not heap.kept_now()
        with kept_heap(True):
            assert heap.kept_now()
            with kept_heap(False):
                assert not heap.kept_now()
            assert heap.kept_now()
            with kept_heap(True):
                heap.hand_back_from_now()  # the memory guard's fallback: this block only
                assert not heap.kept_now()
            assert heap.kept_now()
        assert not heap.kept_now()
    assert heap.kept_now() is outer


@needs_glibc
def test_a_unit_of_cells_keeps_the_heap_unless_switched_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with unit_state(1):
        assert heap.kept_now()
    monkeypatch.setenv(heap.SWITCH, "0")
    with unit_state(1):
        assert not heap.kept_now()


def test_a_switch_that_is_not_yes_or_no_is_a_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(heap.SWITCH, "0")
    assert not heap_kept()
    monkeypatch.setenv(heap.SWITCH, "sometimes")
    with pytest.raises(ValueError, match="write 1 to keep freed memory"):
        heap_kept()
