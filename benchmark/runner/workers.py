"""Worker processes that isolate each unit of cells, whatever the number of jobs.

Each worker is a process of its own (started by ``spawn``: torch and ``fork`` do not mix) with
a pipe to the run; the run hands it one unit at a time. Because the run knows which unit each
worker holds, a worker that dies (a segfault, an out-of-memory kill, ``os._exit`` in a
method) or outlives the cell time-out is attributed exactly: its unit is recorded as failed
with the cause (a batch of cells is first retried cell by cell, to find the one at fault), a
fresh worker takes its place, and every other unit runs on at full parallelism.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from tqdm import tqdm

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
    from benchmark.degradations import DEGRADATIONS
    from benchmark.methods import get_method

    user_module = cell.method.partition(":")[0] if ":" in cell.method else None
    parts = (get_method(cell.method).function, DEGRADATIONS.get(cell.degradation))
    modules = [getattr(part, "__module__", "") or "" for part in parts]
    return all(m.startswith("benchmark.") or m == user_module for m in modules)


STARTED = "started"  # what a worker says when it begins a unit


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
) -> list[Record]:
    """Compute ``units`` in ``jobs`` isolated worker processes; return the records.

    ``timeout`` is seconds per cell (None or 0: no limit); ``devices`` gives each worker a
    GPU of its own, in turn.
    """
    context = mp.get_context("spawn")
    slots = max(1, min(jobs, len(units)))
    shared = context.Array("q", 2 * slots, lock=False)  # [done, total] per worker
    queue: deque[list[Cell]] = deque(units)
    records: list[Record] = []

    def start(slot: int) -> Worker:
        device_of = devices[slot % len(devices)] if devices else None
        ours, theirs = context.Pipe()
        process = context.Process(
            target=_worker_main,
            args=(theirs, threads, device_of, shared, slot),
            daemon=True,
            name=f"dipbench-worker-{slot + 1}",
        )
        process.start()
        theirs.close()
        return Worker(process, ours, slot)

    def assign(worker: Worker) -> None:
        worker.unit = queue.popleft() if queue else None
        worker.started = None
        if worker.unit is not None:
            shared[2 * worker.slot] = shared[2 * worker.slot + 1] = 0
            worker.conn.send((worker.unit, str(out), device, revision))

    workers = [start(slot) for slot in range(slots)]
    fits = WorkerBars(slots, shared, show=show and sys.stderr.isatty())
    with grid_bar(sum(len(u) for u in units), show) as bar:
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
    conn: Connection, threads: int, device: str | None, shared: Any, slot: int
) -> None:
    """A worker's life: take a unit, compute it, send its records; leave on None, when the
    pipe closes, or when the run that started it is gone (even killed by SIGKILL)."""

    def report_progress(done: int, total: int) -> None:  # into this worker's shared slot
        shared[2 * slot], shared[2 * slot + 1] = done, total

    parent = os.getppid()
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the run's to handle
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        unit, out, run_device, revision = message
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


def _exit_with_parent(parent: int) -> None:
    """A worker whose run was killed must not keep computing: nothing half-written survives
    (see :func:`benchmark.runfolder.atomic_write`)."""
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(1)
