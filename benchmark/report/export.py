"""A run folder's or a published report's numbers for papers and tools (``dipbench export``).

It reads what the report wrote, never a cell again: ``results.csv`` (one row per cell and
output) becomes a tidy long table, one row per cell, output and metric, with the row's label,
the method's options, its seed, the code fingerprint, the wall time and the file that holds the
output (``cells/<key>.outputs.npz``, the array named after the output: every output a table
shows is saved there, losslessly); ``table.csv`` (the papers' layout) becomes LaTeX tables.

Formats: ``parquet`` (``export.parquet``; needs pyarrow), ``json`` (``export.json``, the tidy
rows as records) and ``latex`` (``table.tex``, one ``tabular`` per degradation, level and
metric: rows as in table.md, images and the mean as columns, ``mean \\pm std`` where the suite
has repetitions, and the best value of each column in bold among the results scored on the same
pixels as ours, oracle and trivial-baseline rows aside).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.report.authors import AUTHORS_SOURCE
from benchmark.report.notes import NOT_DETECTED_MARK, STALE_MARK, SUSPECT_MARK
from benchmark.report.spread import SPREAD_COLUMNS, std_column
from benchmark.report.tables import row_label
from benchmark.runfolder import OUTPUTS_SUFFIX, Manifest, atomic_write, cells_dir

FORMATS = ("parquet", "json", "latex")
METRICS = ("psnr", "ssim")
# table.csv's columns that are not an image's (the image columns are the rest)
TABLE_FIELDS = ("degradation", "level", "dataset", "metric", "method", "source", "mean", "n")
TABLE_FIELDS += ("scored_on", *SPREAD_COLUMNS)
ORACLE_MARK = "†"  # an oracle row's label ends with it


def tidy_table(folder: Path) -> pd.DataFrame:
    """One row per cell, output and metric of ``folder``'s ``results.csv``."""
    meta = Manifest.read(folder)
    results = pd.read_csv(folder / "results.csv")
    entries = {m["key"]: m for m in meta.methods}
    pairs = zip(results.method, results.output, strict=True)
    results["label"] = [row_label(meta, m, o) for m, o in pairs]
    results["implementation"] = [entries.get(m, {}).get("method", m) for m in results.method]
    results["method_options"] = [
        json.dumps(entries.get(m, {}).get("options", {}), sort_keys=True) for m in results.method
    ]
    outputs = cells_dir(folder)
    results["output_file"] = [
        f"cells/{key}{OUTPUTS_SUFFIX}" if (outputs / f"{key}{OUTPUTS_SUFFIX}").is_file() else ""
        for key in results.key
    ]
    metrics = [m for m in METRICS if m in results] + [
        c for c in results.columns if c.startswith("metric_")
    ]
    ids = [c for c in results.columns if c not in metrics]
    tidy = results.melt(id_vars=ids, value_vars=metrics, var_name="metric", value_name="value")
    front = ["suite", "profile", "dataset", "image", "degradation", "level", "method", "label"]
    front += ["implementation", "method_options", "output", "oracle", "repetition", "seed"]
    front += ["metric", "value", "code", "seconds", "device", "status", "output_file", "key"]
    return tidy[[c for c in front if c in tidy] + [c for c in tidy if c not in front]]


def latex_tables(folder: Path) -> str:
    """``table.csv`` as LaTeX ``tabular`` environments, one per degradation, level and metric."""
    table = pd.read_csv(folder / "table.csv")
    meta = Manifest.read(folder)
    blocks = []
    keys = ["degradation", "level", "dataset", "metric"]
    for (degradation, level, dataset, metric), part in table.groupby(keys, sort=False):
        images = [c for c in part.columns if c not in TABLE_FIELDS and not c.endswith(" std")]
        images = [c for c in images if part[c].notna().any()]
        columns = [*images, "mean"]
        digits = 2 if metric == "psnr" else 3
        best = _best(part, columns, crops=bool(meta.crop))
        caption = f"{dataset}, {degradation} {level:g}: {metric.upper()}"
        lines = [
            f"% {caption}",
            r"\begin{tabular}{l" + "r" * len(columns) + "}",
            r"\hline",
            " & ".join(["Method", *(latex_text(c) for c in columns)]) + r" \\",
            r"\hline",
        ]
        for index, row in part.iterrows():
            cells = [latex_text(str(row.method))]
            for column in columns:
                cells.append(_number(row, column, digits, bold=best.get(column) == index))
            lines.append(" & ".join(cells) + r" \\")
        lines += [r"\hline", r"\end{tabular}", ""]
        blocks.append("\n".join(lines))
    return "\n".join(blocks)


