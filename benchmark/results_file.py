"""A run folder's derived tables: ``results.csv`` (one row per cell and output, rebuilt from
the records) and ``provenance.json`` (what each code and inputs fingerprint of its rows hashed),
written together; and whether a ``results.csv`` is what the records beside it say. No torch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmark.runfolder import Record, atomic_write, cells_dir, why_unusable, write_json

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
    "implementation",
    "options",
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
    "inputs",
    "key",
    "version",
    "git_revision",
]


def results_table(records: list[Record]) -> pd.DataFrame:
    """``results.csv`` of ``records``, in their order: :data:`RESULT_COLUMNS`, with the column
    of each metric a rescore added (:mod:`benchmark.scoring`) after ``ssim``."""
    rows = [row for record in records for row in record.result_rows()]
    return typed_results(pd.DataFrame(rows, columns=result_columns(records)))


def result_columns(records: list[Record]) -> list[str]:
    """:data:`RESULT_COLUMNS` and the added metrics of ``records`` (in the order they were
    added), after ``ssim``."""
    added = list(dict.fromkeys(name for record in records for name in record.metrics))
    at = RESULT_COLUMNS.index("ssim") + 1
    return RESULT_COLUMNS[:at] + added + RESULT_COLUMNS[at:]


def metric_columns(table: pd.DataFrame) -> list[str]:
    """The metric columns of a results table: PSNR and SSIM, then each a rescore added."""
    built_in = [c for c in ("psnr", "ssim") if c in table.columns]
    return built_in + [c for c in table.columns if c not in RESULT_COLUMNS]


def typed_results(table: pd.DataFrame) -> pd.DataFrame:
    for column in ("severity", "iterations", "stop_iteration", "best_iteration"):
        table[column] = table[column].astype("Int64")
    return table


def write_results(table: pd.DataFrame, out: Path, records: list[Record]) -> Path:
    """``results.csv`` and, beside it, ``provenance.json``: what each of its ``code`` and
    ``inputs`` fingerprints hashed (:func:`provenance_of`), so that whether a table was made
    by the current code is known from the folder alone (a published report has no records)."""
    path = Path(out) / "results.csv"
    write_json(Path(out) / PROVENANCE, provenance_of(records))
    atomic_write(path, lambda p: table.to_csv(p, index=False))
    return path


PROVENANCE = "provenance.json"


def provenance_of(records: list[Record]) -> dict[str, Any]:
    """``{"code": {fingerprint: code identity}, "inputs": {fingerprint: parts}}`` of records."""
    code = {r.code["fingerprint"]: r.code for r in records if r.code and "fingerprint" in r.code}
    inputs = {r.inputs["fingerprint"]: r.inputs["parts"] for r in records if r.inputs}
    return {"code": dict(sorted(code.items())), "inputs": dict(sorted(inputs.items()))}


def read_provenance(out: Path) -> dict[str, Any] | None:
    """A folder's ``provenance.json`` (None: absent or unreadable)."""
    try:
        content = json.loads((Path(out) / PROVENANCE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return content if isinstance(content, dict) else None


def disagreements(out: Path, table: pd.DataFrame) -> list[str]:
    """Where a run folder's ``results.csv`` (``table``) is not what its records say: a
    successful row whose record is missing or unusable, or whose PSNR differs (empty: none,
    or the folder keeps no records, as a published report)."""
    folder = cells_dir(out)
    if not folder.is_dir() or "key" not in table:
        return []
    found = []
    rows = table[table.status == "ok"]
    for key, group in rows.groupby("key"):
        path = folder / f"{key}.json"
        record = Record.read(path)
        if record is None:
            found.append(f"{path.name}: {why_unusable(path)}")
            continue
        for row in group.itertuples():
            theirs = record.psnr(str(row.output))
            if theirs is None or not np.isclose(theirs, float(row.psnr), rtol=0, atol=1e-9):
                found.append(f"{path.name}: {row.output} psnr {row.psnr} here, {theirs} there")
    return found
