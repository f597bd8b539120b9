"""Executors: where the units of a run are computed.

``execute`` computes the cells without a successful record: serially in this process, in a
pool of worker processes (one GPU each when several are visible), or as a Slurm job array
through submitit. Every unit goes through :func:`benchmark.runner.cell.run_cells`, so the
executor never changes a number (threads per cell are fixed, not divided by ``jobs``). A
worker that dies is found and its cell recorded as failed; the others still run.
"""

from __future__ import annotations

import concurrent.futures as futures
import multiprocessing as mp
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from benchmark.runner.cell import fail_unit, run_cells
from benchmark.runner.planning import batches, pending
from benchmark.runner.progress import WorkerBars, grid_bar, take
from benchmark.runner.records import cells_dir, git_revision, remove_stale_temporaries
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
) -> list[dict[str, Any]]:
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
    return run(
        units, Path(out), device, revision, threads, {"jobs": jobs, **(slurm or {})}, show_progress
    )


# An executor computes units of cells (each a list fitted together) and returns their records:
# executor(units, out, device, revision, threads, options, show_progress). It must compute
# each unit through ``runner.cell.run_cells`` (which writes the records), so that it never
# changes a number; ``options`` holds ``jobs`` and the command's executor options.
Executor = Callable[
    [Sequence[list[Cell]], Path, str, str, int, dict[str, Any], bool], list[dict[str, Any]]
]
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
) -> list[dict[str, Any]]:
    """This process alone (``jobs`` 1), or a pool of ``jobs`` worker processes."""
    jobs = int(options.get("jobs") or 1)
    if jobs <= 1 or len(units) == 1:
        return _execute_serial(units, out, device, revision, threads, show)
    return _execute_pool(units, out, device, revision, min(jobs, len(units)), threads, show)


def _execute_serial(
    units: Sequence[list[Cell]], out: Path, device: str, revision: str, threads: int, show: bool
) -> list[dict[str, Any]]:
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _serial_loop(units, out, device, revision, threads, show)
    finally:
        torch.set_num_threads(previous)


