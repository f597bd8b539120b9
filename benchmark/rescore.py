"""``dipbench rescore``: add a metric to a finished run folder without fitting anything again.

Every cell saves each output it was scored on as the method returned it
(``<key>.outputs.npz``, lossless). A rescore reads those arrays, rebuilds the cell's ground
truth from its seed (:func:`benchmark.observation.prepare`), scores them under the cell's
protocol with the asked metrics (:mod:`benchmark.scoring`) and adds the values to each row of
the record, with the identity of the metric's code (``Record.metrics``); the record is
rewritten with a new digest, and ``results.csv`` and the tables are rebuilt from the records.

A cell whose values for a metric were computed by the current code of that metric is left as
it is, so a second rescore costs nothing. A cell written before outputs were saved, or whose
saved outputs are not the files its run wrote, is named and left alone (run the suite again).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from benchmark.grid import Cell
from benchmark.report import write_report
from benchmark.report.files import load_run
from benchmark.results_file import results_table, write_results
from benchmark.runfolder import OUTPUTS_SUFFIX, PUBLISHED, Record, cells_dir
from benchmark.scoring import BUILT_IN, get_metric, metric_identity, score


@dataclass
class Rescored:
    """What a rescore did: cells scored, cells already current, cells it could not score."""

    scored: int = 0
    current: int = 0
    skipped: list[str] = field(default_factory=list)  # "<key>: why"


def rescore(out: Path, metrics: Sequence[str], *, quiet: bool = False) -> Rescored:
    """Score every finished cell of the run folder ``out`` with ``metrics`` (registered names
    or ``package.module:function``) from its saved outputs, then rebuild ``results.csv``.

    Raises
    ------
    ValueError
        ``out`` is not a run folder with cells, or a metric is built in or unknown.
    """
    out = Path(out)
    if (out / PUBLISHED).is_file():
        raise ValueError(
            f"{out} is a published report (it keeps no cells): rescore the run folder it was "
            "published from, then publish that again"
        )
    if not (out / "suite.json").is_file() or not cells_dir(out).is_dir():
        raise ValueError(f"{out} is not a run folder with cells (no suite.json or cells/)")
    names = _checked(metrics)
    identities = {name: metric_identity(name) for name in names}
    run = load_run(out)  # the grid's usable records, as the report reads them
    done = Rescored()
    targets: dict[str, np.ndarray] = {}
    finished = [r for r in run.records if r.ok]
    for record in tqdm(finished, desc="rescore", unit="cell", disable=quiet or len(finished) < 2):
        if all(record.metrics.get(n) == identities[n] for n in names):
            done.current += 1
            continue
        why = _why_not(record, out)
        if why:
            done.skipped.append(f"{record.key}: {why}")
            continue
        _rescore_record(record, out, names, identities, targets)
        done.scored += 1
    write_results(results_table(run.records), out, run.records)
    write_report(out)
    return done


def _checked(metrics: Sequence[str]) -> list[str]:
    names = list(dict.fromkeys(metrics))
    if not names:
        raise ValueError("name at least one metric to add (--metrics lpips, or mymodule:fn)")
    built_in = [n for n in names if n in BUILT_IN]
    if built_in:
        raise ValueError(
            f"{', '.join(built_in)} are computed with every cell; rescore adds other metrics"
        )
    for name in names:
        try:
            get_metric(name)
        except KeyError as err:
            raise ValueError(str(err.args[0])) from None
    return [get_metric(name).name for name in names]


def _why_not(record: Record, out: Path) -> str:
    """Why a finished cell cannot be rescored (empty: it can)."""
    path = cells_dir(out) / f"{record.key}{OUTPUTS_SUFFIX}"
    if not path.is_file():
        return f"no {OUTPUTS_SUFFIX} (computed before outputs were saved): run the suite again"
    if record.changed_outputs(out):
        return "its saved outputs are not the files its run wrote: run the suite again"
    return ""


def _rescore_record(
    record: Record,
    out: Path,
    names: list[str],
    identities: dict[str, dict[str, Any]],
    targets: dict[str, np.ndarray],
) -> None:
    from benchmark.metrics import get_protocol
    from benchmark.observation import prepare

    cell = Cell(**{**record.cell, "outputs": tuple(record.cell.get("outputs") or ())})
    if cell.observation_key not in targets:
        targets[cell.observation_key] = prepare(cell)[1]
    target = targets[cell.observation_key]
    protocol = get_protocol(cell.protocol)
    with np.load(cells_dir(out) / f"{record.key}{OUTPUTS_SUFFIX}") as saved:
        for row in record.rows:
            row.update(score(protocol, saved[row["output"]], target, names))
    record.metrics = {**record.metrics, **identities}
    record.write(out)
