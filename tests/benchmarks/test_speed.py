"""Speed benchmarks (pytest-benchmark): `make bench`, not part of `make test`.

Every figure is taken with freed memory kept for the next step (``benchmark.heap``), as a
run's units fit (the tests' session keeps it: ``tests/conftest.py``). Glibc's default is
measured in a fresh process with ``DIPBENCH_KEEP_HEAP=0 make bench``: a process that has
called ``mallopt`` cannot have glibc's own thresholds back.

Results are saved as JSON under .benchmarks/ so runs can be compared
(`pytest tests/benchmarks --benchmark-only --benchmark-compare`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark.degradations import gaussian
from benchmark.methods import restore
from benchmark.methods.fit import FitConfig, fit
from benchmark.methods.priors import build_network, get_preset
from benchmark.runner import run_cell
from benchmark.suites import load_suite


def _observation(size: int, channels: int = 3):
    clean = np.random.default_rng(0).random((size, size, channels)).astype(np.float32)
    return gaussian(clean, 25, np.random.default_rng(1)).observation


def _step_benchmark(benchmark, method: str, preset: str, size: int) -> None:
    """One optimisation step (forward, loss, backward, Adam, bookkeeping), 5 per round."""
    net = build_network(get_preset(method, preset).network, 3, torch.Generator().manual_seed(0))
    observation = _observation(size)
    cfg = FitConfig(iterations=5, reg_noise_std=0.03, check_every=5, record_every=5)
    fit(net, observation, cfg, device="cpu")  # warm-up
    benchmark.pedantic(
        fit, args=(net, observation, cfg), kwargs={"device": "cpu"}, rounds=3, iterations=1
    )
    benchmark.extra_info["steps_per_round"] = cfg.iterations


@pytest.mark.parametrize("size", [128, 256])
def test_dip_step(benchmark, size: int) -> None:
    _step_benchmark(benchmark, "dip", "denoising", size)


def test_dd_step_256(benchmark) -> None:
    _step_benchmark(benchmark, "dd", "denoising", 256)


def test_dd_step_512(benchmark) -> None:
    """The Deep Decoder at 512x512 (issue 39's figure: 846 ms a step with glibc's default on
    the CI machines; 224 ms with the heap kept, docs/speed.md)."""
    _step_benchmark(benchmark, "dd", "denoising", 512)


def test_bm3d_256(benchmark) -> None:
    observation = _observation(256, channels=1)
    benchmark.pedantic(restore, args=("bm3d", observation), rounds=3, iterations=1)


def test_ci_cell(benchmark, tmp_path: Path, mirror: Path) -> None:
    """A whole `ci` cell: load, degrade, DIP fit, score, write the record."""
    cell = next(c for c in load_suite("inpainting-table1", "ci").cells() if c.method == "dip")
    counter = iter(range(100))
    benchmark.pedantic(
        lambda: run_cell(cell, tmp_path / str(next(counter)), "cpu"), rounds=3, iterations=1
    )


@pytest.mark.parametrize("profile", ["full", "quick"])
@pytest.mark.parametrize("together", [False, True], ids=["one_at_a_time", "batched"])
def test_sixteen_cifar_cells(benchmark, profile: str, together: bool) -> None:
    """16 CIFAR-size cells (32x32) of the cifar10-noise DIP network, 20 steps each: compare
    the two ids' means for the batching gain (cell-steps per second)."""
    from benchmark.methods.fit import fit_many
    from benchmark.speed import fresh_networks, noisy_cells, setup_for

    setup = setup_for("dip", suite="cifar10-noise", profile=profile)
    observations, _ = noisy_cells(16, 32)
    cfg = FitConfig.from_mapping({**setup.fit.__dict__, "iterations": 20, "snapshots": []})
    seeds = list(range(16))

    def run() -> None:
        nets = fresh_networks(setup, 16)
        if together:
            fit_many(nets, observations, cfg, seeds=seeds, device="cpu")
        else:
            for net, observation, seed in zip(nets, observations, seeds, strict=True):
                fit(net, observation, cfg, seed=seed, device="cpu")

    benchmark.pedantic(run, rounds=2, iterations=1, warmup_rounds=1)
    benchmark.extra_info["cell_steps_per_round"] = 16 * cfg.iterations


@pytest.mark.parametrize("variant", ["plain_eager", "dipbench_loop"])
def test_dip_step_128_against_plain_eager(benchmark, variant: str) -> None:
    """5 steps of DIP's default network at 128x128: a plain eager loop (forward, MSE,
    zero_grad, backward, Adam) against our whole loop with its bookkeeping."""
    from benchmark.speed import (
        eager_reference,
        fresh_networks,
        noisy_cells,
        our_runs,
        settled,
        setup_for,
    )

    setup = setup_for("dip")
    observations, cleans = noisy_cells(1, 128)
    if variant == "plain_eager":
        run = eager_reference(
            fresh_networks(setup, 1)[0], observations[0], setup.fit, torch.device("cpu")
        )
    else:
        cpu = torch.device("cpu")
        loop = our_runs(setup, observations[0], cleans[0], cpu)[1]
        # With the convolution kernels a fit of this size runs with.
        run = settled(loop, cpu, setup.fit, fresh_networks(setup, 1)[0], observations[0])
    benchmark.pedantic(run, args=(5,), rounds=3, iterations=1, warmup_rounds=1)
    benchmark.extra_info["steps_per_round"] = 5


@pytest.mark.parametrize("command", ["list", "restore_tv"])
def test_command_start(benchmark, tmp_path: Path, command: str) -> None:
    """A command that fits no network, in a fresh interpreter as a user types it (issue 41:
    under 1.5 s here): `dipbench list`, and `restore` with TV on a 64x64 image."""
    import subprocess
    import sys

    from PIL import Image

    image = tmp_path / "noisy.png"
    Image.fromarray(np.full((64, 64, 3), 99, np.uint8)).save(image)
    argv = {
        "list": ["list"],
        "restore_tv": [
            "restore", str(image), "--task", "denoising", "--method", "tv", "--sigma", "25",
            "--out", str(tmp_path / "out.png"),
        ],
    }[command]  # fmt: skip
    run = [sys.executable, "-m", "benchmark", *argv]
    benchmark.pedantic(
        lambda: subprocess.run(run, check=True, capture_output=True), rounds=3, iterations=1
    )
