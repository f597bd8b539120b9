"""Spread over a suite's repetitions: each table cell's standard deviation, and each mean's.

A repetition is a new noise realisation and a new method seed (:mod:`benchmark.grid`), so the
spread is what a reader re-running the suite would see. With ``repetitions = R > 1`` every
value of ours in a table is the mean of R, shown ``mean ± std``: an image's std over its R
values, the mean column's std over the R per-repetition means over the images (each
repetition's mean over the same images); ``table.csv`` adds ``<image> std``, ``std``,
``repetitions`` and ``ci95`` (the half-width of the mean's 95% Student-t interval).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from scipy import stats

SPREAD_COLUMNS = ("std", "repetitions", "ci95")


def std_column(column: str) -> str:
    """The ``table.csv`` column holding ``column``'s standard deviation."""
    return f"{column} std"


def with_spread(
    table: pd.DataFrame,
    group: pd.DataFrame,
    metric: str,
    columns: list[str],
    label: Callable[[str, str], str],
) -> pd.DataFrame:
    """``table`` with the spread columns for our rows (unchanged without repetitions).

    ``group`` is the results rows of the table (with ``column``, the table's image column of
    each row, and ``repetition``); ``label(method, output)`` names a row as the table does.
    """
    ok = group[(group.status == "ok") & group[metric].notna()]
    if ok.empty or ok.repetition.nunique() < 2:
        return table
    ok = ok.assign(row=[label(m, o) for m, o in zip(ok.method, ok.output, strict=True)])
    per_image = ok.pivot_table(
        index="row", columns="column", values=metric, aggfunc=lambda v: v.std(ddof=1)
    )
    by_repetition = ok.pivot_table(index=["row", "repetition"], columns="column", values=metric)
    complete = by_repetition.reindex(columns=columns).dropna()  # a repetition with every image
    means = complete.mean(axis=1).groupby(level="row")
    spread = pd.DataFrame({"std": means.std(ddof=1), "repetitions": means.count()})
    spread["ci95"] = [
        stats.t.ppf(0.975, n - 1) * s / np.sqrt(n) if n > 1 else np.nan
        for s, n in zip(spread["std"], spread["repetitions"], strict=True)
    ]
    for column in columns:
        values = per_image[column] if column in per_image else pd.Series(dtype=float)
        spread[std_column(column)] = values
    result = table.join(spread, how="left")
    result.attrs = dict(table.attrs)
    return result


def spread_text(row: pd.Series, column: str, digits: int) -> str:
    """`` ± std`` for a table cell of ours with spread (empty otherwise)."""
    name = "std" if column == "mean" else std_column(column)
    value = row.get(name, np.nan)
    return f" ± {value:.{digits}f}" if pd.notna(value) else ""


def spread_note(table: pd.DataFrame) -> list[str]:
    """The line under a table with spread: what ± is, over how many repetitions."""
    if "repetitions" not in table or table.repetitions.isna().all():
        return []
    counts = sorted({int(n) for n in table.repetitions.dropna()})
    shown = " or ".join(str(n) for n in counts)
    return [
        f"± is the standard deviation over the suite's {shown} repetitions (each a new noise "
        "realisation and method seed); for a mean, over the per-repetition means over the "
        "images. table.csv has each mean's 95% interval (ci95).",
        "",
    ]
