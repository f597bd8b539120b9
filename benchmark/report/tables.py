"""The report's tables: methods as rows, images as columns, a mean column, PSNR and SSIM, one
table per degradation level, with the published numbers beside ours (``table.md``,
``table.csv``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.report.authors import (
    AUTHORS_SOURCE,
    authors_reference,
    authors_rows,
    under_baseline_lines,
)
from benchmark.report.notes import (
    NOT_DETECTED_MARK,
    STALE_MARK,
    SUSPECT_MARK,
    TRIVIAL_LABELS,
    header,
)
from benchmark.report.published import (
    PAPER_LABELS,
    published,
    published_mean_size,
    same_images,
)
from benchmark.report.spread import SPREAD_COLUMNS, spread_note, spread_text, with_spread
from benchmark.results_file import metric_columns
from benchmark.runfolder import Manifest, Record, atomic_write
from benchmark.scoring import METRICS, OPTIONAL, get_metric

OUTPUT_LABELS = {
    "out": "",
    "last": "last",
    "ema": "EMA",
    "es": "ES-WMV",
    "best_loss": "best loss",
    "oracle": "oracle",
}


def results_table(records: list[Record]) -> pd.DataFrame:
    """results.csv rows from records alone."""
    return pd.DataFrame([row for r in records for row in r.result_rows()])


def row_label(meta: Manifest, method: str, output: str) -> str:
    labels = {m["key"]: m["label"] for m in meta.methods}
    base = labels.get(method, method)
    suffix = OUTPUT_LABELS.get(output, output)
    label = f"{base} ({suffix})" if suffix else base
    return f"{label} †" if output == "oracle" else label


def _groups(meta: Manifest, results: pd.DataFrame) -> list[tuple[tuple, pd.DataFrame]]:
    keys = ["degradation", "level"] + (["dataset"] if meta.report.get("by_dataset") else [])
    ok = results.copy()
    return [(k if isinstance(k, tuple) else (k,), g) for k, g in ok.groupby(keys, sort=False)]


def _column_names(group: pd.DataFrame) -> pd.Series:
    several = group.dataset.nunique() > 1
    return (group.dataset + "/" + group.image) if several else group.image


def wide_table(
    meta: Manifest,
    group: pd.DataFrame,
    paper: pd.DataFrame,
    metric: str,
    reference: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Rows: published methods (PSNR only), the authors' code at these settings (where
    ``reference`` has it, :mod:`~benchmark.report.authors`), then ours; columns: images and
    ``mean``, and with repetitions their spread (:mod:`~benchmark.report.spread`).

    A failed or missing cell is NaN; the mean is then over the images that have a value, and
    ``n`` says how many that is.
    """
    table = _wide_table(meta, group, paper, metric, reference)
    rows = group.assign(column=_column_names(group))
    columns = list(dict.fromkeys(rows.column))
    return with_spread(table, rows, metric, columns, lambda m, o: row_label(meta, m, o))


