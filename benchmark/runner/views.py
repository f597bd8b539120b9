"""Views of observations: what the report's image grid shows of a cell's input.

The grid shows, for the first few images of a suite's first degradation level, the clean
image, the degraded input and each method's output. The run saves the first two here, as
8-bit thumbnails with the PSNR of the input, so that the report reads them from the run
folder and never re-makes an observation (nor needs the test images).
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmark.arrays import to_uint8
from benchmark.degradations import Observation
from benchmark.metrics import get_protocol
from benchmark.runfolder import GRID_IMAGES, VIEW_FIELDS, View, views_dir
from benchmark.suites import Cell

VIEW_MAX_SIDE = 256  # the grid shows each panel at about 150 pixels


def grid_cells(cells: Sequence[Cell], max_images: int = GRID_IMAGES) -> list[Cell]:
    """One cell per observation the grid shows: the first ``max_images`` images of the
    first degradation level, first repetition."""
    if not cells:
        return []
    first = (cells[0].degradation, cells[0].level)
    chosen: dict[tuple[str, str], Cell] = {}
    for cell in cells:
        if (cell.degradation, cell.level) == first and cell.repetition == 0:
            chosen.setdefault((cell.dataset, cell.image), cell)
    return list(chosen.values())[:max_images]


def observation_view(observation: Observation, target: np.ndarray) -> np.ndarray:
    """The observation as the grid shows it: at the output's size (a low-resolution input
    repeated pixel by pixel), clipped to [0, 1]."""
    shown = observation.y
    if shown.shape[:2] != target.shape[:2]:
        repeat = (target.shape[0] // shown.shape[0], target.shape[1] // shown.shape[1], 1)
        shown = np.kron(shown, np.ones(repeat, shown.dtype))
    return np.clip(shown, 0, 1)


def thumbnail(image: np.ndarray, max_side: int = VIEW_MAX_SIDE) -> np.ndarray:
    """``image`` as 8 bits, shrunk by an integer factor (area average) until it fits
    ``max_side``: the quick profile's crops are kept whole."""
    step = -(-max(image.shape[:2]) // max_side)  # ceiling division
    if step > 1:
        h, w = (image.shape[0] // step) * step, (image.shape[1] // step) * step
        image = image[:h, :w].reshape(h // step, step, w // step, step, -1).mean(axis=(1, 3))
    return to_uint8(image)


def save_views(cells: Sequence[Cell], out: Path) -> int:
    """Write the view of each observation the grid shows that has none yet; returns how
    many were written. The observation is re-made from the cell's seed, as the cell made it."""
    from benchmark.observation import prepare

    written = 0
    for cell in grid_cells(cells):
        path = views_dir(out) / f"{cell.observation_key}.npz"
        if path.is_file() and _readable(path):
            continue  # a damaged view (a full disk, a killed copy) is made again
        observation, target = prepare(cell)
        shown = observation_view(observation, target)
        View(
            identity={name: getattr(cell, name) for name in VIEW_FIELDS},
            target=thumbnail(target),
            observation=thumbnail(shown),
            psnr=get_protocol(cell.protocol).score(shown, target)["psnr"],
        ).write(path)
        written += 1
    return written


def _readable(path: Path) -> bool:
    try:
        View.read(path)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return False
    return True
