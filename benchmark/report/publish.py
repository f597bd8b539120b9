"""Publishing a run: the one way a committed report folder changes.

Runs go to their own folders (``runs/<profile>/<suite>`` by default) and never touch the
committed ``reports/``. :func:`publish` copies a *complete* run (every cell of its grid
successful and computed by the current code) into ``<reports>/<profile>/<suite>``: its
report files only (tables, comparison, figures, ``results.csv``, ``suite.json``), staged in a
hidden folder beside the target and swapped in by renames, so that an interrupted publish
leaves the old report whole. A target folder that is not a report of the same suite and
profile is refused, never overwritten.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from benchmark.report.files import Run, load_run
from benchmark.runfolder import Manifest


class PublishError(RuntimeError):
    """A run that cannot be published, or a target that is not ours to replace."""


def publish(run: Path, reports: Path) -> Path:
    """Copy the report of complete run folder ``run`` into ``reports/<profile>/<suite>``.

    Returns the report folder. Raises :class:`PublishError` for an incomplete run or a
    target that is not a report of the same suite and profile.
    """
    from benchmark.report import write_report

    run = Path(run)
    loaded = load_run(run)
    meta = loaded.manifest
    problems = incomplete(loaded)
    if problems:
        raise PublishError(
            f"{run} is not a complete run ({'; '.join(problems)}): run the suite into it again "
            f"(dipbench run {meta.suite} --profile {meta.profile} --out {run}) and "
            "publish it when every cell is ok"
        )
    write_report(run)  # the tables of exactly these records, by the current report code
    target = Path(reports) / meta.profile / meta.suite
    _check_target(target, meta)
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = target.with_name(f".{target.name}.publishing-{os.getpid()}")
    retired = target.with_name(f".{target.name}.replaced-{os.getpid()}")
    shutil.rmtree(staged, ignore_errors=True)  # our own leftover of this very process
    staged.mkdir()
    try:
        for path in sorted(run.iterdir()):
            if path.is_file() and not path.name.startswith("."):
                shutil.copy2(path, staged / path.name)
        if target.exists():
            os.replace(target, retired)
        os.replace(staged, target)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    shutil.rmtree(retired, ignore_errors=True)
    return target


def incomplete(run: Run) -> list[str]:
    """What keeps a run from being published (empty: nothing)."""
    problems = []
    records = run.records
    if run.missing_cells:
        problems.append(f"{run.missing_cells} cell(s) not run")
    failed = sum(not r.ok for r in records)
    if failed:
        problems.append(f"{failed} failed cell(s)")
    stale = sum(r.stale for r in records)
    if stale:
        problems.append(f"{stale} cell(s) computed by code that has changed since")
    if not records:
        problems.append("no cell records")
    return problems


def _check_target(target: Path, meta: Manifest) -> None:
    """Only a report of the same suite and profile (or nothing) may be replaced."""
    if not target.exists():
        return
    manifest = target / "suite.json"
    try:
        theirs = json.loads(manifest.read_text())
        same = (theirs.get("suite"), theirs.get("profile")) == (meta.suite, meta.profile)
    except (OSError, ValueError, AttributeError):
        same = False
    if not (target.is_dir() and same):
        raise PublishError(
            f"{target} exists and is not a published report of {meta.suite} "
            f"({meta.profile}): it is left as it is; choose another --reports folder"
        )
