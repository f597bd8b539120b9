"""``dipbench speed`` for a network method that fits its own loop: through its contract.

The full speed report (:mod:`benchmark.speed`) compares the fitting loop that preset-configured
methods share with a plain eager loop; a user's network method has no such loop to compare.
What its contract says is measured instead, the way the run's estimate measures it
(:func:`benchmark.runner.estimate.contract_step`): one step of one cell (its ``measure_step``
where the method declares one, else a whole fit of ``iterations`` steps divided by them), and,
where cells may be fitted together, one step of a batch of them against the same cells one at
a time, on synthetic noisy images of the sizes asked.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from benchmark.device import resolve_device
from benchmark.heap import kept_heap
from benchmark.methods import get_method, run
from benchmark.runner.estimate import contract_step
from benchmark.speed import noisy_cells


@dataclass
class ContractSpeed:
    """What ``dipbench speed`` measured of a network method through its contract."""

    method: str
    device: str
    threads: int
    size: int
    iterations: int  # the steps of one denoising cell, by the contract
    step_seconds: float  # one step of one cell
    how: str  # how step_seconds was measured
    batch: int = 0  # cells fitted together (0: the method fits each cell alone)
    batch_size: int = 0
    batched_step_seconds: float = math.nan  # one step of the whole batch
    alone_step_seconds: float = math.nan  # one step of one cell of batch_size


def measure_contract(
    method: str,
    *,
    size: int = 128,
    batch: int = 16,
    batch_size: int = 32,
    device: str = "auto",
    options: dict[str, Any] | None = None,
    steps: int = 10,
) -> ContractSpeed:
    """One step of one ``size`` cell and, if the contract batches, of ``batch`` cells of
    ``batch_size``, for ``method`` (a registered network method) with ``options``.

    Raises
    ------
    KeyError
        ``method`` is not registered, or fits no network.
    """
    info = get_method(method)
    if info.network is None:
        raise KeyError(f"{info.name} fits no network: dipbench speed measures network methods")
    options = dict(options or {})
    dev = resolve_device(device)
    iterations = info.network.iterations("denoising", None, **options)
    seconds, how = _one_step(method, 1, size, str(dev), options, steps, iterations)
    report = ContractSpeed(
        info.name, str(dev), torch.get_num_threads(), size, iterations, seconds, how
    )
    if batch > 1 and info.network.can_batch("denoising", None, **options):
        report.batch, report.batch_size = batch, batch_size
        report.alone_step_seconds, _ = _one_step(
            method, 1, batch_size, str(dev), options, steps, iterations
        )
        report.batched_step_seconds, _ = _one_step(
            method, batch, batch_size, str(dev), options, steps, iterations
        )
    return report


def _one_step(
    method: str,
    count: int,
    size: int,
    device: str,
    options: dict[str, Any],
    steps: int,
    iterations: int,
) -> tuple[float, str]:
    """Seconds of one step of ``count`` cells fitted together, and how it was measured (with
    freed memory kept for the next step, as a run's units fit: :mod:`benchmark.heap`)."""
    network = get_method(method).network
    observations, cleans = noisy_cells(count, size)
    with kept_heap():
        seconds = contract_step(
            network, observations, cleans, device, options, steps=steps, warmup=2, min_seconds=0.5
        )
    if seconds is not None:
        return seconds, f"measure_step, {steps} steps after 2 of warm-up"
    started = time.perf_counter()
    with kept_heap():
        for observation in observations:
            run(method, observation, seed=0, device=device, **options)
    whole = time.perf_counter() - started
    return whole / max(1, iterations), f"a whole fit of {iterations} steps, divided by them"


def format_contract(report: ContractSpeed) -> str:
    """The report's lines, as ``dipbench speed`` prints them."""
    lines = [
        f"dipbench speed: {report.method} on {report.device} "
        f"({report.threads} CPU thread(s)), through its network contract",
        f"  one cell at {report.size}x{report.size}: {report.step_seconds * 1e3:.1f} ms a step "
        f"({report.how}); a cell of {report.iterations} steps: "
        f"{report.step_seconds * report.iterations:.1f} s",
    ]
    if report.batch:
        alone = report.batch * report.alone_step_seconds
        gain = alone / report.batched_step_seconds if report.batched_step_seconds > 0 else np.nan
        lines.append(
            f"  {report.batch} cells at {report.batch_size}x{report.batch_size} fitted "
            f"together: {report.batched_step_seconds * 1e3:.1f} ms a step, one at a time "
            f"{alone * 1e3:.1f} ms: {gain:.2f}x"
        )
    else:
        lines.append("  its cells are fitted one at a time (its contract does not batch them)")
    lines.append(
        "  (the comparison with a plain eager loop, the convolution throughput and the suite "
        "estimates are for the methods configured by presets)"
    )
    return "\n".join(lines)
