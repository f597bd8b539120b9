"""Reports: the papers' tables with the published numbers beside ours, and figures.

Everything is rebuilt from a run folder's cell records (``cells/*.json`` and the grid listed
in ``suite.json``): ``table.md`` / ``table.csv`` (methods as rows, images as columns, a mean
column; PSNR and SSIM; one table per degradation level), ``paper_comparison.md`` (ours minus
published), and PNG figures: PSNR-vs-iteration curves, an image grid, DIP's snapshots as a
strip and an animated GIF.
"""

from __future__ import annotations

import io
import json
from dataclasses import fields
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image  # noqa: E402

from benchmark.runner import atomic_write, cells_dir, read_record, record_rows  # noqa: E402
from benchmark.suites import Cell  # noqa: E402

PAPER_NUMBERS = Path(__file__).with_name("data") / "paper_numbers.csv"
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


# --- loading --------------------------------------------------------------------------------


def load_run(out: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The run's ``suite.json`` and the records of its grid (all records if it lists none)."""
    out = Path(out)
    meta_path = out / "suite.json"
    if not meta_path.is_file():
        raise FileNotFoundError(
            f"{out} is not a run folder: no suite.json (run dipbench run first)"
        )
    meta = json.loads(meta_path.read_text())
    folder = cells_dir(out)
    paths = (
        [folder / f"{k}.json" for k in meta["keys"]]
        if meta.get("keys")
        else sorted(folder.glob("*.json"))
    )
    records = [r for r in (read_record(p) for p in paths) if r is not None]
    meta["missing_cells"] = len(paths) - len(records)
    return meta, records


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


# --- tables ---------------------------------------------------------------------------------


def _label(meta: dict[str, Any], method: str, output: str) -> str:
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
        row=[_label(meta, m, o) for m, o in zip(ok.method, ok.output, strict=True)]
    ).pivot_table(index="row", columns="column", values=metric, aggfunc="mean", sort=False)
    order = list(
        dict.fromkeys(_label(meta, m, o) for m, o in zip(ok.method, ok.output, strict=True))
    )
    failed = sorted(
        {_label(meta, m, "out").split(" (")[0] for m in group[group.status != "ok"].method}
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
            marks[(_label(meta, r.method, r.output), r.column)] = mark
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
        title = _group_title(key, group)
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


def _group_title(key: tuple, group: pd.DataFrame) -> str:
    severity = group.severity.dropna()
    level = f"{key[0]} {key[1]:g}" + (
        f" (ImageNet-C severity {int(severity.iloc[0])})" if len(severity) else ""
    )
    return level + (f", {key[2]}" if len(key) > 2 else "")


def write_comparison(out: Path, meta: dict[str, Any], records: list[dict[str, Any]]) -> Path:
    """``paper_comparison.md``: ours minus published where the paper gives a number."""
    results = results_table(records)
    paper = published(meta)
    compare = (meta.get("paper") or {}).get("compare", {})
    lines = [
        f"# {meta['title']}: ours minus published",
        "",
        f"Profile `{meta['profile']}`"
        + (
            ""
            if meta["profile"] == "full"
            else " (not the paper's protocol: differences are for orientation, not a verdict)"
        )
        + ".",
        "",
    ]
    if paper.empty or not compare:
        lines.append("No published numbers to compare with for this suite.")
        _write_lines(out / "paper_comparison.md", lines)
        return out / "paper_comparison.md"
    ok = results[results.status == "ok"] if len(results) else results
    paper, not_run = _pair_with_grid(paper, results)
    rows = []
    ours_images = set(meta["images"])
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
        complete = theirs.image != "mean" or mine.image.nunique() == len(
            [i for i in meta["images"] if i.startswith(theirs.dataset + "/")]
        )
        rows.append(
            {
                "dataset": theirs.dataset,
                "image": theirs.image,
                "level": theirs.level,
                "published": f"{PAPER_LABELS.get(theirs.method, theirs.method)} ({theirs.kind})",
                "ours": _label(meta, method, output),
                "their psnr": theirs.psnr,
                "our psnr": ours,
                "difference": ours - theirs.psnr,
                "complete": bool(complete),
            }
        )
    table = pd.DataFrame(rows)
    if table.empty:
        lines.append("No published number matches a method of this run.")
    else:
        within = (table.difference.abs() <= WITHIN_DB).sum()
        scored = table.difference.notna().sum()
        lines += [
            f"{within} of {scored} compared cells within {WITHIN_DB} dB "
            f"({len(table) - scored} without our number).",
            "",
        ]
        shown = table.copy()
        for c in ("their psnr", "our psnr", "difference"):
            pattern = "{:+.2f}" if c == "difference" else "{:.2f}"
            shown[c] = shown[c].map(lambda v, p=pattern: "" if pd.isna(v) else p.format(v))
        lines.append("| " + " | ".join(shown.columns[:-1]) + " |")
        lines.append("|" + "---|" * (len(shown.columns) - 1))
        for r in shown.itertuples(index=False):
            values = list(r)[:-1]
            lines.append(
                "| "
                + " | ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)
                + " |"
            )
        if (~table.complete).any():
            lines += [
                "",
                "A mean over fewer images than the paper's is marked incomplete "
                "in table.csv (`complete = False`).",
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
    _write_lines(out / "paper_comparison.md", lines)
    atomic_write(out / "paper_comparison.csv", lambda p: table.to_csv(p, index=False))
    return out / "paper_comparison.md"


def write_es_table(out: Path, meta: dict[str, Any], records: list[dict[str, Any]]) -> Path | None:
    """``es_wmv.md`` and ``.csv``: per network cell with an ES-WMV output, the detected
    iteration (or "not detected"), the PSNR-peak iteration of the per-step output and the gap,
    so a reader sees when early stopping helps and when it cannot."""
    rows = []
    for r in records:
        if r.get("status") != "ok":
            continue
        scores = {row["output"]: row["psnr"] for row in r.get("rows", [])}
        info = r.get("info", {})
        if "es" not in scores or "es_stop_iteration" not in info:
            continue
        curves = _curves(out, r["key"])
        peak_it = peak_psnr = es_curve_psnr = np.nan
        if "curve_psnr_last" in curves and np.isfinite(curves["curve_psnr_last"]).any():
            its, values = curves["curve_iteration"], curves["curve_psnr_last"]
            i = int(np.nanargmax(values))
            peak_it, peak_psnr = int(its[i]), float(values[i])
            if info.get("es_iteration"):  # the curve's value nearest to ES-WMV's pick
                es_curve_psnr = float(values[int(np.abs(its - info["es_iteration"]).argmin())])
        detected = info["es_stop_iteration"] is not None
        cell = r["cell"]
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
        f"# {meta['title']}: ES-WMV, detected against peak",
        "",
        f"Profile `{meta['profile']}`. ES-WMV (window {WINDOW_NOTE}) reports the output at the "
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

    def number(value: Any, pattern: str) -> str:
        return "" if pd.isna(value) else pattern.format(value)

    for r in table.itertuples():
        detected = (
            "not detected" if pd.isna(r.detected_iteration) else f"{int(r.detected_iteration)}"
        )
        lines.append(
            f"| {r.dataset}/{r.image} | {r.degradation} | {r.level:g} | {r.method} | {detected} "
            f"| {number(r.es_iteration, '{:.0f}')} | {number(r.peak_iteration, '{:.0f}')} "
            f"| {number(r.gap_db, '{:+.2f}')} | {r.es_psnr:.2f} | {r.last_psnr:.2f} |"
        )
    _write_lines(out / "es_wmv.md", lines)
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


# --- figures --------------------------------------------------------------------------------


def _curves(out: Path, key: str) -> dict[str, np.ndarray]:
    path = cells_dir(out) / f"{key}.npz"
    if not path.is_file():
        return {}
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def _network_records(records: list[dict[str, Any]], method: str) -> list[dict[str, Any]]:
    return [r for r in records if r.get("status") == "ok" and r["cell"]["method"] == method]


def figure_curves(
    out: Path, meta: dict[str, Any], records: list[dict[str, Any]], max_images: int = 4
) -> list[Path]:
    """PSNR against iterations of DIP and DD, one figure per degradation level.

    DIP: the un-averaged output and its EMA, the ES-WMV stop and the oracle peak marked;
    DD: its output.
    """
    written = []
    by_level: dict[tuple, list[dict[str, Any]]] = {}
    for r in _network_records(records, "dip") + _network_records(records, "dd"):
        by_level.setdefault((r["cell"]["degradation"], r["cell"]["level"]), []).append(r)
    for (degradation, level), recs in _middle_levels(by_level).items():
        images = list(dict.fromkeys(f"{r['cell']['dataset']}/{r['cell']['image']}" for r in recs))
        images = images[:max_images]
        fig, axes = plt.subplots(1, len(images), figsize=(4.2 * len(images), 3.4), squeeze=False)
        for ax, image in zip(axes[0], images, strict=True):
            for r in recs:
                if f"{r['cell']['dataset']}/{r['cell']['image']}" != image:
                    continue
                c = _curves(out, r["key"])
                if "curve_iteration" not in c:
                    continue
                it, name = c["curve_iteration"], _label(meta, r["cell"]["method_key"], "out")
                ax.plot(it, c["curve_psnr_last"], lw=1, label=f"{name}")
                if r["cell"]["method"] == "dip":
                    ax.plot(it, c["curve_psnr_ema"], lw=1, ls="--", label=f"{name} EMA")
                    es = r.get("info", {}).get("es_iteration")
                    if es:
                        ax.axvline(es, color="gray", lw=0.8, ls=":", label="ES-WMV pick")
                    peak = int(np.nanargmax(c["curve_psnr_last"]))
                    ax.plot(it[peak], c["curve_psnr_last"][peak], "k*", ms=8, label="oracle peak")
            ax.set_title(image.split("/")[-1], fontsize=9)
            ax.set_xlabel("iteration")
            ax.set_ylabel("PSNR (dB)")
            ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize=7)
        fig.suptitle(f"{meta['suite']} ({meta['profile']}): {degradation} {level:g}", fontsize=10)
        fig.tight_layout()
        path = out / f"curves_{degradation}_{level:g}.png"
        _save_figure(fig, path)
        written.append(path)
    return written


def _middle_levels(by_level: dict[tuple, list]) -> dict[tuple, list]:
    """One level per degradation kind (the middle one) keeps the figures few."""
    kinds: dict[str, list[float]] = {}
    for kind, level in by_level:
        kinds.setdefault(kind, []).append(level)
    chosen = {(k, sorted(levels)[(len(levels) - 1) // 2]) for k, levels in kinds.items()}
    return {key: recs for key, recs in by_level.items() if key in chosen}


def _write_lines(path: Path, lines: list[str]) -> None:
    atomic_write(path, lambda p: p.write_text("\n".join(lines) + "\n"))


def _save_figure(fig: Any, path: Path) -> None:
    """Save and close a figure as PNG. Every report file is written atomically: two runs
    sharing a folder rewrite its report, and neither may read the other's half-written file."""
    atomic_write(path, lambda p: fig.savefig(p, dpi=80, format="png"))
    plt.close(fig)


def _save_small(fig: Any, path: Path) -> None:
    """Save a figure as a palette PNG: photographs in a grid compress poorly in RGB."""
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=80, format="png")
    plt.close(fig)
    with Image.open(buffer) as im:
        small = im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    atomic_write(path, lambda p: small.save(p, format="PNG", optimize=True))


def _save_gif(frames: list[Image.Image], path: Path) -> None:
    """An animation of ``frames``, 0.4 s each, looping."""
    atomic_write(
        path,
        lambda p: frames[0].save(
            p, format="GIF", save_all=True, append_images=frames[1:], duration=400, loop=0
        ),
    )


def _cell(record: dict[str, Any]) -> Cell:
    values = dict(record["cell"])
    values["outputs"] = tuple(values["outputs"])
    names = {f.name for f in fields(Cell)}
    return Cell(**{k: v for k, v in values.items() if k in names})


def _show(ax: Any, image: np.ndarray, title: str) -> None:
    ax.imshow(image[..., 0] if image.shape[2] == 1 else image, cmap="gray", vmin=0, vmax=1)
    ax.set_title(title, fontsize=7)
    ax.axis("off")


def figure_grid(
    out: Path, meta: dict[str, Any], records: list[dict[str, Any]], max_images: int = 3
) -> Path | None:
    """Clean, degraded and each method's output (PSNR in the captions) for a few images of
    the suite's first degradation level."""
    from benchmark.metrics import get_protocol
    from benchmark.runner import prepare

    ok = [r for r in records if r.get("status") == "ok"]
    if not ok:
        return None
    first = (ok[0]["cell"]["degradation"], ok[0]["cell"]["level"])
    ok = [r for r in ok if (r["cell"]["degradation"], r["cell"]["level"]) == first]
    images = list(dict.fromkeys((r["cell"]["dataset"], r["cell"]["image"]) for r in ok))[
        :max_images
    ]
    methods = list(dict.fromkeys(r["cell"]["method_key"] for r in ok))
    protocol = get_protocol(meta["protocol"])
    fig, axes = plt.subplots(
        len(images),
        2 + len(methods),
        squeeze=False,
        figsize=(1.9 * (2 + len(methods)), 2.1 * len(images)),
    )
    for row, (dataset, image) in zip(axes, images, strict=True):
        recs = {
            r["cell"]["method_key"]: r
            for r in ok
            if (r["cell"]["dataset"], r["cell"]["image"]) == (dataset, image)
        }
        any_record = next(iter(recs.values()))
        observation, target = prepare(_cell(any_record))
        _show(row[0], target, f"{image}: clean")
        shown = observation.y
        if shown.shape != target.shape:  # super-resolution: show the input at output size
            shown = np.kron(shown, np.ones((observation.factor, observation.factor, 1)))
        _show(
            row[1], np.clip(shown, 0, 1), f"degraded {protocol.score(shown, target)['psnr']:.2f} dB"
        )
        for ax, method in zip(row[2:], methods, strict=True):
            record = recs.get(method)
            if record is None:
                ax.axis("off")
                continue
            png = cells_dir(out) / f"{record['key']}.png"
            if not png.is_file():
                ax.axis("off")
                continue
            pixels = np.asarray(Image.open(png), np.float32) / 255
            pixels = pixels[..., None] if pixels.ndim == 2 else pixels
            default = record.get("default_output", "out")
            score = next((x["psnr"] for x in record["rows"] if x["output"] == default), np.nan)
            _show(ax, pixels, f"{_label(meta, method, default)} {score:.2f} dB")
    fig.suptitle(f"{meta['suite']} ({meta['profile']}): {first[0]} {first[1]:g}", fontsize=9)
    fig.tight_layout()
    path = out / "grid.png"
    _save_small(fig, path)
    return path


def figure_snapshots(out: Path, meta: dict[str, Any], records: list[dict[str, Any]]) -> list[Path]:
    """DIP's output at chosen iterations for one image: a strip (PNG) and an animated GIF."""
    for record in _network_records(records, "dip"):
        data = _curves(out, record["key"])
        snaps = sorted(
            (int(k.split("_")[1]), v) for k, v in data.items() if k.startswith("snapshot_")
        )
        if not snaps:
            continue
        fig, axes = plt.subplots(1, len(snaps), figsize=(1.8 * len(snaps), 2.1), squeeze=False)
        for ax, (it, pixels) in zip(axes[0], snaps, strict=True):
            _show(ax, pixels.astype(np.float32) / 255, f"iteration {it}")
        cell = record["cell"]
        fig.suptitle(
            f"DIP on {cell['image']} ({cell['degradation']} {cell['level']:g})", fontsize=9
        )
        fig.tight_layout()
        strip = out / "snapshots.png"
        _save_small(fig, strip)
        frames = [Image.fromarray(p[..., 0] if p.shape[2] == 1 else p) for _, p in snaps]
        gif = out / "snapshots.gif"
        _save_gif(frames, gif)
        return [strip, gif]
    return []


# --- a whole folder -------------------------------------------------------------------------


class NoRecordsError(FileNotFoundError):
    """A run folder whose tables exist but whose cell records do not (a committed report)."""


def write_report(out: Path, *, figures: bool = True) -> list[Path]:
    """(Re)write a run folder's tables, comparison and figures from its cell records.

    Raises
    ------
    NoRecordsError
        The folder has its tables but none of its cell records (``cells/`` is not kept in
        git): rewriting would empty them, so nothing is written.
    """
    out = Path(out)
    meta, records = load_run(out)
    if not records and (out / "results.csv").is_file():
        raise NoRecordsError(
            f"{out} has no cell records ({cells_dir(out)} is missing or empty: a committed "
            "report keeps only its tables). Its tables are left as they are; run the suite "
            "into this folder to rebuild them."
        )
    written = write_tables(out, meta, records)
    written.append(write_comparison(out, meta, records))
    es_table = write_es_table(out, meta, records)
    written += [es_table] if es_table else []
    if figures and records:
        written += figure_curves(out, meta, records)
        grid = figure_grid(out, meta, records)
        written += [grid] if grid else []
        written += figure_snapshots(out, meta, records)
    return written


def summary_line(out: Path) -> str:
    """One line for the index: what the suite reproduces and how close it came."""
    meta, records = load_run(out)
    comparison = out / "paper_comparison.csv"
    ok = sum(r.get("status") == "ok" for r in records)
    if not records and (out / "results.csv").is_file():
        # A committed report without its records: count from the table it was made with.
        results = pd.read_csv(out / "results.csv")
        ok = results[results.status == "ok"].key.nunique()
    line = f"{ok}/{len(meta.get('keys') or records)} cells"
    if comparison.is_file() and comparison.stat().st_size > 1:
        table = pd.read_csv(comparison)
        if len(table) and table.difference.notna().any():
            means = table[(table.image == "mean") & table.difference.notna()]
            shown = means if len(means) else table[table.difference.notna()]
            parts = [
                f"{r.ours} {r['our psnr']:.2f} vs {r.published} {r['their psnr']:.2f} dB"
                for _, r in shown.head(3).iterrows()
            ]
            within = (table.difference.abs() <= WITHIN_DB).sum()
            line += (
                f"; {within}/{table.difference.notna().sum()} within {WITHIN_DB} dB; "
                + "; ".join(parts)
            )
    return line


def write_index(root: Path) -> Path:
    """``README.md`` of a reports folder: every run folder with its tables and figures."""
    root = Path(root)
    lines = [
        "# dipbench reports",
        "",
        "Generated by `dipbench report`; each folder holds `table.md`, `table.csv`, "
        "`paper_comparison.md` and figures. `quick` and `ci` folders are NOT the papers' "
        "protocols (crops, fewer iterations, narrower networks).",
        "",
    ]
    for meta_path in sorted(root.glob("*/*/suite.json")):
        out = meta_path.parent
        meta = json.loads(meta_path.read_text())
        rel = out.relative_to(root)
        figures = sorted(p.name for p in out.glob("*.png")) + sorted(
            p.name for p in out.glob("*.gif")
        )
        links = " · ".join(
            f"[{name}]({rel}/{name})"
            for name in ["table.md", "paper_comparison.md", *figures]
            if (out / name).exists()
        )
        lines += [
            f"## {meta['suite']} ({meta['profile']})",
            "",
            meta["title"] + ".",
            "",
            f"- {summary_line(out)}",
            f"- {links}",
            "",
        ]
    atomic_write(root / "README.md", lambda p: p.write_text("\n".join(lines)))
    return root / "README.md"
