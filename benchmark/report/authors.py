"""The authors' own code at a reduced profile's settings, beside ours.

A 96-pixel crop fitted for a thousand steps cannot match a paper's number; what it can match is
the authors' code run at the same settings on the same observation. ``scripts/
authors_reference.py`` runs it and writes ``benchmark/data/authors_reference_<profile>.csv`` (one
row per cell, output and seed, with the authors' commit, the settings, device and torch
version). The report shows those rows in its tables (the mean over the authors' seeds), sets
ours against them per cell (``authors_comparison.csv`` and the first section of
``paper_comparison.md``) and leads the index line with that agreement.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmark.grid import Cell
from benchmark.report.files import number_or_blank
from benchmark.report.published import WITHIN_DB
from benchmark.runfolder import SUSPECT_UNDER_TRIVIAL_DB, Manifest, Record

DATA = Path(__file__).resolve().parents[1] / "data"

AUTHORS_SOURCE = "authors' code"

IDENTITY = ["dataset", "image", "degradation", "level", "method", "output"]

COMPARISON_COLUMNS = [
    *IDENTITY, "ours", "our psnr", "their psnr", "their spread", "seeds", "difference",
    "commit",
]  # fmt: skip


def reference_path(profile: str) -> Path:
    """Where the authors' reference numbers of a profile live."""
    return DATA / f"authors_reference_{profile}.csv"


def _observation_key(cell: dict[str, Any]) -> str | None:
    try:
        return Cell(**cell).observation_key
    except TypeError:  # a record written by another version of the cell
        return None


def authors_reference(meta: Manifest, records: list[Record]) -> pd.DataFrame:
    """The authors' numbers for this run's cells: per dataset, image, degradation, level,
    method and output, the PSNR and SSIM averaged over their seeds, the PSNR's spread
    (standard deviation over seeds), the number of seeds and their commit.

    Only rows of this suite and profile whose observation is one of this run's (same image,
    crop, degradation and degradation seed) are taken: a reference made for other
    observations is never set beside ours.
    """
    path = reference_path(meta.profile)
    if not path.is_file():
        return pd.DataFrame(columns=[*IDENTITY, "psnr", "ssim", "spread", "seeds", "commit"])
    reference = pd.read_csv(path)
    observed = {_observation_key(r.cell) for r in records if isinstance(r.cell, dict)}
    reference = reference[
        (reference.suite == meta.suite)
        & (reference.profile == meta.profile)
        & reference.observation_key.isin(observed)
    ]
    return (
        reference.groupby(IDENTITY, sort=False)
        .agg(
            psnr=("psnr", "mean"),
            ssim=("ssim", "mean"),
            spread=("psnr", "std"),
            seeds=("seed", "nunique"),
            commit=("commit", "first"),
        )
        .reset_index()
    )


def authors_rows(
    reference: pd.DataFrame,
    group: pd.DataFrame,
    columns: list[str],
    metric: str,
    label: Any,
) -> pd.DataFrame:
    """Table rows of the authors' code for one table (a degradation level): the mean over
    their seeds per image, and a mean only where they cover every image of the table.
    ``label(method, output)`` names a row as ours are named."""
    degradation, level = group.degradation.iloc[0], float(group.level.iloc[0])
    mine = reference[
        (reference.degradation == degradation)
        & np.isclose(reference.level.astype(float), level)
        & reference.dataset.isin(set(group.dataset))
    ]
    several = group.dataset.nunique() > 1
    rows = {}
    for (method, output), part in mine.groupby(["method", "output"], sort=False):
        values = dict.fromkeys(columns, np.nan)
        for r in part.itertuples():
            column = f"{r.dataset}/{r.image}" if several else r.image
            if column in values:
                values[column] = getattr(r, metric, np.nan)  # a rescored metric: none
        present = [v for v in values.values() if not np.isnan(v)]
        if not present:
            continue
        values["mean"] = float(np.mean(present)) if len(present) == len(columns) else np.nan
        values["n"] = len(present)
        values["source"] = AUTHORS_SOURCE
        seeds = int(part.seeds.min())
        rows[f"{label(method, output)}: {AUTHORS_SOURCE}, {_seeds(seeds)}"] = values
    return pd.DataFrame.from_dict(rows, orient="index")


