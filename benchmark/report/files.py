"""What a report reads and how it writes: the run folder's manifest, records and arrays, and
atomic writes of tables and figures (two runs sharing a folder rewrite its report, and neither
may read the other's half-written file)."""

from __future__ import annotations

import io
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # figures are files; no display needed

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from benchmark.runfolder import (  # noqa: E402
    Manifest,
    Record,
    View,
    atomic_write,
    cells_dir,
    views_dir,
    why_unusable,
)


@dataclass
class Run:
    """A run folder as the report reads it."""

    manifest: Manifest  # its suite.json
    records: list[Record]  # each with ``stale`` set
    missing_cells: int = 0  # cells of its grid without a readable record
    unusable: list[str] = field(default_factory=list)  # "<file>: why", records left out
    changed_outputs: list[str] = field(default_factory=list)  # output files not as written


def load_run(out: Path) -> Run:
    """The run's ``suite.json`` and the records of its grid (all records if it lists none),
    each with ``stale`` set when its code has changed since it was computed."""
    out = Path(out)
    meta_path = out / "suite.json"
    if not meta_path.is_file():
        raise FileNotFoundError(
            f"{out} is not a run folder: no suite.json (run dipbench run first)"
        )
    meta = Manifest.read(out)
    folder = cells_dir(out)
    paths = (
        [folder / f"{k}.json" for k in meta.keys] if meta.keys else sorted(folder.glob("*.json"))
    )
    records, unusable, outputs = [], [], []
    for path in paths:
        record = Record.read(path)
        if record is not None:
            records.append(record.with_staleness())
            changed = record.changed_outputs(out)
            outputs += [str(p.name) for p in changed]
            for output in changed:
                print(
                    f"warning: {output} is not the file its run wrote (damaged, replaced or "
                    "gone): publish refuses the run until the suite is run again to remake it",
                    file=sys.stderr,
                )
        elif path.is_file():  # a record that is not its cell's is evidence of nothing
            why = why_unusable(path)
            unusable.append(f"{path.name}: {why}")
            refused(path, why)
    missing = len(paths) - len(records) - len(unusable)
    return Run(meta, records, missing, unusable, outputs)


DAMAGED = (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError)


def refused(path: Path, why: str) -> None:
    """Say that a cell record is left out, and why (the report goes on without it)."""
    print(
        f"warning: {path} is left out: {why} (delete it and run the suite again to remake it)",
        file=sys.stderr,
    )


def damaged(path: Path, err: BaseException) -> None:
    """Say that a file of the run folder cannot be read (the report goes on without it)."""
    print(
        f"warning: {path} cannot be read ({type(err).__name__}: {err}); the report leaves it "
        "out (delete it and run the suite again to remake it)",
        file=sys.stderr,
    )


def cell_arrays(out: Path, key: str) -> dict[str, np.ndarray]:
    """A cell's curves and snapshots (``<key>.npz``; empty for a method without them, or
    when the file is damaged: said on stderr)."""
    path = cells_dir(out) / f"{key}.npz"
    if not path.is_file():
        return {}
    try:
        with np.load(path) as data:
            return {k: data[k] for k in data.files}
    except DAMAGED as err:
        damaged(path, err)
        return {}


def has_curves(out: Path, key: str) -> bool:
    """Whether a cell saved curves (a fitted network), read from the archive's directory
    without decompressing it."""
    path = cells_dir(out) / f"{key}.npz"
    if not path.is_file():
        return False
    try:
        with np.load(path) as data:
            return "curve_iteration" in data.files
    except DAMAGED as err:
        damaged(path, err)
        return False


def write_lines(path: Path, lines: list[str]) -> None:
    """A text file, one line per item."""
    atomic_write(path, lambda p: p.write_text("\n".join(lines) + "\n", encoding="utf-8"))


def save_figure(fig: Any, path: Path) -> None:
    """Save and close a figure as PNG. Every report file is written atomically: two runs
    sharing a folder rewrite its report, and neither may read the other's half-written file."""
    atomic_write(path, lambda p: fig.savefig(p, dpi=80, format="png"))
    plt.close(fig)


def save_small(fig: Any, path: Path) -> None:
    """Save a figure as a palette PNG: photographs in a grid compress poorly in RGB."""
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=80, format="png")
    plt.close(fig)
    with Image.open(buffer) as im:
        small = im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    atomic_write(path, lambda p: small.save(p, format="PNG", optimize=True))


def save_gif(frames: list[Image.Image], path: Path) -> None:
    """An animation of ``frames``, 0.4 s each, looping."""
    atomic_write(
        path,
        lambda p: frames[0].save(
            p, format="GIF", save_all=True, append_images=frames[1:], duration=400, loop=0
        ),
    )


def load_views(out: Path) -> dict[tuple, View]:
    """The views of observations the run saved, by (dataset, image, degradation, level,
    repetition); a damaged one is left out (said on stderr)."""
    views = {}
    for path in sorted(views_dir(out).glob("*.npz")):
        try:
            view = View.read(path)
            views[view.key] = view
        except DAMAGED as err:
            damaged(path, err)
    return views


def output_image(out: Path, record: Record) -> np.ndarray | None:
    """A cell's saved default output as 8-bit ``(H, W, C)``, or None."""
    png = cells_dir(out) / f"{record.key}.png"
    if not png.is_file():
        return None
    try:
        with Image.open(png) as im:
            pixels = np.asarray(im)
    except DAMAGED as err:
        damaged(png, err)
        return None
    return pixels[..., None] if pixels.ndim == 2 else pixels


def number_or_blank(value: Any, pattern: str) -> str:
    """``pattern`` filled with ``value``, or an empty table cell for a missing value."""
    import pandas as pd

    return "" if pd.isna(value) else pattern.format(value)
