"""GPU checks (``make gpu-check``): skipped without a CUDA GPU."""

from __future__ import annotations

import statistics

import pytest
import torch

from benchmark.methods.fit import FitConfig, fit_many
from benchmark.metrics import psnr
from benchmark.speed import fresh_networks, noisy_cells, setup_for

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.mark.parametrize("size", [32, 128])
def test_batched_cuda_fits_equal_lone_fits_in_distribution(size: int) -> None:
    """On CUDA a batch equals its lone fits up to float rounding (cuDNN's kernels differ per
    shape), which DIP's training amplifies: over seeds, each mean within the other's range."""
    seeds = list(range(8))
    setup = setup_for("dip", suite="cifar10-noise", profile="quick")
    observations, cleans = noisy_cells(1, size)
    cfg = FitConfig.from_mapping({**setup.fit.__dict__, "iterations": 300, "snapshots": []})
    lone = [
        fit_many([net], observations, cfg, seeds=[s], device="cuda")[0]
        for net, s in zip(fresh_networks(setup, len(seeds)), seeds, strict=True)
    ]
    together = fit_many(
        fresh_networks(setup, len(seeds)),
        observations * len(seeds),
        cfg,
        seeds=seeds,
        device="cuda",
    )
    a = [psnr(r.outputs["last"], cleans[0]) for r in lone]
    b = [psnr(r.outputs["last"], cleans[0]) for r in together]
    assert min(a) <= statistics.mean(b) <= max(a), (a, b)
    assert min(b) <= statistics.mean(a) <= max(b), (a, b)


def test_the_estimate_measures_on_the_gpu() -> None:
    from benchmark.runner.estimate import estimate
    from benchmark.suites import load_suite

    cells = load_suite("denoising-color", "full", images_subset=["kodim03"]).cells()
    measured = estimate(cells, "cuda")
    assert measured.seconds > 0 and all(p["seconds_each"] > 0 for p in measured.parts)
