"""PSNR regression checks: measured results against expected values with tolerances.

An expected file has one row per (cell, output): the identifying columns of ``results.csv``,
``expected_psnr``, ``tolerance`` (dB) and the versions it was measured with. A measured PSNR
below ``expected - tolerance`` is a regression, above ``expected + tolerance`` an
improvement (reported, so the file gets updated on purpose, but not failed); an expected cell
that is missing or failed in the results fails the check.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

KEY = ["suite", "dataset", "image", "degradation", "level", "method", "output"]

# Tolerances in dB. Classical methods are deterministic; the networks' un-averaged outputs
# move most when floating-point details change (another CPU's kernels), the averaged and
# selected ones less.
TOLERANCES = {
    "classical": 0.05,
    "last": 1.0,
    "es": 1.0,
    "ema": 0.5,
    "best_loss": 0.75,
    "oracle": 0.5,
}


def read_results(paths: Iterable[Path]) -> pd.DataFrame:
    """Concatenate ``results.csv`` files; a folder stands for every results.csv below it."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(path.rglob("results.csv"))
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"no results at {path}")
    if not files:
        raise FileNotFoundError("no results.csv found in " + ", ".join(map(str, paths)))
    return pd.concat([pd.read_csv(f) for f in files], ignore_index=True)


def tolerance_for(output: str) -> float:
    """The default tolerance of an output: by kind for the networks, tight for the rest."""
    return TOLERANCES.get(output, TOLERANCES["classical"])


def make_expected(results: pd.DataFrame, versions: dict[str, str]) -> pd.DataFrame:
    """An expected table from measured results (successful rows only)."""
    ok = results[results.status == "ok"].copy()
    table = ok[KEY].copy()
    table["expected_psnr"] = ok.psnr.round(4)
    table["tolerance"] = [tolerance_for(o) for o in ok.output]
    table["measured_with"] = "; ".join(f"{k} {v}" for k, v in versions.items())
    return table.sort_values(KEY).reset_index(drop=True)


def compare(results: pd.DataFrame, expected: pd.DataFrame) -> pd.DataFrame:
    """Every expected cell with its measured PSNR, difference and verdict.

    Verdicts: ``ok``, ``regression``, ``improvement``, ``missing`` (absent or failed);
    measured cells that the expected file does not list are ``new``.
    """
    measured = results[results.status == "ok"][KEY + ["psnr"]].copy()
    for frame in (measured, expected):
        frame["level"] = frame["level"].astype(float).round(6)
    merged = expected.merge(measured, on=KEY, how="outer", indicator=True)
    merged["difference"] = merged.psnr - merged.expected_psnr
    verdict = np.select(
        [
            merged._merge == "left_only",
            merged._merge == "right_only",
            merged.difference < -merged.tolerance,
            merged.difference > merged.tolerance,
        ],
        ["missing", "new", "regression", "improvement"],
        default="ok",
    )
    merged["verdict"] = verdict
    columns = KEY + ["expected_psnr", "psnr", "difference", "tolerance", "verdict"]
    return merged[columns].rename(columns={"psnr": "measured_psnr"})


def failed(report: pd.DataFrame) -> pd.DataFrame:
    """The rows that fail the check."""
    return report[report.verdict.isin(["regression", "missing"])]