def _wide_table(
    meta: Manifest,
    group: pd.DataFrame,
    paper: pd.DataFrame,
    metric: str,
    reference: pd.DataFrame | None,
) -> pd.DataFrame:
    group = group.assign(column=_column_names(group))
    columns = list(dict.fromkeys(group.column))
    ok = group[group.status == "ok"]
    ours = ok.assign(
        row=[row_label(meta, m, o) for m, o in zip(ok.method, ok.output, strict=True)]
    ).pivot_table(index="row", columns="column", values=metric, aggfunc="mean", sort=False)
    order = list(
        dict.fromkeys(row_label(meta, m, o) for m, o in zip(ok.method, ok.output, strict=True))
    )
    failed = sorted(
        {row_label(meta, m, "out").split(" (")[0] for m in group[group.status != "ok"].method}
    )
    ours = ours.reindex(index=order + [f for f in failed if f not in order], columns=columns)
    ours.insert(0, "source", ["ours (oracle)" if r.endswith("†") else "ours" for r in ours.index])
    not_run = _not_run(meta, group, list(ours.index), columns)
    if metric == "psnr":
        ours = pd.concat([trivial_row(meta, group, columns), ours])
    ours.attrs["not_run"] = not_run
    ours["mean"] = ours[columns].mean(axis=1)
    ours["n"] = ours[columns].notna().sum(axis=1)
    if reference is not None and not reference.empty:
        theirs = authors_rows(reference, group, columns, metric, lambda m, o: row_label(meta, m, o))
        if not theirs.empty:
            attrs = dict(ours.attrs)
            ours = pd.concat([theirs[ours.columns], ours])
            ours.attrs = attrs
    ours["scored_on"] = scored_on(meta)
    if metric != "psnr" or paper.empty:
        return ours
    degradation, level = group.degradation.iloc[0], float(group.level.iloc[0])
    datasets = set(group.dataset)
    mine = paper[
        (paper.degradation == degradation)
        & np.isclose(paper.level, level)
        & paper.dataset.isin(datasets)
    ]
    if mine.empty:
        return ours
    rows = {}
    ours_images = {d: set(group.image[group.dataset == d]) for d in datasets}
    for (method, kind), part in mine.groupby(["method", "kind"], sort=False):
        label = f"{PAPER_LABELS.get(method, method)} ({'paper' if kind == 'published' else kind})"
        values = {c: np.nan for c in columns}
        for r in part.itertuples():
            if r.image == "mean":
                values["mean"] = r.psnr
                if not same_images(ours_images.get(r.dataset, set()), r.dataset):
                    # a published mean over other images: said so beside both means
                    ours.attrs["published_mean_of"] = published_mean_size(r.dataset) or 0
                else:  # every image is in the table, but a row of ours can miss some
                    ours.attrs["published_images"] = published_mean_size(r.dataset) or 0
            else:
                column = r.image if len(datasets) == 1 else f"{r.dataset}/{r.image}"
                if column in values:
                    values[column] = r.psnr
        if "mean" not in values:
            present = [values[c] for c in columns if not np.isnan(values[c])]
            values["mean"] = float(np.mean(present)) if len(present) == len(columns) else np.nan
        values["n"] = sum(not np.isnan(values[c]) for c in columns)
        values["source"] = "paper" if kind == "published" else kind
        values["scored_on"] = PAPER_IMAGES
        rows[label] = values
    theirs = pd.DataFrame.from_dict(rows, orient="index")[ours.columns]
    # On crops, the paper's numbers score other pixels: shown apart, after ours.
    table = pd.concat([ours, theirs] if meta.crop else [theirs, ours])
    table.attrs = dict(ours.attrs)
    return table


PAPER_IMAGES = "the paper's images"


def scored_on(meta: Manifest) -> str:
    """The pixels this run scores: the paper's images, or center crops of them."""
    return f"center crops of {meta.crop} px" if meta.crop else PAPER_IMAGES


