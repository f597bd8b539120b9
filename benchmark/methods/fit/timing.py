"""One step's time: what the run's estimate multiplies by the steps a unit takes."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from benchmark.degradations import Observation
from benchmark.device import resolve_device
from benchmark.methods.fit.config import FitConfig
from benchmark.methods.fit.devices import device_settings, step_gflop
from benchmark.methods.fit.loop import FitState, train
from benchmark.methods.networks import FittedNetwork


def time_steps(
    nets: Sequence[FittedNetwork],
    observations: Sequence[Observation],
    targets: Sequence[np.ndarray],
    cfg: FitConfig,
    device: str | torch.device,
    *,
    warmup: int = 2,
    steps: int = 5,
    min_seconds: float = 0.5,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """Seconds of one step of ``nets`` fitted together to ``observations``: ``warmup``
    steps, then timed steps until ``min_seconds`` have passed or ``steps`` were taken (one
    8-second step at 512x512 on a CPU is measure enough; a 5 ms one on a GPU is not).
    0.0 when the fit is refused before any work (memory): its cells will fail with the
    reason."""
    dev = resolve_device(device)
    gflop = step_gflop(nets[0], observations[0]) if dev.type == "cpu" else 0.0
    with device_settings(dev, cfg, gflop):
        try:
            state = FitState(nets, observations, cfg, list(range(len(nets))), dev, targets)
        except MemoryError:
            return 0.0
        train(state, None, range(1, warmup + 1))
        _synchronize(dev)
        started, done, elapsed = clock(), 0, 0.0
        while done < steps:
            it = warmup + done + 1
            train(state, None, range(it, it + 1))
            _synchronize(dev)
            done, elapsed = done + 1, clock() - started
            if elapsed >= min_seconds:
                break
        return elapsed / done


def _synchronize(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
