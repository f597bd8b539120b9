"""Claims: several runs on one folder split its grid.

A run claims a cell by creating ``<key>.lock`` beside the cell's record (owner's pid, host and
the process's start time) before computing it; another run skips claimed cells. A claim whose
process is gone, or whose pid now belongs to a process started later, is stale and taken over.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from benchmark.processes import process_is_running
from benchmark.runfolder import Record, cells_dir
from benchmark.runner.records import damaged_outputs, is_finished, record_path

if TYPE_CHECKING:
    from benchmark.suites import Cell


FOREIGN_CLAIM_HOURS = 48.0  # a claim from another host older than this is taken over


def claim_path(cell: Cell, out: Path, device: str, threads: int) -> Path:
    """The lock file of a cell's claim."""
    return record_path(cell, out, device, threads).with_suffix(".lock")


def claim(path: Path) -> bool:
    """Claim a cell by creating its lock file (owner's pid and host); False if a live owner
    holds it. A claim whose process is gone (same host), or from another host and older than
    ``FOREIGN_CLAIM_HOURS``, is stale and taken over."""
    owner = {
        "pid": os.getpid(),
        "host": platform.node(),
        "since": time.time(),
        "process_start": process_start(os.getpid()),
    }
    for _ in range(2):
        try:
            descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            if not _stale(path):
                return False
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(descriptor, "w") as handle:
            json.dump(owner, handle)
        return True
    return False


def _stale(path: Path) -> bool:
    try:
        owner = json.loads(path.read_text(encoding="utf-8"))
        age = time.time() - path.stat().st_mtime
    except (OSError, ValueError):
        return True  # unreadable, or half-written by a process that died
    if owner.get("host") == platform.node():
        pid = int(owner.get("pid", -1))
        if not process_is_running(pid):
            return True
        # the pid may since belong to another process: its start time tells them apart
        started = owner.get("process_start")
        return started is not None and started != process_start(pid)
    return age > FOREIGN_CLAIM_HOURS * 3600


def process_start(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, from Linux's ``/proc``), or
    None where that cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()  # the command name in (...) may hold spaces
    return int(fields[19]) if len(fields) > 19 else None  # field 22 of proc(5)


def release(path: Path) -> None:
    """Remove a claim this process holds."""
    try:
        owner = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if owner.get("pid") == os.getpid() and owner.get("host") == platform.node():
        path.unlink(missing_ok=True)


@contextmanager
def claimed(cells: Sequence[Cell], out: Path, device: str, threads: int) -> Iterator[list[Cell]]:
    """The cells of ``cells`` this process may compute now: not finished by another run
    meanwhile, and claimed; their claims are released on the way out, whatever happens."""
    cells_dir(out).mkdir(parents=True, exist_ok=True)
    mine = []
    for cell in cells:
        record = Record.read(record_path(cell, out, device, threads))
        if is_finished(record) and not damaged_outputs(out, record):
            continue  # another run finished it since this one planned
        if claim(claim_path(cell, out, device, threads)):
            mine.append(cell)
    try:
        yield mine
    finally:
        for cell in mine:
            release(claim_path(cell, out, device, threads))


def claimed_elsewhere(cells: Sequence[Cell], out: Path, device: str, threads: int) -> list[Cell]:
    """Cells without a record that another live run holds."""
    return [
        c
        for c in cells
        if Record.read(record_path(c, out, device, threads)) is None
        and claim_path(c, out, device, threads).exists()
        and not _stale(claim_path(c, out, device, threads))
    ]
