"""Cell records and the files of a run folder.

Each finished cell is one record, ``<out>/cells/<key>.json``, written atomically (temporary
file, then rename), next to its output image ``<key>.png``, its curves and snapshots
``<key>.npz`` (methods that fit a network) and the view of its observation
``views/<observation key>.npz`` (see :mod:`benchmark.runner.cell`). The key hashes what the
cell is (image, degradation, level, method, options, seeds, package version); each record also
carries the fingerprint of the code that computed it (:mod:`benchmark.provenance`), so a re-run
skips finished cells whose code is unchanged and recomputes the others. ``results.csv`` is
collected from the records of the current grid (a record whose code has changed since is
marked ``stale``) and ``suite.json`` says what the folder is a run of. The report reads these
files and nothing else.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from PIL import Image

from benchmark import __version__
from benchmark.methods.registry import get_method
from benchmark.provenance import changed_files, code_identity

if TYPE_CHECKING:
    from benchmark.suites import Cell


RESULT_COLUMNS = [
    "suite",
    "profile",
    "dataset",
    "image",
    "task",
    "degradation",
    "level",
    "severity",
    "method",
    "output",
    "oracle",
    "repetition",
    "seed",
    "psnr",
    "ssim",
    "seconds",
    "device",
    "iterations",
    "stop_iteration",
    "best_iteration",
    "preset",
    "status",
    "error",
    "trivial_psnr",
    "suspect",
    "es_detected",
    "stale",
    "code",
    "key",
    "version",
    "git_revision",
]


RUNS = Path("runs")


def default_out(profile: str, suite: str) -> Path:
    """``runs/<profile>/<suite>`` in the working folder: never the committed ``reports/``
    (which ``dipbench publish`` replaces, from a complete run only)."""
    return RUNS / profile / suite


def cells_dir(out: Path) -> Path:
    return Path(out) / "cells"


def views_dir(out: Path) -> Path:
    """Where the run keeps each observation's view (what the report's image grid shows)."""
    return cells_dir(out) / "views"


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temporary file in the same folder, then rename: readers never see a
    half-written file, and a killed writer leaves only a temporary file behind."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(path: Path, content: Any) -> None:
    atomic_write(path, lambda p: p.write_text(json.dumps(content, indent=1, default=_jsonable)))


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def read_record(path: Path) -> dict[str, Any] | None:
    """A cell record, or None if it is absent, unreadable or not a record (valid JSON of
    another shape): such a cell is recomputed and its file replaced."""
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(record, dict) or not {"key", "cell", "status"} <= set(record):
        return None
    if not isinstance(record["cell"], dict) or not isinstance(record.get("rows", []), list):
        return None
    return record


def stale_files(record: dict[str, Any], method: str) -> list[str]:
    """The files whose change since ``record`` was written makes it stale (empty: its code is
    the current code). A method that cannot be imported any more is stale too."""
    try:
        current = code_identity(method)
    except (KeyError, ImportError, OSError, SyntaxError) as err:
        return [f"(cannot read the method's code: {err})"]
    return changed_files(record.get("code"), current)


def is_finished(record: dict[str, Any] | None, method: str, *, reuse_stale: bool = False) -> bool:
    """Whether a record stands for its cell: computed successfully, by the current code
    (or by any code when ``reuse_stale``)."""
    if record is None or record.get("status") != "ok":
        return False
    return reuse_stale or not stale_files(record, method)


def damaged_outputs(out: Path, record: dict[str, Any]) -> list[Path]:
    """The output image and arrays of a finished cell that are missing or cannot be read (a
    killed copy, a full disk): the cell is then recomputed."""
    png = cells_dir(out) / f"{record['key']}.png"
    found = []
    try:
        with Image.open(png) as im:
            im.verify()
    except Exception:  # noqa: BLE001  Pillow raises many kinds for a bad file
        found.append(png)
    npz = png.with_suffix(".npz")
    if record.get("arrays") and not npz.exists():
        found.append(npz)
    elif npz.exists():
        try:
            with np.load(npz) as data:
                data.files  # noqa: B018  the archive's directory sits at its end
        except (OSError, ValueError, EOFError, zipfile.BadZipFile):
            found.append(npz)
    return found


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


def process_is_running(pid: int) -> bool:
    """Whether process ``pid`` exists and has not exited.

    A killed process stays in the process table as a zombie until its parent reaps it; an
    orphaned worker waits for PID 1, which can take seconds, and ``kill(pid, 0)`` still
    succeeds on it. Linux's ``/proc`` tells a zombie apart; elsewhere ``kill`` decides.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:  # reaped since, or no /proc on this system
        return not Path("/proc/self/stat").exists()
    except OSError:
        return True
    state = stat.rsplit(")", 1)[-1].split()[0]  # the command name in (...) may hold spaces
    return state not in ("Z", "X")  # zombie, dead


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