def compare_with_authors(
    reference: pd.DataFrame, results: pd.DataFrame, label: Any
) -> pd.DataFrame:
    """Ours against the authors' code per cell and output: our PSNR (one fit), theirs (mean
    over seeds) with its spread, and the difference."""
    if reference.empty or results.empty:
        return pd.DataFrame(columns=COMPARISON_COLUMNS)
    ok = results[results.status == "ok"]
    ours = ok.groupby(IDENTITY, sort=False).psnr.mean().rename("our psnr").reset_index()
    ours["level"] = ours.level.astype(float)
    theirs = reference.assign(level=reference.level.astype(float))
    table = theirs.merge(ours, on=IDENTITY, how="left")
    table["ours"] = [label(m, o) for m, o in zip(table.method, table.output, strict=True)]
    table = table.rename(columns={"psnr": "their psnr", "spread": "their spread"}).assign(
        difference=lambda t: t["our psnr"] - t["their psnr"]
    )
    return table[COMPARISON_COLUMNS]


def comparison_lines(table: pd.DataFrame) -> list[str]:
    """The per-cell comparison as Markdown, with its summary line first."""
    if table.empty:
        return []
    scored = table.difference.notna()
    within = int((table.difference.abs() <= WITHIN_DB).sum())
    lines = [
        "## Ours against the authors' code at these settings",
        "",
        "The authors' networks and loops (their repositories at the commit given) run by "
        "`scripts/authors_reference.py` on the same observations with this profile's settings; "
        "their PSNR is the mean over their seeds (spread: the standard deviation over seeds), "
        "ours is the run's one fit.",
        "",
        f"{within} of {int(scored.sum())} cells within {WITHIN_DB} dB of the authors' code; "
        f"mean difference {table.difference[scored].mean():+.2f} dB.",
        "",
        "| dataset | image | degradation | level | output | our psnr | their psnr | spread "
        "| seeds | difference |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    for r in table.to_dict("records"):
        lines.append(
            f"| {r['dataset']} | {r['image']} | {r['degradation']} | {float(r['level']):g} "
            f"| {r['ours']} | {number_or_blank(r['our psnr'], '{:.2f}')} | {r['their psnr']:.2f} "
            f"| {number_or_blank(r['their spread'], '{:.2f}')} | {r['seeds']} "
            f"| {number_or_blank(r['difference'], '{:+.2f}')} |"
        )
    return [*lines, ""]


def agreement(table: pd.DataFrame) -> str:
    """The index's summary of a suite's agreement with the authors' code ('' without one)."""
    if table.empty or table.difference.notna().sum() == 0:
        return ""
    scored = table.difference.dropna()
    within = int((scored.abs() <= WITHIN_DB).sum())
    return (
        f"authors' code at these settings: {within}/{len(scored)} cells within {WITHIN_DB} dB "
        f"(mean difference {scored.mean():+.2f} dB)"
    )


def under_baseline_lines(
    group: pd.DataFrame, reference: pd.DataFrame, baseline: str, label: Any
) -> list[str]:
    """One line per network output (oracle aside) more than 1 dB under the run's trivial
    baseline of its image, saying whether the authors' code at these settings is under it
    too (then the reduced profile, not this code, is why) or not (a gap of this code)."""
    ok = group[(group.status == "ok") & group.iterations.notna() & (group.output != "oracle")]
    under = ok[ok.psnr < ok.trivial_psnr - SUSPECT_UNDER_TRIVIAL_DB]
    if under.empty:
        return []
    theirs = reference[[*IDENTITY, "psnr", "seeds"]].rename(columns={"psnr": "their_psnr"})
    under = under.assign(level=under.level.astype(float)).merge(
        theirs.assign(level=theirs.level.astype(float)), on=IDENTITY, how="left"
    )
    lines = []
    for r in under.itertuples():
        line = (
            f"- {r.image}: {label(r.method, r.output)} {r.psnr:.2f} dB is "
            f"{r.trivial_psnr - r.psnr:.2f} dB under {baseline} ({r.trivial_psnr:.2f}); "
        )
        if pd.isna(r.their_psnr):
            line += "no authors' reference for this cell."
        else:
            below = r.their_psnr < r.trivial_psnr - SUSPECT_UNDER_TRIVIAL_DB
            line += (
                f"the authors' code at these settings: {r.their_psnr:.2f} "
                f"({_seeds(int(r.seeds))}), "
                + (
                    "under it too: the profile's reduction, not this code."
                    if below
                    else "not under it: a gap of this code."
                )
            )
        lines.append(line)
    return lines


def _seeds(count: int) -> str:
    return f"{count} seed" if count == 1 else f"{count} seeds"
