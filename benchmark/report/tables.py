"""The report's tables: methods as rows, images as columns, a mean column, PSNR and SSIM, one
table per degradation level, with the published numbers beside ours (``table.md``,
``table.csv``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmark.runner.records import atomic_write, record_rows

PAPER_NUMBERS = Path(__file__).resolve().parents[1] / "data" / "paper_numbers.csv"


OUTPUT_LABELS = {
    "out": "",
    "last": "last",
    "ema": "EMA",
    "es": "ES-WMV",
    "best_loss": "best loss",
    "oracle": "oracle",
}


PAPER_LABELS = {
    "dip": "DIP",
    "dip_ema": "DIP EMA",
    "dip_ema_2runs": "DIP EMA, 2 runs",
    "dip_released": "DIP",
    "papyan_csc": "Papyan et al.",
    "cbm3d": "CBM3D",
    "nlm": "NLM",
    "bicubic": "Bicubic",
    "srresnet": "SRResNet",
    "glasner": "Glasner et al.",
    "lapsrn": "LapSRN",
    "no_prior": "No prior",
    "tv_prior": "TV prior",
    "deep_decoder": "Deep Decoder",
    "bm3d": "BM3D",
    "noisy": "Noisy input",
}


ORACLE_NOTE = (
    "† oracle: the best PSNR against the ground truth over every output the fit tracks (each "
    "step's output, the EMA at each step and the final weights' output; chosen by whole-image "
    "RGB/gray MSE, so under `sr-y` it can sit a hair under another output); it uses the clean "
    "image and is not a method's result."
)


SUSPECT_MARK = "‡"


SUSPECT_NOTE = (
    f"{SUSPECT_MARK} suspect: a network output more than 1 dB under its task's trivial baseline "
    "(full profile), or `last` more than 10 dB under the same fit's oracle; the reasons are "
    "listed under the table. Such a number is a bug until explained."
)


NOT_DETECTED_MARK = "§"


NOT_DETECTED_NOTE = (
    f"{NOT_DETECTED_MARK} ES-WMV did not detect a stop (its patience never ran out): the value "
    "is the minimum-variance output so far, not a detection; see `es_wmv.md`."
)


WITHIN_DB = 0.5


WINDOW_NOTE = "W = 100 outputs, patience P = 1000 iterations unless the suite sets others"


def results_table(records: list[dict[str, Any]]) -> pd.DataFrame:
    """results.csv rows from records alone."""
    return pd.DataFrame([row for r in records for row in record_rows(r)])


def published(meta: dict[str, Any]) -> pd.DataFrame:
    """The published rows of ``paper_numbers.csv`` that belong to this suite, with our dataset
    names (e.g. ``set5`` becomes ``set5_x4_gt``) and, where the suite's ``paper.degradations``
    says a published method saw another input than the paper's degradation name suggests, our
    name of that input (DIP's bicubic row was computed on ``downsample_bicubic``, not on DIP's
    Lanczos ``downsample``)."""
    paper = meta.get("paper") or {}
    if not paper.get("source"):
        return pd.DataFrame(
            columns=[
                "dataset",
                "image",
                "degradation",
                "level",
                "method",
                "psnr",
                "kind",
                "table",
                "paper_dataset",
            ]
        )
    numbers = pd.read_csv(PAPER_NUMBERS)
    numbers = numbers[
        (numbers.paper == paper["source"]) & numbers.table.isin(paper.get("tables", []))
    ]
    rename = paper.get("datasets", {})
    inputs = paper.get("degradations", {})
    rows = []
    for ours in meta["datasets"]:
        theirs = rename.get(ours, ours)
        part = numbers[numbers.dataset == theirs].copy()
        part["dataset"] = ours
        part["paper_dataset"] = theirs
        part["degradation"] = [
            inputs.get(m, d) for m, d in zip(part.method, part.degradation, strict=True)
        ]
        rows.append(part)
    return pd.concat(rows, ignore_index=True) if rows else numbers.iloc[:0]


def row_label(meta: dict[str, Any], method: str, output: str) -> str:
    labels = {m["key"]: m["label"] for m in meta["methods"]}
    base = labels.get(method, method)
    suffix = OUTPUT_LABELS.get(output, output)
    label = f"{base} ({suffix})" if suffix else base
    return f"{label} †" if output == "oracle" else label


def _groups(meta: dict[str, Any], results: pd.DataFrame) -> list[tuple[tuple, pd.DataFrame]]:
    keys = ["degradation", "level"] + (
        ["dataset"] if meta.get("report", {}).get("by_dataset") else []
    )
    ok = results.copy()
    return [(k if isinstance(k, tuple) else (k,), g) for k, g in ok.groupby(keys, sort=False)]


def _column_names(group: pd.DataFrame) -> pd.Series:
    several = group.dataset.nunique() > 1
    return (group.dataset + "/" + group.image) if several else group.image


def wide_table(
    meta: dict[str, Any], group: pd.DataFrame, paper: pd.DataFrame, metric: str
) -> pd.DataFrame:
    """Rows: published methods (PSNR only), then ours; columns: images and ``mean``.

    A failed or missing cell is NaN; the mean is then over the images that have a value, and
    ``n`` says how many that is.
    """
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
    ours["mean"] = ours[columns].mean(axis=1)
    ours["n"] = ours[columns].notna().sum(axis=1)
    ours.insert(0, "source", ["ours (oracle)" if r.endswith("†") else "ours" for r in ours.index])
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
    for (method, kind), part in mine.groupby(["method", "kind"], sort=False):
        label = f"{PAPER_LABELS.get(method, method)} ({'paper' if kind == 'published' else kind})"
        values = {c: np.nan for c in columns}
        for r in part.itertuples():
            if r.image == "mean":
                values["mean"] = r.psnr
            else:
                column = r.image if len(datasets) == 1 else f"{r.dataset}/{r.image}"
                if column in values:
                    values[column] = r.psnr
        if "mean" not in values:
            present = [values[c] for c in columns if not np.isnan(values[c])]
            values["mean"] = float(np.mean(present)) if len(present) == len(columns) else np.nan
        values["n"] = sum(not np.isnan(values[c]) for c in columns)
        values["source"] = "paper" if kind == "published" else kind
        rows[label] = values
    theirs = pd.DataFrame.from_dict(rows, orient="index")[ours.columns]
    return pd.concat([theirs, ours])


def _marks(meta: dict[str, Any], group: pd.DataFrame) -> dict[tuple[str, str], str]:
    """``{(row label, column): mark}``: suspect cells, and ES-WMV values that detected nothing."""
    group = group.assign(column=_column_names(group))
    marks: dict[tuple[str, str], str] = {}
    for r in group[group.status == "ok"].itertuples():
        mark = ""
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


def _markdown(
    table: pd.DataFrame, digits: int, marks: dict[tuple[str, str], str] | None = None
) -> str:
    marks = marks or {}
    columns = [c for c in table.columns if c not in ("source", "n")]
    header = "| method | " + " | ".join(columns) + " |"
    lines = [header, "|" + "---|" * (len(columns) + 1)]
    for label, row in table.iterrows():
        cells = []
        for c in columns:
            value = row[c]
            if pd.isna(value):
                cells.append("failed" if row["source"].startswith("ours") and c != "mean" else "")
            else:
                text = f"{value:.{digits}f}" + marks.get((label, c), "")
                if c == "mean" and row["source"].startswith("ours") and row["n"] < len(columns) - 1:
                    text += f" (n={int(row['n'])})"
                cells.append(text)
        name = label if row["source"].startswith("ours") else f"*{label}*"
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _header(meta: dict[str, Any], records: list[dict[str, Any]]) -> list[str]:
    ok = [r for r in records if r.get("status") == "ok"]
    versions = ok[0]["versions"] if ok else {}
    devices = sorted({r.get("device", "?") for r in records})
    revisions = sorted({r.get("git_revision", "?") for r in records})
    profile = meta["profile"]
    caveat = (
        "the paper's protocol"
        if profile == "full"
        else f"**{profile} profile: NOT the paper's protocol** (smaller crops, fewer iterations "
        "or narrower networks; the published numbers are shown for orientation only)"
    )
    lines = [
        f"# {meta['title']}",
        "",
        f"- suite `{meta['suite']}`, profile `{profile}`: {caveat}",
        f"- protocol `{meta['protocol']}`; images: {len(meta['images'])}"
        + (f", center crops of {meta['crop']} px" if meta.get("crop") else ", whole images"),
        f"- device(s): {', '.join(devices)}; git revision(s): {', '.join(revisions)}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
    ]
    if meta.get("notes"):
        lines.append(f"- notes: {meta['notes']}")
    failed = [r for r in records if r.get("status") != "ok"]
    if failed or meta.get("missing_cells"):
        lines.append(
            f"- **gaps:** {len(failed)} failed cell(s), {meta.get('missing_cells', 0)} "
            "cell(s) not run; their entries read `failed` or are empty, and a mean over "
            "fewer images says `(n=...)`"
        )
    lines += [
        "",
        "Rows in *italics* are published numbers. " + ORACLE_NOTE,
        "",
        SUSPECT_NOTE + " " + NOT_DETECTED_NOTE,
        "",
    ]
    return lines


def write_tables(out: Path, meta: dict[str, Any], records: list[dict[str, Any]]) -> list[Path]:
    """``table.md`` and ``table.csv`` in the paper's layout."""
    results = results_table(records)
    paper = published(meta)
    md = _header(meta, records)
    frames = []
    for key, group in _groups(meta, results):
        title = group_title(key, group)
        marks = _marks(meta, group)
        for metric, digits in (("psnr", 2), ("ssim", 4)):
            table = wide_table(meta, group, paper, metric)
            md += [
                f"## {title}: {metric.upper()}" + (" (dB)" if metric == "psnr" else ""),
                "",
                _markdown(table, digits, marks),
                "",
            ]
            if metric == "psnr":
                suspects = _suspect_lines(group)
                md += suspects + ([""] if suspects else [])
            frames.append(
                table.reset_index(names="method").assign(
                    metric=metric,
                    degradation=group.degradation.iloc[0],
                    level=group.level.iloc[0],
                    dataset="+".join(sorted(set(group.dataset))),
                )
            )
    atomic_write(out / "table.md", lambda p: p.write_text("\n".join(md)))
    csv = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    front = ["degradation", "level", "dataset", "metric", "method", "source"]
    csv = csv[front + [c for c in csv.columns if c not in front]] if len(csv) else csv
    atomic_write(out / "table.csv", lambda p: csv.to_csv(p, index=False))
    return [out / "table.md", out / "table.csv"]


def group_title(key: tuple, group: pd.DataFrame) -> str:
    severity = group.severity.dropna()
    level = f"{key[0]} {key[1]:g}" + (
        f" (ImageNet-C severity {int(severity.iloc[0])})" if len(severity) else ""
    )
    return level + (f", {key[2]}" if len(key) > 2 else "")
