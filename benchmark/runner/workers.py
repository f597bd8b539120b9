"""Worker processes that isolate each unit of cells, whatever the number of jobs.

Each worker is a process of its own with a pipe to the run; the run hands it one unit at a
time. Workers fork from a server process that has imported torch and every packaged method
once (``forkserver`` with those modules preloaded; torch and a plain ``fork`` of the run do not
mix), so a worker is ready in milliseconds instead of seconds; where there is no
``forkserver`` (Windows) they are ``spawn``-ed. A worker needs nothing of the caller's script
(it computes cells of this package or of the suite's user module), so the script is not
imported in it: a script without an ``if __name__ == "__main__"`` guard runs too. Each unit
carries the run's environment (the server's may be older) and the worker takes it.

Because the run knows which unit each worker holds, a worker that dies (a segfault, an
out-of-memory kill, ``os._exit`` in a method) or outlives the cell time-out is attributed
exactly: its unit is recorded as failed with the cause (a batch of cells is first retried cell
by cell, to find the one at fault), a fresh worker takes its place, and every other unit runs
on at full parallelism.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
import threading
import time
import types
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from tqdm import tqdm

from benchmark.methods import BUILT_IN, get_method
from benchmark.processes import process_is_running
from benchmark.runfolder import Record
from benchmark.runner.cell import fail_unit, run_cells
from benchmark.runner.progress import WorkerBars, grid_bar, take
from benchmark.suites import Cell

# The longest a cell may take before its worker is stopped, by profile (seconds; a unit of
# several cells fitted together gets that many times as long). ``--cell-timeout`` overrides.
CELL_TIMEOUT = {"ci": 600.0, "quick": 3 * 3600.0, "full": 24 * 3600.0}


def runs_in_a_worker(cell: Cell) -> bool:
    """Whether a fresh worker process knows everything ``cell`` names: its method and its
    degradation (which builds the task's forward model) come from this package or from the
    user module the suite names (``module:function``). A method or degradation registered at
    run time in this process only (a notebook, a test) can run in this process alone."""
    from benchmark.degradation_kinds import DEGRADATIONS

    user_module = cell.method.partition(":")[0] if ":" in cell.method else None
    parts = (get_method(cell.method).function, DEGRADATIONS.get(cell.degradation))
    modules = [getattr(part, "__module__", "") or "" for part in parts]
    return all(m.startswith("benchmark.") or m == user_module for m in modules)


STARTED = "started"  # what a worker says when it begins a unit
# What the server that workers fork from imports once: every packaged method, torch and the
# libraries the package imports only where it uses them (so that `dipbench list` and a
# classical `restore` start without them). A worker then starts ready, and what those
# imports add to the process (warning filters) is there before a unit's state is taken, not
# added by its first cell and dropped after it. A user's module is imported by the worker
# that needs it.
PRELOAD = [
    "benchmark.runner.workers",
    *sorted({f"benchmark.methods.{module}" for module in BUILT_IN.values()}),
    "torch",
    "torch.nn.functional",
    "resize_right",
    "scipy.stats",
    "bm3d",
    "pooch",
    "requests",
]


def worker_context() -> Any:
    """The multiprocessing context workers start in: ``forkserver`` with :data:`PRELOAD`
    imported where the platform has one, else ``spawn``."""
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    context = mp.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


@contextmanager
def caller_script_hidden() -> Iterator[None]:
    """While a worker (or the server it forks from) starts, the caller's ``__main__`` is a
    blank module, so that multiprocessing does not import the caller's script in it: a
    script or notebook without an ``if __name__ == "__main__"`` guard would run itself again
    there and fail every cell. Workers get nothing from ``__main__`` (cells of a method
    registered there are computed in the run's own process)."""
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


@dataclass
class Worker:
    """A worker process, its end of the pipe, and the unit it holds (None: idle)."""

    process: Any
    conn: Connection
    slot: int
    unit: list[Cell] | None = None
    started: float | None = None  # when the worker began its unit (its start-up not counted)


def run_isolated(
    units: Sequence[list[Cell]],
    out: Path,
    device: str,
    revision: str,
    *,
    jobs: int,
    threads: int,
    show: bool,
    timeout: float | None,
    devices: Sequence[str] = (),
    costs: dict[str, float] | None = None,
) -> list[Record]:
    """Compute ``units`` in ``jobs`` isolated worker processes; return the records.

    ``timeout`` is seconds per cell (None or 0: no limit); ``devices`` gives each worker a
    GPU of its own, in turn; ``costs`` weighs the progress's time left (``grid_bar``).
    """
    context = worker_context()
    slots = max(1, min(jobs, len(units)))
    shared = context.Array("q", 2 * slots, lock=False)  # [done, total] per worker
    queue: deque[list[Cell]] = deque(units)
    records: list[Record] = []

    def start(slot: int) -> Worker:
        device_of = devices[slot % len(devices)] if devices else None
        ours, theirs = context.Pipe()
        process = context.Process(
            target=_worker_main,
            args=(theirs, threads, device_of, shared, slot, os.getpid()),
            daemon=True,
            name=f"dipbench-worker-{slot + 1}",
        )
        with caller_script_hidden():
            process.start()
        theirs.close()
        return Worker(process, ours, slot)

    def assign(worker: Worker) -> None:
        worker.unit = queue.popleft() if queue else None
        worker.started = None
        if worker.unit is not None:
            shared[2 * worker.slot] = shared[2 * worker.slot + 1] = 0
            message = (worker.unit, str(out), device, revision, dict(os.environ))
            worker.conn.send(message)

    workers = [start(slot) for slot in range(slots)]
    fits = WorkerBars(slots, shared, show=show and sys.stderr.isatty())
    with grid_bar(sum(len(u) for u in units), show, costs) as bar:
        try:
            for worker in workers:
                assign(worker)
            while any(w.unit is not None for w in workers):
                busy = [w for w in workers if w.unit is not None]
                wait([w.conn for w in busy] + [w.process.sentinel for w in busy], timeout=0.5)
                for worker in busy:
                    delivered, lost = _collect(worker, records, bar, timeout)
                    if delivered:
                        assign(worker)
                    if not lost:
                        continue
                    _stop(worker)
                    lost_unit = worker.unit or []
                    _settle(lost_unit, lost, queue, records, bar, out, device, revision, threads)
                    workers[worker.slot] = replacement = start(worker.slot)
                    assign(replacement)
                fits.refresh()
        finally:
            fits.close()
            for worker in workers:
                _stop(worker, gently=True)
    return records


def _collect(
    worker: Worker, records: list[Record], bar: tqdm, timeout: float | None
) -> tuple[bool, str]:
    """Look at a busy worker: ``(True, "")`` when it delivered its unit's records (taken),
    ``(False, "")`` while it computes, ``(False, cause)`` when it was lost."""
    while worker.conn.poll():
        try:
            result = worker.conn.recv()
        except (EOFError, OSError):
            return False, _death_cause(worker.process)
        if result == STARTED:
            worker.started = time.monotonic()
            continue
        take(result, records, bar)
        return True, ""
    if not worker.process.is_alive():
        return False, _death_cause(worker.process)
    limit = (timeout or 0) * len(worker.unit or [])
    if limit and worker.started is not None and time.monotonic() - worker.started > limit:
        return False, f"it ran past the cell time-out of {timeout:g} s (--cell-timeout)"
    return False, ""


def _settle(
    unit: list[Cell],
    cause: str,
    queue: deque[list[Cell]],
    records: list[Record],
    bar: tqdm,
    out: Path,
    device: str,
    revision: str,
    threads: int,
) -> None:
    """A lost unit: a batch is retried cell by cell (to find the one at fault); a lone cell
    is recorded as failed with the cause."""
    if len(unit) > 1 and "time-out" not in cause:
        tqdm.write(f"a worker was lost ({cause}): retrying its {len(unit)} cells one by one")
        queue.extendleft([cell] for cell in reversed(unit))
        return
    take(fail_unit(unit, out, device, revision, threads, cause), records, bar)


def _stop(worker: Worker, *, gently: bool = False) -> None:
    """End a worker: ask an idle one to leave, kill a busy or stuck one."""
    if gently and worker.unit is None and worker.process.is_alive():
        try:
            worker.conn.send(None)
        except (OSError, ValueError):
            pass
        worker.process.join(timeout=2)
    if worker.process.is_alive():
        worker.process.kill()
        worker.process.join(timeout=5)
    worker.conn.close()


def _death_cause(process: Any) -> str:
    """How a worker died, from its exit code (a negative code is the signal that killed it)."""
    process.join(timeout=5)
    code = process.exitcode
    if code is None:
        return "its worker process stopped answering"
    if code == -signal.SIGKILL:
        return "its worker process was killed (SIGKILL: out of memory?)"
    if code < 0:
        return f"its worker process was killed by signal {signal.Signals(-code).name}"
    return f"its worker process exited with code {code}"


def _worker_main(
    conn: Connection, threads: int, device: str | None, shared: Any, slot: int, run: int
) -> None:
    """A worker's life: take a unit, compute it, send its records; leave on None, when the
    pipe closes, or when the run that started it is gone (even killed by SIGKILL)."""

    def report_progress(done: int, total: int) -> None:  # into this worker's shared slot
        shared[2 * slot], shared[2 * slot + 1] = done, total

    parent = os.getppid()  # the run, or the server this worker forked from
    threading.Thread(target=_exit_with_run, args=(parent, run), daemon=True).start()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the run's to handle
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        unit, out, run_device, revision, environment = message
        if environment != os.environ:  # the server's environment may be older than the run's
            os.environ.clear()
            os.environ.update(environment)
        conn.send(STARTED)  # the time-out counts from here, not from the start-up
        records = run_cells(
            unit,
            Path(out),
            device or run_device,
            revision=revision,
            threads=threads,
            progress=report_progress,
        )
        conn.send(records)


def _exit_with_run(parent: int, run: int) -> None:
    """A worker whose run was killed must not keep computing: nothing half-written survives
    (see :func:`benchmark.runfolder.atomic_write`)."""
    while True:
        time.sleep(0.5)
        if os.getppid() != parent or not process_is_running(run):
            os._exit(1)
