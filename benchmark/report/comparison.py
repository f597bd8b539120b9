"""Ours against the published numbers (``paper_comparison.md``: ours minus published, per
image and for the mean) and the ES-WMV table (``es_wmv.md``: where the stop criterion fired
against the oracle)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.report.authors import authors_reference, compare_with_authors, comparison_lines
from benchmark.report.files import cell_arrays, number_or_blank, write_lines
from benchmark.report.notes import WINDOW_NOTE
from benchmark.report.published import (
    IMPLAUSIBLE_DB,
    PAPER_LABELS,
    WITHIN_DB,
    published,
    published_mean_size,
    same_images,
)
from benchmark.report.tables import results_table, row_label
from benchmark.runfolder import Manifest, Record, atomic_write


def write_comparison(out: Path, meta: Manifest, records: list[Record]) -> Path:
    """``paper_comparison.md``: ours against the authors' code at these settings where a
    reference exists (also ``authors_comparison.csv``), then ours minus published where the
    paper gives a number."""
    results = results_table(records)
    paper = published(meta)
    authors = compare_with_authors(
        authors_reference(meta, records), results, lambda m, o: row_label(meta, m, o)
    )
    if len(authors) or (out / "authors_comparison.csv").is_file():
        atomic_write(out / "authors_comparison.csv", lambda p: authors.to_csv(p, index=False))
    compare = (meta.paper or {}).get("compare", {})
    lines = [
        f"# {meta.title}: ours minus published",
        "",
        f"Profile `{meta.profile}`"
        + (
            ""
            if meta.profile == "full"
            else " (not the paper's protocol: differences are for orientation, not a verdict)"
        )
        + ".",
        "",
        *comparison_lines(authors),
    ]
    if len(authors):
        lines += ["## Ours against the published numbers", ""]
    if paper.empty or not compare:
        lines.append("No published numbers to compare with for this suite.")
        write_lines(out / "paper_comparison.md", lines)
        return out / "paper_comparison.md"
    ok = results[results.status == "ok"] if len(results) else results
    paper, not_run = _pair_with_grid(paper, results)
    rows = []
    ours_images = set(meta.images)
    for theirs in paper.itertuples():
        target = compare.get(theirs.method)
        if not target or (
            theirs.image != "mean" and f"{theirs.dataset}/{theirs.image}" not in ours_images
        ):
            continue
        method, output = target.split("/")
        mine = ok[
            (ok.method == method)
            & (ok.output == output)
            & (ok.dataset == theirs.dataset)
            & (ok.degradation == theirs.degradation)
            & np.isclose(ok.level, theirs.level)
        ]
        if theirs.image != "mean":
            mine = mine[mine.image == theirs.image]
        ours = mine.psnr.mean() if len(mine) else np.nan
        # a classical method computes the same number every time: a published one far under
        # ours on the same images is another implementation or setting, not a target
        classical = len(mine) > 0 and bool(mine.iterations.isna().all())
        n_ours = mine.image.nunique()
        n_theirs = 1 if theirs.image != "mean" else published_mean_size(theirs.dataset)
        complete = theirs.image != "mean" or same_images(set(mine.image), theirs.dataset)
        # Why no difference is given: our crops against the paper's whole images, or a mean
        # over other images than the paper's.
        apart = "crop" if meta.crop else "" if complete else "other images"
        rows.append(
            {
                "dataset": theirs.dataset,
                "image": theirs.image,
                "level": theirs.level,
                "published": f"{PAPER_LABELS.get(theirs.method, theirs.method)} ({theirs.kind})",
                "ours": row_label(meta, method, output),
                "their psnr": theirs.psnr,
                "our psnr": ours,
                # a mean is set against a mean over the same images only
                "difference": np.nan if apart else ours - theirs.psnr,
                "implausible": bool(
                    classical and not apart and ours - theirs.psnr > IMPLAUSIBLE_DB
                ),
                "complete": not apart,
                "not compared": apart,
                "n ours": n_ours,
                "n theirs": n_theirs,
            }
        )
    table = pd.DataFrame(rows)
    if table.empty:
        lines.append("No published number matches a method of this run.")
    else:
        within = ((table.difference.abs() <= WITHIN_DB) & ~table.implausible).sum()
        scored = table.difference.notna().sum()
        lines += [
            f"{within} of {scored} compared cells within {WITHIN_DB} dB "
            f"({table['our psnr'].isna().sum()} without our number, "
            f"{(table['not compared'] != '').sum()} not comparable).",
            "",
        ]
        lines += _comparison_markdown(table)
        if table.implausible.any():
            lines += [
                "",
                f"Implausible: a published number of a classical method more than "
                f"{IMPLAUSIBLE_DB:g} dB under our run of it on the same image and noise. A "
                "classical method computes the same number every time, so the paper ran "
                "another implementation or setting that it does not state: the row is shown, "
                "but it is not a target this benchmark matches (`implausible = True` in "
                "paper_comparison.csv).",
            ]
        if (table["not compared"] == "other images").any():
            lines += [
                "",
                "A published mean is compared only with our mean over the same images: where "
                "this run covers other images (`n ours` of `n theirs`), the row says so and "
                "gives no difference (`complete = False` in paper_comparison.csv).",
            ]
        if (table["not compared"] == "crop").any():
            lines += [
                "",
                f"This run scores center crops of {meta.crop} px; the published numbers score "
                "the paper's whole images: another protocol, so no difference is given "
                "(`not compared = crop` in paper_comparison.csv). The authors' code at these "
                "settings, above, is the reference a reduced profile can match.",
            ]
    if len(not_run):
        lines += [
            "",
            "Published rows of this suite's tables that no cell of this run can be paired with "
            "(another dataset, degradation or level): not run here.",
            "",
            "| dataset | image | degradation | level | published | their psnr |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r.paper_dataset} | {r.image} | {r.degradation} | {r.level:g} | "
            f"{PAPER_LABELS.get(r.method, r.method)} ({r.kind}) | {r.psnr:.2f} |"
            for r in not_run.itertuples()
        ]
    write_lines(out / "paper_comparison.md", lines)
    atomic_write(out / "paper_comparison.csv", lambda p: table.to_csv(p, index=False))
    return out / "paper_comparison.md"


def _comparison_markdown(table: pd.DataFrame) -> list[str]:
    """The comparison as a Markdown table; a mean over other images reads "not comparable"."""
    columns = ["dataset", "image", "level", "published", "ours", "their psnr", "our psnr"]
    lines = ["| " + " | ".join([*columns, "difference"]) + " |", "|" + "---|" * 8]
    for r in table.to_dict("records"):
        values = [f"{v:g}" if isinstance(v, float) else str(v) for v in (r[c] for c in columns)]
        values[-2] = f"{r['their psnr']:.2f}"
        values[-1] = "" if pd.isna(r["our psnr"]) else f"{r['our psnr']:.2f}"
        if r["not compared"] == "crop":
            difference = "crop vs whole image: not compared"
        elif r["implausible"]:
            difference = f"{r['difference']:+.2f}: published implausible (see below)"
        elif r["complete"]:
            difference = "" if pd.isna(r["difference"]) else f"{r['difference']:+.2f}"
        else:
            difference = f"n = {r['n ours']} of {r['n theirs'] or '?'}: not comparable"
        lines.append("| " + " | ".join([*values, difference]) + " |")
    return lines


def write_es_table(out: Path, meta: Manifest, records: list[Record]) -> Path | None:
    """``es_wmv.md`` and ``.csv``: per network cell with an ES-WMV output, the detected
    iteration (or "not detected"), the PSNR-peak iteration of the per-step output and the gap,
    so a reader sees when early stopping helps and when it cannot."""
    rows = []
    for r in records:
        if not r.ok:
            continue
        scores = {row["output"]: row["psnr"] for row in r.rows}
        info = r.info
        if "es" not in scores or "es_stop_iteration" not in info:
            continue
        curves = cell_arrays(out, r.key)
        peak_it = peak_psnr = es_curve_psnr = np.nan
        if "curve_psnr_last" in curves and np.isfinite(curves["curve_psnr_last"]).any():
            its, values = curves["curve_iteration"], curves["curve_psnr_last"]
            i = int(np.nanargmax(values))
            peak_it, peak_psnr = int(its[i]), float(values[i])
            if info.get("es_iteration"):  # the curve's value nearest to ES-WMV's pick
                es_curve_psnr = float(values[int(np.abs(its - info["es_iteration"]).argmin())])
        detected = info["es_stop_iteration"] is not None
        cell = r.cell
        rows.append(
            {
                "dataset": cell["dataset"],
                "image": cell["image"],
                "degradation": cell["degradation"],
                "level": cell["level"],
                "method": cell["method_key"],
                "iterations": info.get("iterations"),
                "detected_iteration": info.get("es_iteration") if detected else None,
                "es_psnr": scores["es"],
                "last_psnr": scores.get("last", np.nan),
                "es_iteration": info.get("es_iteration"),
                "peak_iteration": peak_it,
                "peak_curve_psnr": peak_psnr,
                "gap_db": es_curve_psnr - peak_psnr,
            }
        )
    if not rows:
        return None
    table = pd.DataFrame(rows)
    n_detected = int(table.detected_iteration.notna().sum())
    lines = [
        f"# {meta.title}: ES-WMV, detected against peak",
        "",
        f"Profile `{meta.profile}`. ES-WMV (window {WINDOW_NOTE}) reports the output at the "
        "minimum-variance iteration once the variance has not improved for its patience; "
        '"not detected" means the patience never ran out before the last iteration, so the '
        '`es` value is only the minimum so far ("pick at" gives its iteration). Peak: the '
        "best PSNR of the per-step output on the fit's curve (recorded every few steps, whole "
        "image, against the ground truth: an oracle). Gap: the curve's PSNR at ES-WMV's pick "
        "minus the peak, same metric. ES-WMV and last: the table's scores (the suite's protocol).",
        "",
        f"Detected in {n_detected} of {len(table)} cells; mean gap "
        f"{table.gap_db.mean():+.2f} dB; ES-WMV above `last` (table scores) in "
        f"{int((table.es_psnr > table.last_psnr).sum())} of {len(table)}.",
        "",
        "| image | degradation | level | method | detected at | pick at | peak at | gap (dB) "
        "| ES-WMV | last |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    for r in table.itertuples():
        detected = (
            "not detected" if pd.isna(r.detected_iteration) else f"{int(r.detected_iteration)}"
        )
        lines.append(
            f"| {r.dataset}/{r.image} | {r.degradation} | {r.level:g} | {r.method} | {detected} "
            f"| {number_or_blank(r.es_iteration, '{:.0f}')} "
            f"| {number_or_blank(r.peak_iteration, '{:.0f}')} "
            f"| {number_or_blank(r.gap_db, '{:+.2f}')} | {r.es_psnr:.2f} | {r.last_psnr:.2f} |"
        )
    write_lines(out / "es_wmv.md", lines)
    atomic_write(out / "es_wmv.csv", lambda p: table.to_csv(p, index=False))
    return out / "es_wmv.md"


def _pair_with_grid(
    paper: pd.DataFrame, results: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split published rows into those whose (dataset, degradation, level) this run's grid has
    and, once each, those it has under no dataset name: a published x4 number is never
    paired with an x8 cell."""
    if paper.empty:
        return paper, paper
    grid = (
        {
            (d, g, float(v))
            for d, g, v in zip(results.dataset, results.degradation, results.level, strict=True)
        }
        if len(results)
        else set()
    )
    in_grid = np.array(
        [
            (d, g, float(v)) in grid
            for d, g, v in zip(paper.dataset, paper.degradation, paper.level, strict=True)
        ],
        dtype=bool,
    )
    identity = ["paper_dataset", "image", "degradation", "level", "method", "kind"]
    paired_ids = set(map(tuple, paper.loc[in_grid, identity].itertuples(index=False)))
    rest = paper.loc[~in_grid].drop_duplicates(identity)
    unpaired = [tuple(r) not in paired_ids for r in rest[identity].itertuples(index=False)]
    return paper.loc[in_grid], rest.loc[np.array(unpaired, dtype=bool)]