def _serial_loop(
    units: Sequence[list[Cell]], out: Path, device: str, revision: str, threads: int, show: bool
) -> list[dict[str, Any]]:
    records = []
    with grid_bar(sum(len(u) for u in units), show) as bar:
        for unit in units:
            cell = unit[0]
            together = f" (+{len(unit) - 1} fitted together)" if len(unit) > 1 else ""
            bar.set_postfix_str(cell.label + together, refresh=True)
            inner = tqdm(
                desc=f"  {cell.method_key}",
                unit="it",
                leave=False,
                disable=not show,
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


def _execute_pool(
    units: Sequence[list[Cell]],
    out: Path,
    device: str,
    revision: str,
    jobs: int,
    threads: int,
    show: bool,
) -> list[dict[str, Any]]:
    """Run units in worker processes. A worker that dies (out of memory, killed, a crash in
    native code) breaks the pool: the units it left unfinished run again one per fresh worker,
    so the one that kills its worker is found and recorded as failed with the cause, and every
    other cell still runs."""
    records: list[dict[str, Any]] = []
    with grid_bar(sum(len(u) for u in units), show) as bar:
        left, _ = _run_pool(units, out, device, revision, jobs, threads, bar, records)
        if left:
            tqdm.write(
                f"a worker process died; running the {sum(len(u) for u in left)} unfinished "
                "cell(s) one worker each, to find the one that kills its worker"
            )
        for unit in left:
            again, cause = _run_pool([unit], out, device, revision, 1, threads, bar, records)
            if again:
                take(fail_unit(unit, out, device, revision, threads, cause), records, bar)
    return records


def _run_pool(
    units: Sequence[list[Cell]],
    out: Path,
    device: str,
    revision: str,
    jobs: int,
    threads: int,
    bar: tqdm,
    records: list[dict[str, Any]],
) -> tuple[list[list[Cell]], str]:
    """Run units in one pool; return the units left unfinished when a worker died (and how it
    died), or no units."""
    context = mp.get_context("spawn")  # torch and fork do not mix
    counter = context.Value("i", 0)
    slots = min(jobs, len(units))
    shared = context.Array("q", 2 * slots, lock=False)  # [done, total] per worker
    pool = futures.ProcessPoolExecutor(
        max_workers=slots,
        mp_context=context,
        initializer=_worker_init,
        initargs=(threads, _gpu_devices(device), counter, shared, slots),
    )
    workers = {}
    submitted = {}
    unfinished: list[list[Cell]] = []
    fits = WorkerBars(slots, shared, show=not bar.disable and sys.stderr.isatty())
    try:
        for unit in units:
            submitted[pool.submit(_worker_run, unit, str(out), device, revision, threads)] = unit
            workers.update(getattr(pool, "_processes", None) or {})
        left = sum(len(u) for u in units)
        waiting = set(submitted)
        while waiting:
            finished, waiting = futures.wait(
                waiting, timeout=0.5, return_when=futures.FIRST_COMPLETED
            )
            workers.update(getattr(pool, "_processes", None) or {})
            fits.refresh()
            for done in finished:
                left -= len(submitted[done])
                try:
                    result = done.result()
                except futures.process.BrokenProcessPool:
                    unfinished.append(submitted[done])
                    continue
                take(result, records, bar, running=min(jobs, left))
    except BaseException:
        # Ctrl-C or SIGTERM: stop the workers now; finished records are already on disk.
        for process in list(getattr(pool, "_processes", {}).values()):
            process.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        fits.close()
    pool.shutdown()
    codes = sorted({p.exitcode for p in workers.values() if p.exitcode not in (None, 0)})
    return [u for u in units if u in unfinished], _death_cause(codes)


def _death_cause(codes: Sequence[int]) -> str:
    """How a worker died, from its exit code (a negative code is the signal that killed it)."""
    if not codes:
        return "its worker process died"
    code = codes[0]
    if code == -signal.SIGKILL:
        return "its worker process was killed (SIGKILL: out of memory?)"
    if code < 0:
        return f"its worker process was killed by signal {signal.Signals(-code).name}"
    return f"its worker process exited with code {code}"


def _exit_with_parent(parent: int) -> None:
    """A worker whose run was killed (even by SIGKILL) must not keep computing: poll the
    parent and leave at once when it is gone. Nothing half-written survives: see
    :func:`atomic_write`."""
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(1)


# A pool worker's progress slot: (shared array of [done, total] per worker, this worker's
# index). Set once per worker process by its initializer, the only way a pool shares memory.
_WORKER_PROGRESS: tuple[Any, int] | None = None


def _worker_init(
    threads: int, devices: list[str], counter: Any, progress: Any = None, slots: int = 1
) -> None:
    import threading

    import torch

    global _WORKER_PROGRESS
    parent = os.getppid()
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    torch.set_num_threads(threads)
    os.environ["DIPBENCH_WORKER_THREADS"] = str(threads)
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    if devices:
        os.environ["DIPBENCH_WORKER_DEVICE"] = devices[index % len(devices)]
    if progress is not None:
        _WORKER_PROGRESS = (progress, index % slots)


def _report_progress(done: int, total: int) -> None:
    """A worker's fit progress, into its slot of the shared array the parent shows."""
    if _WORKER_PROGRESS is not None:
        shared, slot = _WORKER_PROGRESS
        shared[2 * slot], shared[2 * slot + 1] = done, total


def _worker_run(
    unit: list[Cell], out: str, device: str, revision: str, threads: int
) -> list[dict[str, Any]]:
    import torch

    if os.environ.get("DIPBENCH_WORKER_THREADS") != str(threads):  # a Slurm job: first cell
        torch.set_num_threads(threads)
    device = os.environ.get("DIPBENCH_WORKER_DEVICE", device)
    progress = _report_progress if _WORKER_PROGRESS is not None else None
    return run_cells(unit, Path(out), device, revision=revision, threads=threads, progress=progress)


def _gpu_devices(device: str) -> list[str]:
    """One GPU per worker when several are visible and the device is not pinned."""
    import torch

    if device in ("auto", "cuda") and torch.cuda.is_available() and torch.cuda.device_count() > 1:
        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return []


@register_executor("slurm")
def _execute_slurm(
    units: Sequence[list[Cell]],
    out: Path,
    device: str,
    revision: str,
    threads: int,
    options: dict[str, Any],
    show: bool,
) -> list[dict[str, Any]]:
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
        _worker_run, list(units), [str(out)] * n, [device] * n, [revision] * n, [threads] * n
    )
    records = []
    with grid_bar(sum(len(u) for u in units), show) as bar:
        for job in jobs:
            take(job.result(), records, bar)
    return records