def _best(part: pd.DataFrame, columns: Sequence[str], *, crops: bool) -> dict[str, int]:
    """The index of each column's best value among the rows that are results scored on the
    same pixels as ours (on crops: ours and the authors' code at these settings; on whole
    images, published numbers too), oracle and trivial-baseline rows aside."""
    source = part.source.astype(str)
    if crops:
        candidates = part[(source == "ours") | (source == AUTHORS_SOURCE)]
    else:
        candidates = part[~source.isin(["ours (oracle)", "ours (trivial)"])]
    best = {}
    for column in columns:
        values = candidates[column].dropna()
        if len(values):
            best[column] = int(values.idxmax())
    return best


def _number(row: pd.Series, column: str, digits: int, *, bold: bool) -> str:
    value = row.get(column, np.nan)
    if pd.isna(value):
        return "--"
    text = f"{value:.{digits}f}"
    spread = row.get("std" if column == "mean" else std_column(column), np.nan)
    if pd.notna(spread):
        text += rf" \pm {spread:.{digits}f}"
    return rf"$\mathbf{{{text}}}$" if bold else f"${text}$"


# LaTeX's special characters and the tables' marks, each as text pdflatex sets (one pass, so
# that no replacement is escaped again)
LATEX_TEXT = str.maketrans(
    {
        "\\": r"\textbackslash{}",
        "&": r"\&",
        "%": r"\%",
        "$": r"\$",
        "#": r"\#",
        "_": r"\_",
        "{": r"\{",
        "}": r"\}",
        "~": r"\textasciitilde{}",
        "^": r"\textasciicircum{}",
        ORACLE_MARK: r"$^\dagger$",
        SUSPECT_MARK: r"$^\ddagger$",
        NOT_DETECTED_MARK: r"\S{}",
        STALE_MARK: r"\P{}",
        "±": r"$\pm$",
        "×": r"$\times$",
        "–": "--",
        "—": "---",
    }
)


def latex_text(text: str) -> str:
    """``text`` as LaTeX sets it in a table: special characters escaped, marks as symbols."""
    return text.translate(LATEX_TEXT)


def export(folder: Path, formats: Sequence[str], out: Path | None = None) -> list[Path]:
    """Write the chosen formats of ``folder`` (a run folder or a published report) into
    ``out`` (default: ``folder/export``); returns the files written.

    Raises
    ------
    FileNotFoundError
        ``folder`` holds no report (no ``suite.json``, ``results.csv`` or ``table.csv``).
    ImportError
        ``parquet`` without pyarrow (the message names the fix).
    """
    folder = Path(folder)
    for name in ("suite.json", "results.csv", "table.csv"):
        if not (folder / name).is_file():
            raise FileNotFoundError(
                f"{folder} holds no {name}: export reads a run folder's report or a published "
                "report (run `dipbench report DIR` first)"
            )
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ValueError(f"unknown format(s) {unknown}; formats: {', '.join(FORMATS)}")
    out = Path(out) if out is not None else folder / "export"
    out.mkdir(parents=True, exist_ok=True)
    written = []
    tidy = tidy_table(folder) if {"parquet", "json"} & set(formats) else None
    if "parquet" in formats:
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ImportError("--format parquet needs pyarrow: pip install pyarrow") from None
        atomic_write(out / "export.parquet", lambda p: tidy.to_parquet(p, index=False))
        written.append(out / "export.parquet")
    if "json" in formats:
        text = tidy.to_json(orient="records", indent=1)
        atomic_write(out / "export.json", lambda p: p.write_text(text, encoding="utf-8"))
        written.append(out / "export.json")
    if "latex" in formats:
        text = latex_tables(folder)
        atomic_write(out / "table.tex", lambda p: p.write_text(text, encoding="utf-8"))
        written.append(out / "table.tex")
    return written
