"""Executors: where the units of a run are computed.

``execute`` computes the cells without a successful record: in isolated worker processes
(:mod:`~benchmark.runner.workers`; one GPU each when several are visible), or as a Slurm job
array through submitit. Every unit goes through :func:`benchmark.runner.cell.run_cells`, so the
executor never changes a number (threads per cell are fixed, not divided by ``jobs``). A
worker that dies or outlives the cell time-out fails its cell; the others still run.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from benchmark.methods import get_method
from benchmark.runfolder import Record, cells_dir
from benchmark.runner.cell import run_cells
from benchmark.runner.planning import batches, pending
from benchmark.runner.progress import grid_bar, take
from benchmark.runner.records import compute_kind, git_revision, remove_stale_temporaries
from benchmark.runner.workers import CELL_TIMEOUT, run_isolated, runs_in_a_worker
from benchmark.suites import Cell


def execute(
    cells: Sequence[Cell],
    out: Path,
    *,
    device: str = "auto",
    jobs: int = 1,
    threads: int = 1,
    executor: str = "local",
    slurm: dict[str, Any] | None = None,
    show_progress: bool = True,
    batch: int | str = "auto",
    reuse_stale: bool = False,
    cell_timeout: float | None = None,
    unit_seconds: Sequence[float] | None = None,
) -> list[Record]:
    """Run the cells that have no successful record by the current code yet; return the new
    records.

    Parameters
    ----------
    cells : sequence of Cell
    out : Path
        The run folder (records go to ``out/cells``).
    device : str
        ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` for network methods.
    jobs : int
        Local worker processes; each worker takes its own GPU when several are visible.
    threads : int
        torch CPU threads per cell. Fixed per cell (not divided by ``jobs``) so that the
        numbers do not depend on the executor: ``--jobs 2`` equals ``--jobs 1``.
    executor : str
        A name of :data:`EXECUTORS`: ``local`` (this process, or ``jobs`` workers) or
        ``slurm`` (one job array through submitit; ``slurm`` holds its options).
    batch : int or "auto"
        Network cells fitted together (see ``planning.batches`` and ``planning.auto_batch``); 1 fits
        every cell alone. Batched cells equal lone cells (bit for bit on the CPU, up to float
        rounding on CUDA); their records say ``info.batch``.
    reuse_stale : bool
        Keep successful records computed by code that has changed since (marked ``stale``
        in results.csv and the tables) instead of recomputing them.
    cell_timeout : float, optional
        Seconds a cell may take before its worker is stopped and the cell fails (0: no
        limit); default by profile (:data:`~benchmark.runner.workers.CELL_TIMEOUT`).
    unit_seconds : sequence of float, optional
        The run's estimate of each unit, in order (:attr:`~benchmark.runner.estimate.Estimate.units`
        of the same pending cells and batch): the progress's time left then weighs each cell
        by it instead of counting cells. Ignored where it does not match the units.
    """
    if executor not in EXECUTORS:
        raise KeyError(f"unknown executor {executor!r}; known: {', '.join(EXECUTORS)}")
    folder = cells_dir(out)
    folder.mkdir(parents=True, exist_ok=True)
    for written_by_a_run in (folder, Path(out)):  # records, and the report's files
        remove_stale_temporaries(written_by_a_run)
    todo = pending(cells, out, device, threads, reuse_stale=reuse_stale)
    if not todo:
        return []
    revision = git_revision()
    units = batches(todo, device, batch)
    run = EXECUTORS[executor]
    costs = unit_costs(units, unit_seconds, device, threads)
    options = {"jobs": jobs, "cell_timeout": cell_timeout, "costs": costs, **(slurm or {})}
    return run(units, Path(out), device, revision, threads, options, show_progress)


def unit_costs(
    units: Sequence[list[Cell]], unit_seconds: Sequence[float] | None, device: str, threads: int
) -> dict[str, float] | None:
    """Each cell's record key with its share of its unit's estimated seconds; None where the
    estimate is of other units (another run took some cells since it was made)."""
    if unit_seconds is None or len(unit_seconds) != len(units):
        return None
    return {
        cell.key(compute_kind(cell, device, threads)): seconds / len(unit)
        for unit, seconds in zip(units, unit_seconds, strict=True)
        for cell in unit
    }


# An executor computes units of cells (each a list fitted together) and returns their records:
# executor(units, out, device, revision, threads, options, show_progress). It must compute
# each unit through ``runner.cell.run_cells`` (which writes the records and sets the threads
# and working folder each unit runs under), so that it never changes a number; ``options``
# holds ``jobs``, ``costs`` (each record key's estimated seconds, for the progress; may be
# None) and the command's executor options.
Executor = Callable[[Sequence[list[Cell]], Path, str, str, int, dict[str, Any], bool], list[Record]]
EXECUTORS: dict[str, Executor] = {}


def register_executor(name: str) -> Callable[[Executor], Executor]:
    """Decorator adding an executor to :data:`EXECUTORS` under ``name``."""

    def add(function: Executor) -> Executor:
        if name in EXECUTORS:
            raise ValueError(f"executor {name!r} is registered twice")
        EXECUTORS[name] = function
        return function

    return add


@register_executor("local")
def _execute_local(
    units: Sequence[list[Cell]],
    out: Path,
    device: str,
    revision: str,
    threads: int,
    options: dict[str, Any],
    show: bool,
) -> list[Record]:
    """``jobs`` isolated worker processes (:mod:`~benchmark.runner.workers`): a crash, an
    exit call, an out-of-memory kill or a time-out fails its cell, never the run. Cells that
    name a method, task or degradation registered at run time in this process only run
    here, one after another (said once)."""
    jobs = int(options.get("jobs") or 1)
    in_a_worker = [runs_in_a_worker(u[0]) for u in units]
    isolated = [u for u, elsewhere in zip(units, in_a_worker, strict=True) if elsewhere]
    local = [u for u, elsewhere in zip(units, in_a_worker, strict=True) if not elsewhere]
    records: list[Record] = []
    if isolated:
        timeout = options.get("cell_timeout")
        if timeout is None:
            timeout = CELL_TIMEOUT.get(isolated[0][0].profile)
        records += run_isolated(
            isolated,
            out,
            device,
            revision,
            jobs=jobs,
            threads=threads,
            show=show,
            timeout=timeout,
            devices=_gpu_devices(device),
            costs=options.get("costs"),
        )
    if local:
        tqdm.write(
            f"{sum(len(u) for u in local)} cell(s) name a method, task or degradation "
            "registered in this process only: computed here, without isolation"
        )
        records += _execute_serial(
            local, out, device, revision, threads, show, options.get("costs")
        )
    return records


@register_executor("inline")
def _execute_inline(
    units: Sequence[list[Cell]],
    out: Path,
    device: str,
    revision: str,
    threads: int,
    options: dict[str, Any],
    show: bool,
) -> list[Record]:
    """This process, one unit after another, without isolation or time-out: for a debugger,
    or code patched at run time that a fresh worker would not see."""
    return _execute_serial(units, out, device, revision, threads, show, options.get("costs"))


def _execute_serial(
    units: Sequence[list[Cell]],
    out: Path,
    device: str,
    revision: str,
    threads: int,
    show: bool,
    costs: dict[str, float] | None = None,
) -> list[Record]:
    records = []
    with grid_bar(sum(len(u) for u in units), show, costs) as bar:
        for unit in units:
            cell = unit[0]
            together = f" (+{len(unit) - 1} fitted together)" if len(unit) > 1 else ""
            bar.set_postfix_str(cell.label + together, refresh=True)
            inner = tqdm(  # a fit's iterations, on a terminal only (none for one-shot methods)
                desc=f"  {cell.method_key}",
                unit="it",
                leave=False,
                disable=not (show and sys.stderr.isatty() and get_method(cell.method).fits_network),
                dynamic_ncols=True,
            )

            def progress(done: int, total: int, inner: tqdm = inner) -> None:
                inner.total = total
                inner.update(done - inner.n)

            try:
                done = run_cells(
                    unit, out, device, revision=revision, threads=threads, progress=progress
                )
            finally:
                inner.close()
            take(done, records, bar)
    return records


def _gpu_devices(device: str) -> list[str]:
    """One GPU per worker when several are visible and the device is not pinned."""
    import torch

    if device in ("auto", "cuda") and torch.cuda.is_available() and torch.cuda.device_count() > 1:
        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return []


def _slurm_job(
    unit: list[Cell], out: str, device: str, revision: str, threads: int
) -> list[Record]:
    """One unit as a Slurm job (its own process, like a local worker)."""
    return run_cells(unit, Path(out), device, revision=revision, threads=threads)


@register_executor("slurm")
def _execute_slurm(
    units: Sequence[list[Cell]],
    out: Path,
    device: str,
    revision: str,
    threads: int,
    options: dict[str, Any],
    show: bool,
) -> list[Record]:
    try:
        import submitit
    except ImportError as err:
        raise RuntimeError(
            "the slurm executor needs submitit: pip install 'dipbench[slurm]'"
        ) from err
    cluster = options.get("cluster") or None  # None: Slurm; "local"/"debug" for testing
    executor = submitit.AutoExecutor(folder=str(Path(out) / "slurm_logs" / "%j"), cluster=cluster)
    parameters: dict[str, Any] = {
        "timeout_min": int(options.get("time_min", 240)),
        "name": f"dipbench-{units[0][0].suite}",
    }
    if cluster in (None, "slurm"):
        parameters.update(
            slurm_partition=options.get("partition"),
            slurm_array_parallelism=int(options.get("array_parallelism", 32)),
            gpus_per_node=int(options.get("gpus", 0)),
            cpus_per_task=int(options.get("cpus", 4)),
        )
        parameters = {k: v for k, v in parameters.items() if v is not None}
    executor.update_parameters(**parameters)
    n = len(units)
    jobs = executor.map_array(
        _slurm_job, list(units), [str(out)] * n, [device] * n, [revision] * n, [threads] * n
    )
    records = []
    with grid_bar(sum(len(u) for u in units), show, options.get("costs")) as bar:
        for job in jobs:
            take(job.result(), records, bar)
    return records
