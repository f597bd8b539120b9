"""Reports: the papers' tables with the published numbers beside ours, and figures.

Everything is rebuilt from a run folder alone (``suite.json``, the cell records in ``cells/``
and the arrays and views the run saved beside them); the report never re-runs a cell nor reads
a test image, so a committed run folder reports on a fresh clone. ``table.md`` /
``table.csv`` (:mod:`~benchmark.report.tables`), ``paper_comparison.md`` and ``es_wmv.md``
(:mod:`~benchmark.report.comparison`), and PNG figures: PSNR-vs-iteration curves, an image
grid, a network's snapshots as a strip and an animated GIF
(:mod:`~benchmark.report.figures`).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from benchmark.provenance import changed_files, changed_parts
from benchmark.report.authors import agreement
from benchmark.report.comparison import write_comparison, write_es_table
from benchmark.report.figures import figure_curves, figure_grid, figure_snapshots
from benchmark.report.files import load_run
from benchmark.report.notes import coverage
from benchmark.report.published import PAPER_NUMBERS, WITHIN_DB, published
from benchmark.report.tables import write_tables
from benchmark.results_file import read_provenance
from benchmark.runfolder import Manifest, atomic_write, cells_dir

__all__ = [
    "PAPER_NUMBERS",
    "NoRecordsError",
    "check_index_writable",
    "published",
    "summary_line",
    "write_comparison",
    "write_index",
    "write_report",
]


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
    run = load_run(out)
    meta, records = run.manifest, run.records
    if not records and (out / "results.csv").is_file():
        raise NoRecordsError(
            f"{out} has no cell records ({cells_dir(out)} is missing or empty: a committed "
            "report keeps only its tables). Its tables are left as they are; run the suite "
            "into this folder to rebuild them."
        )
    if not records:
        raise NoRecordsError(
            f"{out} has no finished cell yet (a run still on its first cell, or one stopped "
            "before): no table written; report it when a cell has finished"
        )
    missing = run.missing_cells + len(run.unusable)
    written = write_tables(out, meta, records, missing_cells=missing)
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
    """One line for the index: what the suite reproduces and how close it came, and whether
    its numbers were made by the current code."""
    run = load_run(out)
    meta, records = run.manifest, run.records
    comparison = out / "paper_comparison.csv"
    ok = sum(r.ok for r in records)
    results = pd.read_csv(out / "results.csv") if (out / "results.csv").is_file() else None
    if not records and results is not None:
        # A committed report without its records: count from the table it was made with.
        ok = results[results.status == "ok"].key.nunique()
    line = f"{ok}/{len(meta.keys or records)} cells"
    held = coverage(meta)
    if held and results is not None:
        done = results[results.status == "ok"]
        images = (done.dataset + "/" + done.image).groupby(done.method, sort=False).nunique()
        order = [m for m in meta.grid_methods if m in images.index]
        images = images.reindex(order + [m for m in images.index if m not in order])
        each = ", ".join(f"{method} {count}" for method, count in images.items())
        held += f"; images per method: {each}"
    line += f" ({held.replace('of the suite', 'images of the suite')})" if held else ""
    if results is not None:
        line += f"; {code_status(results, out)}"
    authors = out / "authors_comparison.csv"
    if authors.is_file() and authors.stat().st_size > 1:
        found = agreement(pd.read_csv(authors))
        line += f"; {found}" if found else ""
    if comparison.is_file() and comparison.stat().st_size > 1:
        table = pd.read_csv(comparison)
        if "complete" in table:  # a mean over other images than the paper's never compares
            table.loc[~table.complete.astype(bool), "difference"] = float("nan")
        if len(table) and table.difference.notna().any():
            # a mean only where ours covers the paper's images (else its difference is NaN)
            means = table[(table.image == "mean") & table.difference.notna()]
            shown = means if len(means) else table[table.difference.notna()]
            implausible = table.implausible.astype(bool) if "implausible" in table else None
            parts = [
                f"{r.image}: {r.ours} {r['our psnr']:.2f} vs {r.published} {r['their psnr']:.2f} dB"
                + (" (published implausible)" if bool(r.get("implausible", False)) else "")
                for _, r in shown.head(3).iterrows()
            ]
            close = table.difference.abs() <= WITHIN_DB
            within = (close & ~implausible if implausible is not None else close).sum()
            line += (
                f"; published numbers: {within}/{table.difference.notna().sum()} within "
                f"{WITHIN_DB} dB; " + "; ".join(parts)
            )
        elif len(table) and "not compared" in table and (table["not compared"] == "crop").all():
            line += "; published numbers: on the paper's whole images, not compared with crops"
    return line


def code_status(results: pd.DataFrame, out: Path) -> str:
    """Whether a results table was computed by the current code and data: each ``code`` and
    ``inputs`` fingerprint of its successful rows, re-hashed from what the folder's
    ``provenance.json`` says it hashed (no method is imported)."""
    if "code" not in results or results.code.isna().all():
        return "code fingerprint not recorded (computed before dipbench recorded one)"
    stored = read_provenance(out)
    if stored is None:
        return "**no provenance.json: whether the current code computed it is unknown**: re-run"
    code, inputs = stored.get("code", {}), stored.get("inputs", {})
    rows = results[results.status == "ok"]
    changed = []
    for key, group in rows.groupby("method"):
        stale = any(changed_files(code.get(str(f))) for f in set(group.code))
        if "inputs" in group:
            parts = [f for f in set(group.inputs.dropna().astype(str)) if f]
            stale = stale or any(
                f not in inputs or changed_parts({"parts": inputs[f]}) for f in parts
            )
        if stale:
            changed.append(key)
    if changed:
        return f"**computed by code that has changed since** ({', '.join(changed)}): re-run"
    return "computed by the current code"


INDEX_TITLE = "# dipbench reports"


def _report_folders(root: Path) -> list[Path]:
    """``<profile>/<suite>`` folders with a ``suite.json`` (hidden ones, such as a publish's
    staging, are not reports), ``full`` first."""
    found = [p.parent for p in Path(root).glob("*/*/suite.json")]
    shown = [p for p in found if not p.name.startswith(".") and not p.parent.name.startswith(".")]
    # the papers' protocols first, then the smaller profiles
    rank = {"full": 0, "quick": 1, "ci": 2}
    return sorted(shown, key=lambda p: (rank.get(p.parent.name, 3), p.parent.name, p.name))


def _is_our_index(path: Path) -> bool:
    try:
        with path.open(encoding="utf-8") as handle:
            return handle.readline().rstrip("\n") == INDEX_TITLE
    except (OSError, UnicodeDecodeError):
        return False


def check_index_writable(root: Path) -> None:
    """Raise ``FileExistsError`` when ``root/README.md`` exists and is not our index."""
    index = Path(root) / "README.md"
    if index.exists() and not _is_our_index(index):
        raise FileExistsError(
            f"{index} was not written by dipbench: it is left as it is (no index written); "
            "choose another folder"
        )


def write_index(root: Path) -> Path:
    """``README.md`` of a reports folder: every run folder with its tables and figures.

    Raises
    ------
    FileNotFoundError
        ``root`` holds no run folder (``<profile>/<suite>/suite.json``): its README.md,
        if any, is not ours to overwrite.
    FileExistsError
        ``root/README.md`` exists and is not an index that dipbench wrote.
    """
    root = Path(root)
    if not _report_folders(root):
        raise FileNotFoundError(
            f"{root} holds no run folder (<profile>/<suite>/suite.json): no index written"
        )
    check_index_writable(root)
    lines = [
        INDEX_TITLE,
        "",
        "Generated by `dipbench report`; each folder holds `table.md`, `table.csv`, "
        "`paper_comparison.md` and figures. `full` folders are the papers' protocols, "
        "listed first; one can hold part of its suite's grid (a report grows by `dipbench "
        "publish`; its line says how much). `quick` and `ci` folders are NOT the papers' "
        "protocols (crops, fewer iterations, narrower networks).",
        "",
    ]
    for out in _report_folders(root):
        meta = Manifest.read(out)
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
            f"## {meta.suite} ({meta.profile})",
            "",
            meta.title + ".",
            "",
            f"- {summary_line(out)}",
            f"- {links}",
            "",
        ]
    lines += _absent_suites([Manifest.read(out) for out in _report_folders(root)])
    atomic_write(root / "README.md", lambda p: p.write_text("\n".join(lines), encoding="utf-8"))
    return root / "README.md"


def _absent_suites(manifests: list[Manifest]) -> list[str]:
    """A line per profile of the index naming the packaged suites it has no report of."""
    from benchmark.suites import packaged_suites

    present = {(m.profile, m.suite) for m in manifests}
    lines = []
    for profile in sorted({profile for profile, _ in present}):
        absent = [s for s in packaged_suites() if (profile, s) not in present]
        if absent:
            lines += [
                f"No {profile} report here of {', '.join(absent)}: no run of "
                f"{'it' if len(absent) == 1 else 'them'} at this profile was published "
                "(`dipbench publish RUN` adds one; docs/reports.md says why one is missing).",
                "",
            ]
    return lines
