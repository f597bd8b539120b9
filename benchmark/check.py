"""PSNR regression checks: measured results against expected values with measured tolerances.

An expected file has one row per checked value: the identifying columns of ``results.csv``
(``KEY``), a ``statistic`` and the value's ``expected_psnr``, ``tolerance`` (dB) and ``gated``
flag, with how the tolerance was derived. Two statistics:

``cell``
    one (cell, output) of the grid;
``mean``
    the mean over every cell of a suite for one method and output (``dataset``, ``image`` and
    ``degradation`` read ``*``, ``level`` 0): what a networks' check relies on, because a mean
    over images and levels moves far less than one chaotic fit.

Tolerances come from measured spread, never from a guess (:func:`derive_expected`): the grid is
run once as the reference and again under variants that change what another machine changes:
the methods' seeds (``--method-seed``), oneDNN's and ATen's instruction sets
(``ONEDNN_MAX_CPU_ISA=AVX2``, ``ATEN_CPU_CAPABILITY=default``) and the thread count. A value's
spread is the root-mean-square deviation from the reference within the seed runs or within the
kernel runs, whichever is larger (:func:`spread`); its tolerance is ``SPREAD_MULTIPLE`` times
that, at least ``TOLERANCE_FLOOR``. The rms deviation of a draw from the reference estimates
the spread of the difference a check sees (sqrt 2 sigma for a fit that decorrelates), so 4x is a
4-sigma band. A value is gated when its tolerance is at most ``GATE_LIMIT`` (by statistic): a
single chaotic output (the Deep Decoder's ``last`` rides Adam's loss spikes) whose spread is
wide is reported, not gated.

A gated value outside ``expected +- tolerance`` fails the check, in either direction (a value
that jumps up is as much a changed method as one that drops: update the file on purpose); a
gated value that is missing or failed fails it too. Values that are not gated are listed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.results_file import disagreements

KEY = ["suite", "profile", "dataset", "image", "degradation", "level", "method", "output"]
REQUIRED = ["statistic", *KEY, "n_cells", "expected_psnr", "tolerance", "gated"]
ALL = "*"  # dataset, image and degradation of a suite mean

SPREAD_MULTIPLE = 4.0  # tolerance = this x the measured rms deviation ...
TOLERANCE_FLOOR = 0.05  # ... and at least this (dB): deterministic methods still round
# The widest tolerance a value may have and still be gated, by statistic (dB). A cell wider
# than 0.5 dB is better checked through its suite's mean; a mean wider than 2 dB would let
# real regressions through (the three planted in tests/regression move DIP's suite means by
# 1.3 to 4.9 dB).
GATE_LIMIT = {"cell": 0.5, "mean": 2.0}


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
    return pd.concat([_read_one_results(f) for f in files], ignore_index=True)


def _read_one_results(path: Path) -> pd.DataFrame:
    """One results.csv, refused (``FileNotFoundError`` naming it) when it is not one."""
    try:
        table = pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise FileNotFoundError(f"{path} is not a results.csv ({err})") from None
    missing = [c for c in [*KEY, "psnr", "status"] if c not in table.columns]
    if missing:
        raise FileNotFoundError(f"{path} is not a results.csv: no column(s) {missing}")
    for column in ("psnr", "level"):
        numbers = pd.to_numeric(table[column], errors="coerce")
        bad = numbers.isna() & table[column].notna()
        if bad.any():
            row = int(bad.idxmax()) + 2  # 1-based, after the header
            raise FileNotFoundError(
                f"{path} is not a results.csv: its {column} {table[column][bad].iloc[0]!r} "
                f"(line {row}) is not a number"
            )
        table[column] = numbers
    differ = disagreements(path.parent, table)
    if differ:
        raise FileNotFoundError(
            f"{path} is not what its records say ({len(differ)} row(s); {'; '.join(differ[:3])})"
            ": run the suite into its folder again, which rebuilds it from the records"
        )
    return table


class ExpectedFileError(ValueError):
    """An expected file that cannot make a check that can fail; the message names the fix."""


def read_expected(path: Path) -> pd.DataFrame:
    """An expected file, refused when it cannot check anything.

    Raises
    ------
    ExpectedFileError
        Empty, without rows, without a required column, with a gated value that has no number
        or no tolerance, or with nothing gated.
    """
    remake = "make it with dipbench expect (or make update-expected)"
    try:
        table = pd.read_csv(path)
    except FileNotFoundError:
        raise ExpectedFileError(f"no expected file {path}; {remake}") from None
    except pd.errors.EmptyDataError:
        raise ExpectedFileError(f"{path} is empty; {remake}") from None
    except (UnicodeDecodeError, pd.errors.ParserError, IsADirectoryError) as err:
        raise ExpectedFileError(f"{path} is not a CSV file ({err}); {remake}") from None
    missing = [c for c in REQUIRED if c not in table.columns]
    if missing:
        raise ExpectedFileError(f"{path} has no column(s) {missing}; {remake}")
    if table.empty:
        raise ExpectedFileError(f"{path} has no rows: a check that cannot fail; {remake}")
    flags = table.gated.astype(str).str.strip().str.lower()
    unknown = sorted(set(flags) - {"true", "false", "1", "0"})
    if unknown:
        raise ExpectedFileError(
            f"{path}: gated must be True or False, not {unknown[0]!r}; {remake}"
        )
    table["gated"] = flags.isin(["true", "1"])
    for column in ("level", "expected_psnr", "tolerance"):
        numbers = pd.to_numeric(table[column], errors="coerce")
        if (numbers.isna() & table[column].notna()).any():
            bad = table[column][numbers.isna() & table[column].notna()].iloc[0]
            raise ExpectedFileError(f"{path}: {column} {bad!r} is not a number; {remake}")
        table[column] = numbers
    gated = table[table.gated]
    holes = gated[
        ~np.isfinite(gated.expected_psnr) | ~np.isfinite(gated.tolerance) | (gated.tolerance < 0)
    ]
    if len(holes):
        first = holes.iloc[0]
        raise ExpectedFileError(
            f"{path}: {len(holes)} gated value(s) without an expected PSNR or a tolerance "
            "(or with one that is not a finite number) "
            f"(first: {first.suite} {first.dataset}/{first.image} {first.method}/{first.output}); "
            + remake
        )
    if gated.empty:
        raise ExpectedFileError(f"{path} gates no value: a check that cannot fail; {remake}")
    return table


def statistics(results: pd.DataFrame) -> pd.DataFrame:
    """The checked values of a run: every successful (cell, output), and each suite's mean per
    method and output (with ``n_cells``, the number of cells averaged). A mean over a NaN is
    NaN, and ``stale`` says whether a value rests on a cell computed by code that has changed
    since (results.csv's ``stale`` column)."""
    ok = results[results.status == "ok"].copy()
    ok["level"] = ok["level"].astype(float).round(6)
    stale = ok["stale"] if "stale" in ok else pd.Series(False, index=ok.index)
    ok["stale"] = stale.astype(str).str.lower().isin(["true", "1"])
    cells = ok[KEY + ["psnr", "stale"]].assign(statistic="cell", n_cells=1)
    means = (
        ok.groupby(["suite", "profile", "method", "output"], sort=True)
        .agg(
            psnr=("psnr", lambda values: values.mean(skipna=False)),
            n_cells=("psnr", "size"),
            stale=("stale", "any"),
        )
        .reset_index()
        .assign(dataset=ALL, image=ALL, degradation=ALL, level=0.0, statistic="mean")
    )
    return pd.concat([cells, means[cells.columns]], ignore_index=True)


def variant_group(name: str) -> str:
    """``seeds`` for a seed variant (a name starting with ``seed``), ``kernels`` otherwise."""
    return "seeds" if name.startswith("seed") else "kernels"


def spread(reference: pd.DataFrame, variants: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Each reference value with its deviations under the variants.

    Columns: one ``dev_<name>`` per variant (variant - reference, dB); ``rms_seeds`` and
    ``rms_kernels``, the root-mean-square deviation within each group of variants
    (:func:`variant_group`); ``spread``, the larger of the two; ``max_deviation``, the largest
    absolute deviation; ``n_variants``, how many variants have the value.

    The groups are kept apart because they answer different questions: a chaotic fit on
    another machine decorrelates like a new seed, a stable one moves like a kernel change; and
    a group of variants that does not move a value must not dilute the spread of one that does.
    """
    ref = statistics(reference)
    index = ["statistic"] + KEY
    table = ref.set_index(index)
    groups: dict[str, list[pd.Series]] = {"seeds": [], "kernels": []}
    for name, frame in variants.items():
        measured = statistics(frame).set_index(index)
        same_cells = measured.n_cells.reindex(table.index) == table.n_cells
        dev = (measured.psnr.reindex(table.index) - table.psnr).where(same_cells)
        table[f"dev_{name}"] = dev
        groups[variant_group(name)].append(dev)
    for group, deviations in groups.items():
        devs = pd.concat(deviations, axis=1) if deviations else pd.DataFrame(index=table.index)
        table[f"rms_{group}"] = np.sqrt((devs**2).mean(axis=1)) if deviations else np.nan
    every = [c for c in table.columns if c.startswith("dev_")]
    table["spread"] = table[["rms_seeds", "rms_kernels"]].max(axis=1)
    table["max_deviation"] = table[every].abs().max(axis=1) if every else np.nan
    table["n_variants"] = table[every].notna().sum(axis=1) if every else 0
    return table.reset_index()


def derive_expected(
    reference: pd.DataFrame,
    variants: Mapping[str, pd.DataFrame],
    versions: Mapping[str, str],
    *,
    multiple: float = SPREAD_MULTIPLE,
    floor: float = TOLERANCE_FLOOR,
    gate_limit: Mapping[str, float] = GATE_LIMIT,
) -> pd.DataFrame:
    """An expected table: reference values, tolerances from the variants' spread.

    A value with no variant measurement gets no tolerance and is not gated: a check needs a
    measured spread.
    """
    if not (reference.status == "ok").any():
        raise ExpectedFileError(
            "the reference run has no successful cell: nothing to expect (see its errors)"
        )
    table = spread(reference, variants)
    tolerance = np.maximum(floor, multiple * table.spread)
    table["tolerance"] = tolerance.where(table.n_variants > 0).round(3)
    limit = table.statistic.map(gate_limit)
    table["gated"] = table.tolerance.notna() & (table.tolerance <= limit)
    table["expected_psnr"] = table.psnr.round(4)
    for column in ("rms_seeds", "rms_kernels", "spread", "max_deviation"):
        table[column] = table[column].round(4)
    for column in [c for c in table.columns if c.startswith("dev_")]:
        table[column] = table[column].round(4)
    seeds = [n for n in variants if variant_group(n) == "seeds"]
    kernels = [n for n in variants if variant_group(n) == "kernels"]
    table["derivation"] = (
        f"max({floor:g}, {multiple:g} x spread); spread = the larger rms deviation from the "
        f"reference over {len(seeds)} seed run(s) ({', '.join(seeds) or 'none'}) or over "
        f"{len(kernels)} kernel run(s) ({', '.join(kernels) or 'none'}); gated if the "
        f"tolerance is <= {gate_limit['cell']:g} dB (cell) / {gate_limit['mean']:g} dB "
        "(suite mean)"
    )
    table["measured_with"] = "; ".join(f"{k} {v}" for k, v in versions.items())
    columns = (
        ["statistic"]
        + KEY
        + [
            "n_cells",
            "expected_psnr",
            "tolerance",
            "gated",
            "spread",
            "rms_seeds",
            "rms_kernels",
            "max_deviation",
            "n_variants",
        ]
    )
    columns += [c for c in table.columns if c.startswith("dev_")]
    columns += ["derivation", "measured_with"]
    order = ["statistic", "suite", "profile", "method", "output", "dataset", "image"]
    order += ["degradation", "level"]
    return table[columns].sort_values(order).reset_index(drop=True)


def compare(
    results: pd.DataFrame, expected: pd.DataFrame, *, allow_new: bool = False
) -> pd.DataFrame:
    """Every expected value with its measured PSNR, difference and verdict.

    Verdicts: ``missing`` (absent, failed, NaN, or a mean over fewer cells than expected:
    gated or not), ``stale`` (computed by code that has changed since: re-run it), ``reported``
    (a value that is not gated), and for gated values ``ok``,
    ``regression`` (below ``expected - tolerance``) or ``improvement`` (above
    ``expected + tolerance``); measured values the expected file does not list read ``new``
    in a suite (and profile) it knows, and ``unchecked`` in one it does not know at all, which
    fails the check unless ``allow_new`` (a suite with no expected values is not checked).
    """
    expected = expected.copy()
    expected["level"] = expected["level"].astype(float).round(6)
    measured = statistics(results).rename(columns={"n_cells": "measured_cells"})
    index = ["statistic"] + KEY
    merged = expected.merge(measured, on=index, how="outer", indicator=True)
    merged["difference"] = merged.psnr - merged.expected_psnr
    absent = (merged._merge == "left_only") | (
        (merged._merge == "both") & ((merged.measured_cells != merged.n_cells) | merged.psnr.isna())
    )
    gated = merged.gated.fillna(False).astype(bool)
    stale = merged.stale.fillna(False).astype(bool)
    verdict = np.select(
        [
            merged._merge == "right_only",
            absent,
            stale,
            ~gated,
            merged.difference < -merged.tolerance,
            merged.difference > merged.tolerance,
        ],
        ["new", "missing", "stale", "reported", "regression", "improvement"],
        default="ok",
    )
    known = set(zip(expected.suite, expected.profile, strict=True))
    unknown = [
        (suite, profile) not in known
        for suite, profile in zip(merged.suite, merged.profile, strict=True)
    ]
    unchecked = (merged._merge == "right_only") & pd.Series(unknown, index=merged.index)
    merged["verdict"] = np.where(unchecked & (not allow_new), "unchecked", verdict)
    columns = index + ["expected_psnr", "psnr", "difference", "tolerance", "verdict"]
    return merged[columns].rename(columns={"psnr": "measured_psnr"})


def failed(report: pd.DataFrame) -> pd.DataFrame:
    """The rows that fail the check: values that moved beyond tolerance, are missing, were
    computed by code that has changed since, or belong to a suite the expected file does not
    know (``unchecked``)."""
    bad = ["regression", "improvement", "missing", "stale", "unchecked"]
    return report[report.verdict.isin(bad)]
