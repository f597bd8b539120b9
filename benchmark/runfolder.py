"""The run folder: its layout, its files and how they are written and read.

The runner writes a run folder and the report reads it; this module is all they share, and it
imports neither torch nor a method (``import benchmark.report`` stays light). Each finished
cell is one record, ``<out>/cells/<key>.json``, written atomically (temporary file, then
rename), next to its output image ``<key>.png``, its curves and snapshots ``<key>.npz``
(methods that fit a network) and the view of its observation ``views/<observation key>.npz``.
The key hashes what the cell is (image, degradation, level, method, options, seeds, package
version); each record also carries the fingerprint of the code that computed it
(:mod:`benchmark.provenance`), and a record whose code has changed since is ``stale``.
``results.csv`` holds one row per (cell, output) of the current grid and ``suite.json`` says
what the folder is a run of.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmark.provenance import changed_files, code_identity

GRID_IMAGES = 3  # images in the report's grid
# A network output this far under its image's trivial baseline is suspect (records' `suspect`
# at the full profile; the tables' under-baseline lines at any profile).
SUSPECT_UNDER_TRIVIAL_DB = 1.0
VIEW_FIELDS = ("dataset", "image", "degradation", "level", "repetition")  # a view's identity

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


@dataclass
class Manifest:
    """A run folder's ``suite.json``: what the folder is a run of (the suite, its profile and
    thread count), the suite's settings the report shows, and the keys of the grid. The one
    declaration of the file: the runner writes it, the runner and the report read it.

    A field that an older dipbench did not write takes its default when read; a key that a
    newer one writes is dropped.
    """

    suite: str
    profile: str
    profile_defined: bool = True  # False: the suite has no such profile (its full settings)
    title: str = ""
    task: str = ""
    protocol: str = ""
    datasets: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)  # "<set>/<image>"
    crop: int | None = None
    paper: dict[str, Any] = field(default_factory=dict)
    notes: str = ""
    report: dict[str, Any] = field(default_factory=dict)
    methods: list[dict[str, Any]] = field(default_factory=list)  # MethodSpec fields
    trivial: str = ""  # the task's trivial baseline ("observation" or a method's name)
    source: str = ""  # the suite file, relative to the package or to the run folder
    device: str = "auto"
    threads: int | None = None
    keys: list[str] = field(default_factory=list)

    @classmethod
    def from_json(cls, data: Any) -> Manifest:
        """The manifest that ``data`` (the parsed JSON) states.

        Raises
        ------
        ValueError
            ``data`` is not a run manifest (no suite or profile).
        """
        if not isinstance(data, dict) or "suite" not in data or "profile" not in data:
            raise ValueError("not a run manifest (no suite and profile)")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def read(cls, out: Path) -> Manifest:
        """``out/suite.json`` (``OSError``, ``ValueError`` when it is absent or not one)."""
        return cls.from_json(json.loads((Path(out) / "suite.json").read_text()))

    def write(self, out: Path) -> None:
        write_json(Path(out) / "suite.json", self.to_json())


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


def typed_results(table: pd.DataFrame) -> pd.DataFrame:
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


def savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez_compressed`` to exactly ``path`` (given a name, numpy would add ``.npz``
    to an atomic write's temporary name)."""
    with path.open("wb") as handle:
        np.savez_compressed(handle, **arrays)
