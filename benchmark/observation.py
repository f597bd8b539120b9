"""A cell's observation and ground truth, from its seed alone: what the runner restores and
scores, and what ``dipbench rescore`` scores a saved output against (no method imported)."""

from __future__ import annotations

from typing import Any

import numpy as np

from benchmark import datasets
from benchmark.arrays import crop_to_size
from benchmark.degradation_kinds import degrade
from benchmark.grid import Cell


def prepare(cell: Cell) -> tuple[Any, np.ndarray]:
    """The cell's degraded observation and clean target (deterministic from its seed)."""
    clean = datasets.load_image(cell.dataset, cell.image, cell.registry or None)
    if cell.crop:
        clean = crop_to_size(clean, cell.crop)
    degraded = degrade(
        clean,
        cell.degradation,
        cell.level,
        np.random.default_rng(cell.degradation_seed),
        **cell.degradation_options,
    )
    return degraded.observation, degraded.target
