"""Publishing a run: the one way a committed report folder changes, and a trust boundary.

Runs go to their own folders (``runs/<profile>/<suite>`` by default) and never touch the
committed ``reports/``. :func:`publish` merges a *complete* run (every cell of its grid
successful and computed by the current code) into ``<reports>/<profile>/<suite>``
(:mod:`~benchmark.report.merge`): its cells added to the records the report keeps, or
replacing the same cells, the tables, comparisons and figures rebuilt from the union, with
``results.csv`` and ``provenance.json`` rebuilt from the same records (never copied: a table
and its results always say the same), and the marker :data:`~benchmark.runfolder.PUBLISHED`
written last.

What it refuses, leaving every file as it is:

- a run folder that is not complete, or not a run folder (a published report has no records);
- a suite or profile name that is not a plain name (``suite.json`` is data, and a name like
  ``../x`` would write outside ``--reports``), a target reached through a link, or a target
  that is the run itself;
- a target folder that is neither absent nor a published report (a run folder, a user's);
- a publish that would leave the report's cells of other code or library versions beside the
  run's, drop cells of a report that keeps no records, or replace it with another definition
  of the suite (its methods mapped to other methods or options), unless ``replace`` is given
  (the run then replaces the report whole).

The new report is staged beside the target and swapped in by two renames. A publish killed at
any point leaves the old report or the new one: :func:`recover` (run by every publish) puts a
complete staged or set-aside report back where the target is missing, and sweeps the
leftovers of publishes whose process is gone. The index never lists them (hidden names).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from benchmark.processes import process_is_running
from benchmark.report import merge
from benchmark.report.files import Run, load_run
from benchmark.results_file import results_table, write_results
from benchmark.runfolder import PUBLISHED, Manifest, write_json

PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
# The cells of a report, whatever the package version in their keys.
CELL_IDENTITY = ["dataset", "image", "degradation", "level", "method", "repetition"]
# What a published report folder holds (a legacy one, from before the marker, too).
REPORT_FILE = re.compile(r"[\w.+-]+\.(csv|md|json|png|gif)")
LEFTOVER = re.compile(r"\.(?P<name>.+)\.(?P<kind>publishing|replaced)-(?P<pid>\d+)")


class PublishError(RuntimeError):
    """A run that cannot be published, or a target that is not ours to replace."""


def publish(run: Path, reports: Path, *, replace: bool = False) -> Path:
    """Publish complete run folder ``run`` as ``reports/<profile>/<suite>``.

    Returns the report folder. Raises :class:`PublishError` for anything the module's
    docstring lists, naming it; nothing is written then.
    """
    from benchmark.report import write_report

    run = Path(run)
    loaded = load_run(run)
    meta = loaded.manifest
    for what, name in (("suite", meta.suite), ("profile", meta.profile)):
        if not isinstance(name, str) or not PLAIN_NAME.fullmatch(name) or ".." in name:
            raise PublishError(
                f"{run}/suite.json names the {what} {name!r}, not a plain name: nothing "
                "published (a report folder is named by it)"
            )
    if not (run / "cells").is_dir():
        raise PublishError(f"{run} has no cells/: it is not a run folder (a published report?)")
    problems = incomplete(loaded)
    if problems:
        raise PublishError(
            f"{run} is not a complete run ({'; '.join(problems)}): run the suite into it again "
            f"(dipbench run {meta.suite} --profile {meta.profile} --out {run}) and "
            "publish it when every cell is ok"
        )
    target = _target(Path(reports), meta)
    if _same_or_within(run, target):
        raise PublishError(f"{run} is the report folder itself ({target}): nothing published")
    recover(target)
    previous = published_report(target, meta)
    try:
        kept = merge.kept_records(target) if previous is not None and not replace else None
    except ValueError as err:
        raise PublishError(f"{err}: nothing published; --replace replaces the report") from None
    staying, union = merge.merged(kept or [], loaded.records)
    if previous is not None and not replace:
        losses = what_would_be_lost(target, previous, meta, results_table(union))
        losses += merge.conflicts(staying, loaded.records)
        losses += merge.other_settings(previous, meta) if staying else []
        if losses:
            raise PublishError(
                f"publishing {run} over {target} would {'; '.join(losses)}. A publish adds a "
                "run's cells to the report's, or replaces the same cells: run the cells named "
                "again with the current code, or add --replace to replace the report with the "
                "run whole"
            )
    with tempfile.TemporaryDirectory(prefix=".dipbench-publish-") as scratch:
        work = Path(scratch) / "run"
        merge.stage_union(work, run, loaded.records, target, staying)
        merge.merged_manifest(previous if staying else None, meta, union).write(work)
        write_report(work)  # the tables of exactly these records, by the current report code
        staged_run = load_run(work)
        merge.keep(staged_run.records, work, Path(scratch) / merge.KEPT)
        fitted = any(r.arrays for r in loaded.records)  # a network's cells: pixels to draw
        kept_figures = () if fitted or not staying else merge.PIXEL_FIGURES
        _swap_in(work, target, staged_run, Path(scratch) / merge.KEPT, kept_figures)
    return target


def incomplete(run: Run) -> list[str]:
    """What keeps a run from being published (empty: nothing)."""
    problems = []
    records = run.records
    if run.missing_cells:
        problems.append(f"{run.missing_cells} cell(s) not run")
    if run.changed_outputs:
        problems.append(
            f"{len(run.changed_outputs)} output file(s) not as their run wrote them "
            f"({', '.join(run.changed_outputs[:3])})"
        )
    if run.unusable:
        problems.append(f"{len(run.unusable)} record(s) left out ({'; '.join(run.unusable[:3])})")
    failed = sum(not r.ok for r in records)
    if failed:
        problems.append(f"{failed} failed cell(s)")
    stale = sum(r.stale for r in records)
    if stale:
        problems.append(f"{stale} cell(s) computed by code that has changed since")
    if not records:
        problems.append("no cell records")
    return problems


def results_of(run: Run) -> pd.DataFrame:
    """``results.csv`` rebuilt from the run's records (in its grid's order)."""
    return results_table(run.records)


def _target(reports: Path, meta: Manifest) -> Path:
    """``reports/<profile>/<suite>``, refused where a link would lead it elsewhere."""
    target = reports / meta.profile / meta.suite
    for part in (target.parent, target):
        if part.is_symlink():
            raise PublishError(f"{part} is a link: a report is published into a real folder")
    if target.exists() and not target.resolve().is_relative_to(reports.resolve()):
        raise PublishError(f"{target} is not inside {reports}: nothing published")
    return target


def _same_or_within(run: Path, target: Path) -> bool:
    run, target = run.resolve(), target.resolve()
    return run == target or run.is_relative_to(target) or target.is_relative_to(run)


def published_report(target: Path, meta: Manifest) -> Manifest | None:
    """The manifest of the published report at ``target`` (None: nothing there).

    A folder holding the marker, or (published before the marker existed) holding only report
    files with a ``suite.json``, is a published report. Raises :class:`PublishError` for
    anything else there, or a report of another suite or profile.
    """
    if not target.exists() and not target.is_symlink():
        return None
    names = [p.name for p in target.iterdir()] if target.is_dir() else []
    marked = PUBLISHED in names
    legacy = (
        "suite.json" in names
        and all(REPORT_FILE.fullmatch(n) and (target / n).is_file() for n in names)
        and "cells" not in names
    )
    theirs = None
    if target.is_dir() and (marked or legacy):
        try:
            theirs = Manifest.read(target)
        except (OSError, ValueError, TypeError):
            theirs = None
    if theirs is None or (theirs.suite, theirs.profile) != (meta.suite, meta.profile):
        raise PublishError(
            f"{target} exists and is not a published report of {meta.suite} "
            f"({meta.profile}): it is left as it is; choose another --reports folder"
        )
    return theirs


def what_would_be_lost(
    target: Path, previous: Manifest, meta: Manifest, rows: pd.DataFrame
) -> list[str]:
    """What publishing ``rows`` (of a run of ``meta``) over the report at ``target`` (of
    ``previous``) drops: methods mapped elsewhere, and cells the report holds that the run
    does not."""
    lost = []
    theirs = {m["key"]: _definition(m) for m in previous.methods}
    ours = {m["key"]: _definition(m) for m in meta.methods}
    changed = [key for key in theirs if key in ours and theirs[key] != ours[key]]
    for key in changed:
        lost.append(
            f"replace its method {key!r} ({_shown(theirs[key])}) with another definition "
            f"({_shown(ours[key])})"
        )
    return lost + _dropped_cells(target, rows)


def _definition(method: dict[str, Any]) -> tuple:
    return (method.get("method"), json.dumps(method.get("options", {}), sort_keys=True))


def _shown(definition: tuple) -> str:
    method, options = definition
    return method if options == "{}" else f"{method} {options}"


def _dropped_cells(target: Path, rows: pd.DataFrame) -> list[str]:
    """The report's successful cells (by what they are, not by key) absent from ``rows``."""
    try:
        theirs = pd.read_csv(target / "results.csv")
    except (OSError, ValueError):
        return []
    theirs = theirs[theirs.status == "ok"]
    if not set(CELL_IDENTITY) <= set(theirs):
        return []
    keep = set(map(tuple, rows[CELL_IDENTITY].astype(str).values))
    cells = theirs[CELL_IDENTITY].astype(str).drop_duplicates()
    dropped = cells[[tuple(v) not in keep for v in cells.values]]
    if dropped.empty:
        return []
    images = ", ".join(sorted(set(dropped.image))[:5])
    return [f"drop {len(dropped)} of its {len(cells)} cells (images {images}...)"]


