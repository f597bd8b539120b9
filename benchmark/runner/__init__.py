"""Running suites: resumably, in parallel, or on a Slurm cluster.

The one entry point for a suite's grid is :func:`run_suite`; :func:`run_and_report` runs it
and writes its report (what ``dipbench run`` does), and :func:`reproduce` does that for
several suites and writes their index (``dipbench reproduce``, ``make reproduce``).

- :mod:`~benchmark.runner.records`: cell keys, record files, atomic writes, ``results.csv``;
- :mod:`~benchmark.runner.claims`: lock files, so several runs on one folder split its grid;
- :mod:`~benchmark.runner.cell`: one cell (or a few fitted together): observe, restore,
  score, record;
- :mod:`~benchmark.runner.views`: what the report's image grid shows of the observations;
- :mod:`~benchmark.runner.planning`: pending cells, batches, sizes;
- :mod:`~benchmark.runner.estimate`: the run's time, measured at each shape it fits;
- :mod:`~benchmark.runner.executors`: serial, a pool of workers, Slurm;
- :mod:`~benchmark.runner.progress`: the bars.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from benchmark.provenance import versions
from benchmark.results_file import write_results
from benchmark.runfolder import Record, default_out
from benchmark.runner.availability import fetch_images_of, fetch_suite_images
from benchmark.runner.cell import run_cell
from benchmark.runner.claims import claimed_elsewhere
from benchmark.runner.executors import execute
from benchmark.runner.manifest import (
    RunFolderError,
    check_same_run,
    read_manifest,
    write_manifest,
)
from benchmark.runner.planning import (
    batches,
    default_jobs,
    pending,
    stale,
    stale_summary,
)
from benchmark.runner.records import collect_keys, record_path
from benchmark.runner.views import save_views
from benchmark.suites import Suite

__all__ = [
    "ReproduceResult",
    "RunFolderError",
    "SuiteOutcome",
    "batches",
    "claimed_elsewhere",
    "default_jobs",
    "default_out",
    "execute",
    "pending",
    "reproduce",
    "run_and_report",
    "run_cell",
    "run_suite",
    "stale",
    "stale_summary",
    "fetch_images_of",
    "fetch_suite_images",
    "versions",
]


def run_suite(suite: Suite, out: Path, **options: Any) -> tuple[pd.DataFrame, list[Record]]:
    """Run (or resume) a suite's grid and write ``results.csv``.

    ``options`` are those of :func:`~benchmark.runner.executors.execute`. The run's manifest
    (``suite.json``) is written first and ``results.csv`` even when the run is interrupted, so
    a partial run is still a run folder that ``report`` and ``check`` read (they say how many
    cells are missing). When the run ends, the views of the observations the report's grid
    shows are saved too (:mod:`~benchmark.runner.views`), from the successful cells.

    Returns the collected table and the records computed by this call.

    Examples
    --------
    Telea inpainting of House with half of its pixels missing, from the CI profile of DIP's
    Table 1 (images come from the cache, the mirror or their URL):

    >>> import tempfile
    >>> from benchmark.suites import load_suite
    >>> suite = load_suite(
    ...     "inpainting-table1", "ci", images_subset=["house"], methods_subset=["telea"]
    ... )
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     table, records = run_suite(suite, Path(folder) / "run", show_progress=False)
    >>> table[["image", "method", "output", "status"]].values.tolist()
    [['house', 'telea', 'out', 'ok']]
    >>> round(float(table.psnr.iloc[0]), 2)  # dB against the clean 48x48 crop
    29.32

    Raises
    ------
    RunFolderError
        ``out`` is another suite's or profile's run folder, a folder of other files, or a
        file: nothing is written.
    """
    cells = suite.cells()
    device, threads = options.get("device", "auto"), options.get("threads", 1)
    previous = read_manifest(out)
    check_same_run(previous, suite, out, threads)
    keys = write_manifest(suite, out, cells, device, threads, previous)
    try:
        records = execute(cells, out, **options)
    finally:
        table, found = collect_keys(keys, out)  # a narrower run keeps the folder's others
        write_results(table, out, found)
    done = set(table.key[table.status == "ok"])
    save_views([c for c in cells if record_path(c, out, device, threads).stem in done], out)
    return table, records


@dataclass
class SuiteOutcome:
    """What :func:`run_and_report` did for one suite."""

    out: Path
    table: pd.DataFrame
    failed: list[str]  # one line per failed cell
    suspects: list[str]  # one line per suspect cell


def run_and_report(
    suite: Suite, out: Path, *, write_report: bool = True, **options: Any
) -> SuiteOutcome:
    """Run (or resume) a suite's grid into ``out`` (:func:`run_suite`, whose ``options``
    these are), then write its report: tables and figures, unless ``write_report`` is False.

    A failed cell does not stop the others; it is recorded and named in the outcome.
    """
    table, _ = run_suite(suite, out, **options)
    if write_report:
        from benchmark import report  # the report reads what the run wrote

        report.write_report(out)
    failed = [
        f"{r.dataset}/{r.image} {r.degradation}={r.level:g} {r.method}: {r.error}"
        for r in table[table.status != "ok"].itertuples()
    ]
    return SuiteOutcome(Path(out), table, failed, suspect_lines(table, suite.name))


@dataclass
class ReproduceResult:
    """What :func:`reproduce` did: the folders it wrote and what went wrong."""

    root: Path
    profile: str
    folders: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # suites whose images cannot be had
    failed: list[str] = field(default_factory=list)  # one line per failed cell
    suspects: list[str] = field(default_factory=list)  # one line per suspect cell
    index: Path | None = None


def reproduce(
    suites: Sequence[Suite],
    root: Path,
    *,
    log: Callable[[str], None] = print,
    **options: Any,
) -> ReproduceResult:
    """Run each suite into ``root/<profile>/<suite>``, write its report, then the index.

    A suite whose images cannot be had is skipped (and named); a failed cell does not stop
    the others. ``options`` are those of :func:`run_suite`.
    """
    from benchmark import report

    profile = suites[0].profile if suites else "full"
    result = ReproduceResult(Path(root), profile)
    for suite in suites:
        reason = fetch_suite_images(suite)
        if reason:
            log(f"skipped {suite.name}: its images cannot be had here: {reason}")
            result.skipped.append(suite.name)
            continue
        out = Path(root) / suite.profile / suite.name
        log(f"== {suite.name} ({suite.profile}) -> {out}")
        device, threads = options.get("device", "auto"), options.get("threads", 1)
        found = stale(suite.cells(), out, device, threads)
        if found:
            log(stale_summary(found, bool(options.get("reuse_stale"))))
        try:
            outcome = run_and_report(suite, out, **options)
        except RunFolderError as err:
            log(f"skipped {suite.name}: {err}")
            result.skipped.append(suite.name)
            continue
        result.folders.append(out)
        result.failed += [f"{suite.name}: {line}" for line in outcome.failed]
        result.suspects += outcome.suspects
    if result.folders:
        result.index = report.write_index(Path(root))
    return result


def suspect_lines(table: pd.DataFrame, suite: str) -> list[str]:
    """One line per suspect cell of a results table (numbers that look impossible)."""
    if "suspect" not in table:
        return []
    rows = table[table.suspect.fillna("").astype(str) != ""].drop_duplicates("key")
    return [
        f"{suite}: {r.dataset}/{r.image} {r.degradation}={r.level:g} {r.method}: {r.suspect}"
        for r in rows.itertuples()
    ]
