"""Progress of a run: the grid's bar (cells, running, failed) and one bar per worker."""

from __future__ import annotations

import sys
import time
from typing import Any

from tqdm import tqdm

from benchmark.runfolder import Record


def grid_bar(total: int, show: bool) -> Any:
    """The bar of a run's cells: a tqdm bar on a terminal; in a log file or a pipe, a plain
    line now and then (no carriage returns nor escape sequences)."""
    if show and not sys.stderr.isatty():
        return LogLines(total)
    return tqdm(total=total, desc="cells", unit="cell", disable=not show, dynamic_ncols=True)


class LogLines:
    """The part of tqdm's interface a run uses, written as whole lines: one per tenth of the
    work or per ``every_seconds``, whichever comes first, and one at the end, each with the
    time so far and an estimate of the time left."""

    def __init__(self, total: int, every_seconds: float = 60.0, unit: str = "cells") -> None:
        self.total, self.n, self.every, self.unit = total, 0, every_seconds, unit
        self.postfix = ""
        self.last_time, self.last_n = time.monotonic(), 0
        self.started = self.last_time

    def __enter__(self) -> LogLines:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        self.postfix = text

    def update(self, n: int = 1) -> None:
        self.n += n
        step = max(1, self.total // 10)
        now = time.monotonic()
        if self.n - self.last_n >= step or now - self.last_time >= self.every:
            self._line(now)

    def close(self) -> None:
        if self.n != self.last_n:
            self._line(time.monotonic())

    def _line(self, now: float) -> None:
        self.last_time, self.last_n = now, self.n
        minutes = (now - self.started) / 60
        extra = f" ({self.postfix})" if self.postfix else ""
        if 0 < self.n < self.total:
            extra += f", about {minutes * (self.total - self.n) / self.n:.1f} min left"
        print(
            f"{self.unit} {self.n}/{self.total} after {minutes:.1f} min{extra}",
            file=sys.stderr,
            flush=True,
        )


def note_failure(record: Record) -> None:
    """Name a failed cell and its error above the bars."""
    if not record.ok:
        tqdm.write(f"failed: {record.cell['image']} {record.cell['method_key']}: {record.error}")


def take(done: list[Record], records: list[Record], bar: tqdm, running: int = 0) -> None:
    """Add a unit's records to the run's, naming its failures and advancing the bar (which
    shows the failed cells so far and, with workers, how many cells are running)."""
    for record in done:
        note_failure(record)
    records += done
    failed = sum(not r.ok for r in records)
    bar.set_postfix_str(
        ", ".join(
            part
            for part in (
                f"{running} running" if running else "",
                f"{failed} failed" if failed else "",
            )
            if part
        ),
        refresh=False,
    )
    bar.update(len(done))


class WorkerBars:
    """One iteration bar per worker under the grid's bar, fed from the shared array (only on a
    terminal: a log gets the grid's bar alone)."""

    def __init__(self, slots: int, shared: Any, *, show: bool) -> None:
        self.shared = shared
        self.bars = (
            [
                tqdm(desc=f"  worker {i + 1}", unit="it", position=i + 1, leave=False)
                for i in range(slots)
            ]
            if show
            else []
        )

    def refresh(self) -> None:
        for i, inner in enumerate(self.bars):
            done, total = self.shared[2 * i], self.shared[2 * i + 1]
            if not total:
                continue
            if inner.total != total or done < inner.n:  # the worker started another cell
                inner.reset(total=total)
            inner.update(done - inner.n)

    def close(self) -> None:
        for inner in self.bars:
            inner.close()