def _swap_in(
    run: Path, target: Path, loaded: Run, kept: Path, kept_figures: Sequence[str] = ()
) -> None:
    """Stage the report beside ``target`` (with the records ``kept`` holds, and the figures
    ``kept_figures`` as the report has them), then swap it in by renames (see
    :func:`recover`)."""
    meta = loaded.manifest
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = target.with_name(f".{target.name}.publishing-{os.getpid()}")
    retired = target.with_name(f".{target.name}.replaced-{os.getpid()}")
    shutil.rmtree(staged, ignore_errors=True)  # our own leftover of this very process
    staged.mkdir()
    try:
        for path in sorted(run.iterdir()):
            rebuilt = ("results.csv", "provenance.json", PUBLISHED)
            if path.is_file() and not path.name.startswith(".") and path.name not in rebuilt:
                shutil.copy2(path, staged / path.name)
        for name in kept_figures:
            (staged / name).unlink(missing_ok=True)
            if (target / name).is_file():
                shutil.copy2(target / name, staged / name)
        write_results(results_of(loaded), staged, loaded.records)
        shutil.copytree(kept, staged / merge.KEPT)
        write_json(staged / PUBLISHED, {"suite": meta.suite, "profile": meta.profile})  # last
        if target.exists():
            os.replace(target, retired)
        os.replace(staged, target)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    shutil.rmtree(retired, ignore_errors=True)


def recover(target: Path) -> None:
    """Finish or undo what a killed publish of ``target`` left: where the target is missing,
    a complete staged report (its marker written) or else the set-aside old one becomes it;
    then the leftovers of publishes whose process is gone are removed."""
    folder = target.parent
    if not folder.is_dir():
        return
    leftovers = []
    for path in folder.iterdir():
        match = LEFTOVER.fullmatch(path.name)
        if match and match["name"] == target.name and path.is_dir():
            leftovers.append((match["kind"], int(match["pid"]), path))
    if not target.exists():
        staged = [p for kind, _, p in leftovers if kind == "publishing"]
        complete = [p for p in staged if (p / PUBLISHED).is_file()]  # its marker comes last
        old = [p for kind, _, p in leftovers if kind == "replaced"]
        if complete + old:
            os.replace((complete + old)[0], target)
    for _, pid, path in leftovers:
        if path.exists() and pid != os.getpid() and not process_is_running(pid):
            shutil.rmtree(path, ignore_errors=True)