def trivial_row(meta: Manifest, group: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """The run's own trivial baseline of each image (the noisy input, bicubic of the
    low-resolution input, Telea inpainting: the task's ``trivial_baseline``), once per
    observation; empty for records that did not compute it."""
    rows = group[group.status == "ok"].assign(column=_column_names(group))
    if "trivial_psnr" not in rows or rows.trivial_psnr.isna().all():
        return pd.DataFrame(columns=["source", *columns])
    once = rows.dropna(subset=["trivial_psnr"]).drop_duplicates(["dataset", "image", "repetition"])
    values = once.groupby("column", sort=False).trivial_psnr.mean().reindex(columns)
    name = str(meta.trivial or "")
    what = TRIVIAL_LABELS.get(name, name or "the task's trivial answer")
    label = f"trivial baseline: {what} (this run)"
    return pd.DataFrame([{"source": "ours (trivial)", **values.to_dict()}], index=[label])


def _marks(meta: Manifest, group: pd.DataFrame) -> dict[tuple[str, str], str]:
    """``{(row label, column): mark}``: suspect cells, ES-WMV values that detected nothing,
    and cells computed by code that has changed since."""
    group = group.assign(column=_column_names(group))
    marks: dict[tuple[str, str], str] = {}
    for r in group[group.status == "ok"].itertuples():
        mark = ""
        if getattr(r, "stale", False) is True:
            mark += STALE_MARK
        if isinstance(r.suspect, str) and r.suspect:
            mark += SUSPECT_MARK
        if r.output == "es" and pd.notna(r.es_detected) and not bool(r.es_detected):
            mark += NOT_DETECTED_MARK
        if mark:
            marks[(row_label(meta, r.method, r.output), r.column)] = mark
    return marks


def _suspect_lines(group: pd.DataFrame) -> list[str]:
    rows = group[group.suspect.fillna("").astype(str) != ""].drop_duplicates("key")
    return [
        f"- {SUSPECT_MARK} {r.dataset}/{r.image} {r.method}: {r.suspect}" for r in rows.itertuples()
    ]


def _not_run(
    meta: Manifest, group: pd.DataFrame, labels: list[str], columns: list[str]
) -> dict[str, list[str]]:
    """The columns each of our rows has no cell in, failed or not (a report merged from runs
    of parts of the grid): shown empty, not as failed."""
    method_of = {row_label(meta, m, o): m for m, o in zip(group.method, group.output, strict=True)}
    method_of.update({row_label(meta, m, "out").split(" (")[0]: m for m in group.method})
    ran = group.groupby("method").column.agg(set)
    return {
        label: [c for c in columns if c not in ran.get(method_of.get(label), set())]
        for label in labels
    }


def _markdown(
    table: pd.DataFrame, digits: int, marks: dict[tuple[str, str], str] | None = None
) -> str:
    marks = marks or {}
    extra = {"source", "n", "scored_on", *SPREAD_COLUMNS}
    columns = [c for c in table.columns if c not in extra and not c.endswith(" std")]
    published_of = table.attrs.get("published_mean_of")
    header = "| method | " + " | ".join(columns) + " |"
    lines = [header, "|" + "---|" * (len(columns) + 1)]
    for label, row in table.iterrows():
        cells = []
        for c in columns:
            value = row[c]
            if pd.isna(value):
                ran = row["source"] in ("ours", "ours (oracle)")
                ran = ran and c not in table.attrs.get("not_run", {}).get(label, [])
                cells.append("failed" if ran and c != "mean" else "")
            else:
                ours = row["source"].startswith("ours")
                text = f"{value:.{digits}f}" + (spread_text(row, c, digits) if ours else "")
                text += marks.get((label, c), "")
                if c == "mean" and row["source"] == AUTHORS_SOURCE:
                    pass  # over every image of the table, or left empty
                elif c == "mean" and published_of is not None:
                    text += (
                        f" (n={int(row['n'])} of {published_of or '?'}: not comparable with "
                        "the published mean)"
                        if ours
                        # a published mean is over the paper's images; a mean of released
                        # per-image values, over this table's images that have one
                        else f" (n={int(row['n']) if row['n'] > 0 else published_of or '?'})"
                    )
                elif c == "mean" and ours and row["n"] < table.attrs.get("published_images", 0):
                    text += (
                        f" (n={int(row['n'])} of {table.attrs['published_images']}: not "
                        "comparable with the published mean)"
                    )
                elif c == "mean" and ours and row["n"] < len(columns) - 1:
                    text += f" (n={int(row['n'])})"
                cells.append(text)
        name = label if row["source"].startswith("ours") else f"*{label}*"
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _markdown_tables(
    meta: Manifest, table: pd.DataFrame, digits: int, marks: dict[tuple[str, str], str]
) -> list[str]:
    """The table's Markdown; on crops, the paper's numbers (on its whole images) in a table
    of their own under ours, so that no column sets a crop beside a whole image."""
    apart = table.scored_on == PAPER_IMAGES
    if not meta.crop or not apart.any():
        return [_markdown(table, digits, marks), ""]
    ours, theirs = table[~apart].copy(), table[apart].copy()
    ours.attrs = {k: v for k, v in table.attrs.items() if k != "published_mean_of"}
    theirs.attrs = dict(table.attrs)  # a mean's n beside each published or released mean
    return [
        _markdown(ours, digits, marks),
        "",
        f"Published, on the paper's whole images: another protocol than this run's "
        f"{meta.crop}-pixel crops, so not comparable with the rows above.",
        "",
        _markdown(theirs, digits),
        "",
    ]


def write_tables(
    out: Path, meta: Manifest, records: list[Record], *, missing_cells: int = 0
) -> list[Path]:
    """``table.md`` and ``table.csv`` in the paper's layout (``missing_cells``: cells of the
    grid without a record, said in the header)."""
    results = results_table(records)
    paper = published(meta)
    reference = authors_reference(meta, records)
    md = header(meta, records, missing_cells)
    header_lines = len(md)
    frames = []
    for key, group in _groups(meta, results):
        title = group_title(key, group)
        marks = _marks(meta, group)
        for metric, digits, better in table_metrics(results):
            table = wide_table(meta, group, paper, metric, reference)
            md += [
                f"## {title}: {metric.upper()}" + (" (dB)" if metric == "psnr" else "") + better,
                "",
                *_markdown_tables(meta, table, digits, marks),
                *spread_note(table),
            ]
            sources = table.source.astype(str)
            published_rows = ~sources.str.startswith("ours") & (sources != AUTHORS_SOURCE)
            if metric == "psnr" and not paper.empty and not published_rows.any():
                md += [
                    "The paper's tables give no number for this degradation and level.",
                    "",
                ]
            if metric == "psnr":
                name = TRIVIAL_LABELS.get(str(meta.trivial or ""), "its trivial baseline")
                lines = _suspect_lines(group) + under_baseline_lines(
                    group, reference, name, lambda m, o: row_label(meta, m, o)
                )
                md += lines + ([""] if lines else [])
            frames.append(
                table.reset_index(names="method").assign(
                    metric=metric,
                    degradation=group.degradation.iloc[0],
                    level=group.level.iloc[0],
                    dataset="+".join(sorted(set(group.dataset))),
                )
            )
    sources = set().union(*(set(f.source.astype(str)) for f in frames)) if frames else set()
    italics = []
    if {s for s in sources if not s.startswith("ours")} - {AUTHORS_SOURCE}:
        italics.append("Rows in *italics* are published numbers.")
    if AUTHORS_SOURCE in sources:
        italics.append(
            f'Rows in *italics* marked "{AUTHORS_SOURCE}" are the authors\' own networks and '
            "loops run at this profile's settings on the same observations (the mean over "
            "their seeds; `scripts/authors_reference.py`, commit and per-cell comparison in "
            "paper_comparison.md): the one reference a reduced profile can match."
        )
    if italics:
        md[header_lines - 1 : header_lines - 1] = ["", " ".join(italics)]
    atomic_write(out / "table.md", lambda p: p.write_text("\n".join(md), encoding="utf-8"))
    csv = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    front = ["degradation", "level", "dataset", "metric", "method", "source"]
    csv = csv[front + [c for c in csv.columns if c not in front]] if len(csv) else csv
    atomic_write(out / "table.csv", lambda p: csv.to_csv(p, index=False))
    return [out / "table.md", out / "table.csv"]


def table_metrics(results: pd.DataFrame) -> list[tuple[str, int, str]]:
    """``(metric, digits, note)`` of each metric column of ``results`` (:mod:`benchmark.scoring`:
    PSNR and SSIM, then those a rescore added); the note says when lower is better."""
    found = []
    for name in metric_columns(results):
        metric = get_metric(name) if name in METRICS or name in OPTIONAL else None  # no user import
        digits = metric.digits if metric else 4
        lower = metric is not None and not metric.higher_is_better
        found.append((name, digits, " (lower is better)" if lower else ""))
    return found


def group_title(key: tuple, group: pd.DataFrame) -> str:
    severity = group.severity.dropna()
    level = f"{key[0]} {key[1]:g}" + (
        f" (ImageNet-C severity {int(severity.iloc[0])})" if len(severity) else ""
    )
    return level + (f", {key[2]}" if len(key) > 2 else "")
