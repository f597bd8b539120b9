"""The runner's bookkeeping of cell records: whether a record stands for its cell, damaged
outputs set aside, temporaries of killed writers removed, versions and the checkout's
revision, and ``results.csv`` collected from the records of a grid. The folder's layout and
its reading and writing are :mod:`benchmark.runfolder`'s."""

from __future__ import annotations

import os
import subprocess
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from PIL import Image

from benchmark.methods import get_method
from benchmark.processes import process_is_running
from benchmark.results_file import results_table
from benchmark.runfolder import Record, cells_dir

if TYPE_CHECKING:
    from benchmark.suites import Cell


def is_finished(record: Record | None, *, reuse_stale: bool = False) -> bool:
    """Whether a record stands for its cell: computed successfully, by the current code
    (or by any code when ``reuse_stale``)."""
    if record is None or not record.ok:
        return False
    return reuse_stale or not record.stale_files()


def damaged_outputs(out: Path, record: Record) -> list[Path]:
    """The output image and arrays of a finished cell that are missing or cannot be read (a
    killed copy, a full disk): the cell is then recomputed."""
    png = cells_dir(out) / f"{record.key}.png"
    found = []
    try:
        with Image.open(png) as im:
            im.verify()
    except Exception:  # noqa: BLE001  Pillow raises many kinds for a bad file
        found.append(png)
    found += [p for p in record.changed_outputs(out) if p != png]  # replaced or damaged
    npz = png.with_suffix(".npz")
    if record.arrays and not npz.exists() and npz not in found:
        found.append(npz)
    elif npz.exists():
        try:
            with np.load(npz) as data:
                data.files  # noqa: B018  the archive's directory sits at its end
        except (OSError, ValueError, EOFError, zipfile.BadZipFile):
            found.append(npz)
    return list(dict.fromkeys(found))  # a file both replaced and unreadable: once


def set_aside(paths: Sequence[Path]) -> None:
    """Rename damaged files of the run's own to ``<name>.damaged`` (kept for a look)."""
    for path in paths:
        if path.exists():
            os.replace(path, path.with_name(path.name + ".damaged"))


def remove_stale_temporaries(folder: Path) -> None:
    """Delete temporary files of :func:`atomic_write` (``.<name>.<pid>.tmp``) whose writing
    process is gone (killed runs); any other file, a user's ``.notes.tmp`` too, is kept."""
    for tmp in folder.glob(".*.*.tmp"):
        try:
            pid = int(tmp.name.rsplit(".", 2)[-2])
        except ValueError:
            continue  # not a name atomic_write makes
        if not process_is_running(pid):
            tmp.unlink(missing_ok=True)


def git_revision() -> str:
    """The checkout's commit (with ``-dirty`` for local changes), or ``unknown``."""
    root = Path(__file__).resolve().parents[2]
    try:
        rev = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return f"{rev}-dirty" if dirty else rev
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def compute_kind(cell: Cell, device: str, threads: int) -> str:
    """What, besides the cell itself, determines a result: for a method that runs on a device
    (networks), the device type, and on the CPU its number of threads."""
    if not get_method(cell.method).needs_device:
        return "cpu"
    from benchmark.device import resolve_device

    kind = resolve_device(device).type
    return f"cpu-{threads}threads" if kind == "cpu" and threads != 1 else kind


def record_path(cell: Cell, out: Path, device: str, threads: int) -> Path:
    return cells_dir(out) / f"{cell.key(compute_kind(cell, device, threads))}.json"


def collect_keys(keys: Sequence[str], out: Path) -> tuple[pd.DataFrame, list[Record]]:
    """One row per (cell, output) for the records of ``keys`` that exist, and the records.

    Cells without a record are absent; failed cells give one row with ``status = failed``
    and their error; a record whose code has changed since is marked ``stale``.
    """
    records = [Record.read(cells_dir(out) / f"{key}.json") for key in keys]
    found = [record.with_staleness() for record in records if record is not None]
    return results_table(found), found