def versions() -> dict[str, str]:
    """Versions of everything that can change a number."""
    import cv2
    import skimage
    import torch

    return {
        "dipbench": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "scikit-image": skimage.__version__,
        "opencv": cv2.__version__,
        "bm3d": importlib.metadata.version("bm3d"),
    }


def compute_kind(cell: Cell, device: str, threads: int) -> str:
    """What, besides the cell itself, determines a result: for a method that runs on a device
    (networks), the device type, and on the CPU its number of threads."""
    if not get_method(cell.method).needs_device:
        return "cpu"
    from benchmark.methods.fit import resolve_device

    kind = resolve_device(device).type
    return f"cpu-{threads}threads" if kind == "cpu" and threads != 1 else kind


def record_path(cell: Cell, out: Path, device: str, threads: int) -> Path:
    return cells_dir(out) / f"{cell.key(compute_kind(cell, device, threads))}.json"


def _typed(table: pd.DataFrame) -> pd.DataFrame:
    for column in ("severity", "iterations", "stop_iteration", "best_iteration"):
        table[column] = table[column].astype("Int64")
    return table


def with_staleness(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with ``stale`` set: whether its code differs from the current code."""
    if record.get("status") == "ok":
        record["stale"] = bool(stale_files(record, record["cell"]["method"]))
    return record


def record_rows(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The results.csv rows of one record."""
    cell, info = record["cell"], record.get("info", {})
    base = {
        "suite": cell["suite"],
        "profile": cell["profile"],
        "dataset": cell["dataset"],
        "image": cell["image"],
        "task": cell["task"],
        "degradation": cell["degradation"],
        "level": cell["level"],
        "severity": cell["severity"],
        "method": cell["method_key"],
        "repetition": cell["repetition"],
        "seed": cell["method_seed"],
        "seconds": record.get("seconds"),
        "device": record.get("device"),
        "iterations": info.get("iterations"),
        "stop_iteration": info.get("es_stop_iteration"),
        "preset": info.get("preset"),
        "status": record.get("status"),
        "error": record.get("error", ""),
        "trivial_psnr": (record.get("trivial") or {}).get("psnr", np.nan),
        "suspect": "; ".join(record.get("suspect", [])),
        # ES-WMV detected a stop when its patience ran out (networks with an `es` output).
        "es_detected": (
            info["es_stop_iteration"] is not None if "es_stop_iteration" in info else None
        ),
        "stale": bool(record.get("stale", False)),
        "code": (record.get("code") or {}).get("fingerprint", ""),
        "key": record["key"],
        "version": record.get("version"),
        "git_revision": record.get("git_revision"),
    }
    if record.get("status") != "ok":
        return [{**base, "output": "", "oracle": False, "psnr": np.nan, "ssim": np.nan}]
    iteration_of = {
        "es": info.get("es_iteration"),
        "best_loss": info.get("best_loss_iteration"),
        "oracle": info.get("oracle_iteration"),
        "last": info.get("iterations"),
    }
    return [
        {**base, **row, "best_iteration": iteration_of.get(row["output"])} for row in record["rows"]
    ]


def write_results(table: pd.DataFrame, out: Path) -> Path:
    path = Path(out) / "results.csv"
    atomic_write(path, lambda p: table.to_csv(p, index=False))
    return path


def collect_keys(keys: Sequence[str], out: Path) -> pd.DataFrame:
    """One row per (cell, output) for the records of ``keys`` that exist.

    Cells without a record are absent; failed cells give one row with ``status = failed``
    and their error; a record whose code has changed since is marked ``stale``.
    """
    rows = []
    for key in keys:
        record = read_record(cells_dir(out) / f"{key}.json")
        if record is not None:
            rows.extend(record_rows(with_staleness(record)))
    return _typed(pd.DataFrame(rows, columns=RESULT_COLUMNS))
